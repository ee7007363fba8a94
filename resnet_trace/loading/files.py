"""Opening a user's file safely: a regular file (no device, FIFO or socket), still the one checked
when it is opened, and unchanged (size, times, inode) when its read ends; the words that name it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from io import BufferedReader
from pathlib import Path
from typing import IO

import torch

from resnet_trace.errors import UsageError

_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def described(path: Path, what: str) -> str:
    return f"{what} {str(path)!r}"


def dims_text(shape: Sequence[int] | torch.Size) -> str:
    return "x".join(map(str, shape)) or "a scalar"


def check_sizes(dims: tuple[int, ...], name: str, shown: Sequence[int]) -> tuple[int, ...]:
    """``dims``, refused when one is negative (a crafted header) or 0 (an empty tensor), with the
    shape ``shown`` as the file holds it."""
    if any(d < 0 for d in dims):
        raise UsageError(f"{name} declares a negative dimension: {dims_text(shown)}")
    if 0 in dims:
        raise UsageError(f"{name} holds an empty tensor of shape {dims_text(shown)}")
    return dims


def checked_file(path: Path, what: str) -> tuple[Path, os.stat_result]:
    """The regular file ``path`` is (its symlinks resolved) and its ``stat``, or a UsageError why not."""
    try:
        st = os.stat(path)  # follows symlinks: what would be read
    except FileNotFoundError:
        if os.path.islink(path):
            raise UsageError(f"{described(path, what)} is a symlink to nothing") from None
        raise UsageError(f"{described(path, what)} does not exist") from None
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{described(path, what)} cannot be read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
        via = " (through a symlink)" if os.path.islink(path) else ""
        raise UsageError(f"{described(path, what)} is {kind}{via}, not a regular file; it was not read")
    return Path(os.path.realpath(path)), st


@contextmanager
def open_checked(path: Path, what: str) -> Iterator[tuple[BufferedReader, os.stat_result]]:
    """Open a checked regular file without blocking, and make sure it is still the file checked."""
    real, st = checked_file(path, what)
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise UsageError(f"{described(path, what)} cannot be read: {exc.strerror or exc}") from None
    fh = os.fdopen(fd, "rb")
    with fh:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise UsageError(f"{described(path, what)} changed while it was being opened; it was not read")
        yield fh, now


#: What a file that changed between its check and the end of its read is told (one line).
CHANGED = "changed while it was being read"


def file_change(fh: IO[bytes], path: Path, st: os.stat_result) -> str | None:
    """How the file opened as ``fh`` (``st`` when it was checked) has changed since, in words; None
    when it has not: what ``path`` names now, the file's size, its modification or status time."""
    try:
        there = os.stat(path)
    except OSError:
        return "it was removed or renamed"
    if (there.st_dev, there.st_ino) != (st.st_dev, st.st_ino):
        return "another file replaced it"
    now = os.fstat(fh.fileno())
    if now.st_size != st.st_size:
        return f"its size went from {st.st_size:,} to {now.st_size:,} bytes"
    if now.st_mtime_ns != st.st_mtime_ns:
        return "it was written to"
    if now.st_ctime_ns != st.st_ctime_ns:  # a writer that set the old modification time back
        return "its status changed: written to, or its times set"
    return None


def changed(name: str, how: str) -> UsageError:
    """The one line of a file that changed while it was read (exit 2)."""
    return UsageError(f"{name} {CHANGED} ({how}); it was not used")


@contextmanager
def open_unchanged(path: Path, what: str) -> Iterator[tuple[BufferedReader, os.stat_result]]:
    """:func:`open_checked`, and the file must still be as it was checked when the read ends
    (:func:`file_change`): else, and when a read failed or came up short meanwhile, the
    UsageError says that it changed while it was being read."""
    name = described(path, what)
    with open_checked(path, what) as (fh, st):
        try:
            yield fh, st
        except UsageError:
            how = file_change(fh, path, st)
            if how is None:
                raise
            raise changed(name, how) from None
        how = file_change(fh, path, st)
        if how is not None:
            raise changed(name, how)
