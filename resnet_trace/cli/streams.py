"""The CLI's streams: stdout carries the document only, stderr our one-line messages.

While a command runs, what user code prints goes to stderr and the document is written through a
saved handle on the stdout the command started with; a closed stdout or stderr fails as one line,
a stream that cannot spell the table gets ASCII (:mod:`resnet_trace.cli.ascii`); warnings become
notes; deep module trees get room to recurse.
"""

from __future__ import annotations

import errno
import io
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_trace.cli.ascii import ASCII_ERRORS
from resnet_trace.errors import message_of
from resnet_trace.printable import visible

_lost_lines = 0  # lines _say could not write (stderr closed)


def _say(message: str) -> None:
    """One line on stderr, never parsed as markup, whatever the message holds (control characters,
    line breaks and bidi controls are written as escapes: :func:`resnet_trace.printable.visible`);
    counted, not raised, when stderr is closed."""
    global _lost_lines
    try:
        talk = _streams.talk if _streams is not None else sys.stderr
        talk.write(f"resnet-trace: {visible(message)}\n")
        talk.flush()
    except (OSError, ValueError, AttributeError):
        _lost_lines += 1


def count_lost_lines() -> None:
    """Start counting, for one command, the lines :func:`_say` cannot write."""
    global _lost_lines
    _lost_lines = 0


def lost_lines() -> int:
    """Lines :func:`_say` could not write since :func:`count_lost_lines` (stderr closed)."""
    return _lost_lines


class _ClosedStream:
    """Stands in for a stream whose descriptor was closed before we started (``>&-``)."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, f"{self.name} is closed")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError(errno.EBADF, f"{self.name} is closed")


def prepare_streams() -> None:
    """Make closed stdout/stderr fail as one line (exit 2), and non-UTF-8 ones print ASCII."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:
            try:
                os.fstat(fd)
            except OSError:
                # Plug the descriptor so that no file we open later becomes "stdout".
                try:
                    plug = os.open(os.devnull, os.O_WRONLY)
                    if plug != fd:
                        os.dup2(plug, fd)
                        os.close(plug)
                except OSError:
                    pass
            setattr(sys, name, _ClosedStream(name))
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        encoding = getattr(stream, "encoding", None) or "utf-8"
        try:
            "\u2500\u2502\u2192\u2193\u2026\u00b7\u00d7".encode(encoding)
        except UnicodeEncodeError:
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                try:
                    reconfigure(errors=ASCII_ERRORS)
                except (ValueError, OSError):  # pragma: no cover - a stream that cannot change
                    pass
        except LookupError:
            pass


# -- stdout carries our data only ------------------------------------------------------------------
@dataclass
class _Streams:
    """Where a running command writes: ``data`` (the document) is the stdout this command started
    with, ``talk`` (our lines) its stderr; whatever user code does to ``sys.stdout`` meanwhile."""

    data: Any
    talk: Any


_streams: _Streams | None = None  # set while a command runs (command_scope)


class _ToStderr(io.TextIOBase):
    """``sys.stdout`` while a command runs: what user code prints goes to stderr, and closing it
    closes nothing of ours."""

    def __init__(self, target: Any) -> None:
        super().__init__()
        self._target = target

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._target, "errors", None)

    @property
    def buffer(self) -> Any:
        return self._target.buffer

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        try:
            self._target.write(text)
        except (OSError, ValueError):  # stderr closed: what user code prints is lost, not fatal
            pass
        return len(text)

    def flush(self) -> None:
        if not self.closed:
            _flush(self._target)

    def isatty(self) -> bool:
        try:
            return bool(self._target.isatty())
        except (OSError, ValueError, AttributeError):
            return False

    def fileno(self) -> int:
        return int(self._target.fileno())


def _fd_of(stream: Any) -> int | None:
    try:
        fd = stream.fileno()
        os.fstat(fd)
        return int(fd)
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _flush(stream: Any) -> None:
    try:
        stream.flush()
    except (OSError, ValueError, AttributeError):
        pass


