"""The CLI's files: ``-o`` written atomically or to the stream it names, and nothing a command
reads overwritten by what it writes.

The atomic write itself (a short temporary name beside the target, no temporary file left by
any signal) is the library's: :func:`resnet_trace.atomic.write_atomically`.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import typer

from resnet_trace.atomic import writable_target, write_atomically
from resnet_trace.cli.streams import _quiet_broken_pipe, data_stream
from resnet_trace.errors import UsageError


def write_output(text: str | Iterable[str], output: Path | None, option: str = "--output") -> None:
    """``text`` (or its chunks, written as they come) to stdout, or to ``output`` written atomically (:func:`resnet_trace.atomic.write_atomically`: a
    short temporary name in the same folder, then a rename; no signal leaves it behind).

    ``/dev/stdout`` and ``/dev/stderr`` (and their ``/dev/fd``, ``/proc/self/fd`` names) are the
    streams themselves. A symlink's target is replaced and the link kept; a device or FIFO is
    written into, never replaced; a write-protected file is refused.
    """
    named = str(output) if output is not None else None
    if named in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"):
        output = None  # the stream itself (the saved one: while a command works, fd 1 is stderr)
    elif named in ("/dev/stderr", "/dev/fd/2", "/proc/self/fd/2"):
        for chunk in _chunks(text):  # what makes a chunk (a trace, a renderer) fails as itself
            try:
                sys.stderr.write(chunk)
                sys.stderr.flush()
            except (OSError, ValueError) as exc:
                raise UsageError(f"cannot write to stderr: {getattr(exc, 'strerror', None) or exc}") from None
        return
    if output is None:
        stream = data_stream()
        for chunk in _chunks(text):
            try:
                stream.write(chunk)
                stream.flush()
            except BrokenPipeError:  # the reader went away (| head): stop quietly
                _quiet_broken_pipe()
                return
            except (OSError, ValueError) as exc:  # a full disk behind a redirect, a closed stdout
                raise UsageError(f"cannot write to stdout: {getattr(exc, 'strerror', None) or exc}") from None
        return
    chunks = _made(_chunks(text))

    def write(fh: IO[bytes]) -> None:
        for chunk in chunks:
            fh.write(chunk.encode("utf-8"))

    try:
        write_atomically(output, write, f"{option} {str(output)!r}")
    except _Making as failed:  # the temporary file is gone; the failure is what made the chunk
        raise failed.__cause__ from None  # type: ignore[misc]  # always set by _chunks


class _Making(Exception):
    """What making a chunk raised, carried past the writer's own ``OSError`` handling."""


def _chunks(text: str | Iterable[str]) -> Iterable[str]:
    return (text,) if isinstance(text, str) else text


def _made(chunks: Iterable[str]) -> Iterator[str]:
    """``chunks``, an ``Exception`` raised while one is made wrapped in :class:`_Making`, so that
    inside :func:`write_atomically` no ``OSError`` of a model's reads as the file's."""
    it = iter(chunks)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise _Making() from exc
        yield chunk


def _check_writable(path: Path | None, option: str) -> None:
    """Refuse an output path before any work, naming the option it came from."""
    if path is None:
        return
    writable_target(path, f"{option} {str(path)!r}")


def output_path(value: str) -> Path:
    """``-o``/``--svg``'s parser: a trailing slash names a folder, which is not a file to write."""
    if value.endswith(("/", os.sep)) and value not in ("/dev/stdout/", "/dev/stderr/"):
        raise typer.BadParameter(f"{value!r} names a folder (it ends in a slash); name a file")
    return Path(value)


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """A path's resolved name and, when it exists, its (device, inode): two names of one file match."""
    try:
        st = os.stat(path)
        ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except (OSError, ValueError):
        ident = None
    return os.path.realpath(path), ident


def model_file(ref: str | None) -> Path | None:
    """The file a ``--model`` reference reads: ``PATH.py`` of ``PATH.py:NAME``, a config's JSON
    (a folder's ``config.json``), or None for ``package.module:NAME``."""
    if not ref:
        return None
    from resnet_trace.hfconfig import config_path, is_config_ref

    if is_config_ref(ref):
        return config_path(ref)
    source, sep, _ = ref.rpartition(":")
    if sep and (source.endswith(".py") or "/" in source or "\\" in source):
        return Path(source)
    return None


def check_outputs(outputs: dict[str, Path | None], reads: dict[str, Path | str | None] | None = None) -> None:
    """Before any work: every output can be written, and none names a file the command reads
    (input file, weights, golden, model file) or another output. Compared by resolved path and by
    inode, so a symlink or a hard link to an input is caught too. A device (``/dev/null``) is
    written into, never replaced, so it may be named more than once."""
    given = {opt: p for opt, p in outputs.items() if p is not None}
    for option, path in given.items():
        _check_writable(path, option)
    read_ids = [
        (opt, str(p), _identity(Path(p))) for opt, p in (reads or {}).items() if p is not None and str(p)
    ]
    seen: list[tuple[str, Path, tuple[str, tuple[int, int] | None]]] = []
    for option, path in given.items():
        ident = _identity(path)
        try:
            special = not stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            special = False
        if special:
            continue
        for other, shown, read, verb in [
            *((o, s, i, "reads") for o, s, i in read_ids),
            *((o, str(p), i, "writes") for o, p, i in seen),
        ]:
            if ident[0] == read[0] or (ident[1] is not None and ident[1] == read[1]):
                raise UsageError(
                    f"{option} {str(path)!r} would replace {shown!r}, which {other} {verb}; name another file"
                )
        seen.append((option, path, ident))