def data_stream() -> Any:
    """The stream the document goes to: stdout as this command found it (never user code's)."""
    return _streams.data if _streams is not None else sys.stdout


@contextmanager
def _stdout_for_data() -> Iterator[None]:
    """While a command runs, the stdout file descriptor and ``sys.stdout`` point at stderr, and the
    document is written through a handle on the original stdout saved here: a ``print`` in a
    model, a replaced ``sys.stdout`` or a closed one cannot touch what the command writes."""
    global _streams
    out, err = sys.stdout, sys.stderr
    _flush(out)
    _flush(err)
    fd, keep, data = _fd_of(out), None, out
    if fd is not None:
        try:
            keep = os.dup(fd)
            data = os.fdopen(
                keep,
                "w",
                encoding=getattr(out, "encoding", None) or "utf-8",
                errors=getattr(out, "errors", None) or "strict",
            )
            into = _fd_of(err)
            if into is None:
                into = os.open(os.devnull, os.O_WRONLY)
                os.dup2(into, fd)
                os.close(into)
            else:
                os.dup2(into, fd)
        except (OSError, ValueError, LookupError):
            if keep is not None:
                try:
                    os.dup2(keep, fd)
                    os.close(keep)
                except OSError:
                    pass
            fd, keep, data = None, None, out
    previous, _streams = _streams, _Streams(data=data, talk=err)
    sys.stdout = _ToStderr(err)
    try:
        yield
    finally:
        sys.stdout = out
        _streams = previous
        _flush(out)  # what user code wrote through the original stream went to stderr: flush it there
        _flush(err)
        if fd is not None and keep is not None:
            _flush(data)
            try:
                os.dup2(keep, fd)
            except OSError:
                pass
            try:
                data.close()
            except (OSError, ValueError):
                pass


# -- warnings from the model or torch: one note each ---------------------------------------------
@contextmanager
def _warnings_as_notes() -> Iterator[None]:
    """Each warning shown as one ``note:`` line on stderr (its category and message, no path or
    source line), each text once."""
    seen: set[str] = set()

    def show(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        text = message_of(message) if isinstance(message, BaseException) else str(message)
        name = getattr(category, "__name__", "Warning")
        note = f"note: {name}: {text.strip().splitlines()[0] if text.strip() else ''}"[:400]
        if note not in seen:
            seen.add(note)
            _say(note)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


# -- recursion: deep module trees need more than Python's default 1000 frames --------------------
def recursion_room() -> int:
    """The recursion limit this process can afford: 1 frame per 2 KiB of the C stack's limit
    (8 MiB: 4,096 frames, 4 times the default), never less than Python's own."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
        if soft == resource.RLIM_INFINITY or soft <= 0:
            soft = 64 * 2**20
    except (ImportError, OSError, ValueError):
        soft = 8 * 2**20
    return max(1000, min(50_000, soft // 2048))


@contextmanager
def _room_to_recurse() -> Iterator[None]:
    """Torch's own walks of a module tree (calls, ``named_modules``, ``deepcopy``) recurse once or
    more per level: a model 300 modules deep needs more than the default 1000 frames."""
    old = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(max(old, recursion_room()))
    except (ValueError, RecursionError):
        pass
    try:
        yield
    finally:
        try:
            sys.setrecursionlimit(old)
        except (ValueError, RecursionError):
            pass


@contextmanager
def command_scope() -> Iterator[None]:
    """What a command's work runs inside: stdout for data only, warnings as notes, room to recurse."""
    with _stdout_for_data(), _warnings_as_notes(), _room_to_recurse():
        yield


def _quiet_broken_pipe() -> None:
    """The reader went away (``| head``): stop writing, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, data_stream().fileno())
    except (OSError, ValueError):
        pass


def _color(output: Path | None) -> tuple[bool, int]:
    try:
        tty = output is None and bool(data_stream().isatty())
    except (OSError, ValueError, AttributeError):
        tty = False
    color = tty and not os.environ.get("NO_COLOR")
    if tty:
        import shutil

        return color, shutil.get_terminal_size().columns
    return False, 240
