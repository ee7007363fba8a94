"""One atomic file writer: a temporary file in the target's folder, then a rename.

Text (``-o``) and bytes (saved tensors) both go through :func:`write_atomically`. Its promise:
the target is either what it was or the whole new content, and no signal, at any instant,
leaves the temporary file behind.

How no signal leaves it: the temporary file's name is chosen, and registered for removal,
*before* the call that creates it, so there is no moment when the file exists and nobody knows
its name (``tempfile.mkstemp`` has one: between creating the file and returning its name).
While a write runs, SIGINT, SIGTERM and SIGHUP get a handler that removes every registered file
first and only then does what the signal did before (raise ``KeyboardInterrupt``, die of the
signal, or call the handler that was there); a second signal during that cleanup runs the same
cleanup again. A signal ignored when the write starts (SIGHUP under ``nohup``) stays ignored.
"""

from __future__ import annotations

import os
import secrets
import signal
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from resnet_trace.errors import UsageError

#: Characters of the target's name kept in the temporary name: a user who finds one after a
#: SIGKILL sees whose it is, and a 255-byte name (NAME_MAX) still leaves room for the rest.
_KEPT = 32
_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

_pending: set[str] = set()  # temporary files that exist, or are about to, and are not yet renamed


def _remove_pending() -> None:
    for name in list(_pending):
        try:
            os.unlink(name)
        except OSError:
            pass
        _pending.discard(name)


def _on_signal(previous: dict[int, Any]) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        _remove_pending()
        before = previous.get(signum, signal.SIG_DFL)
        if callable(before):  # Python's KeyboardInterrupt, the CLI's own SIGINT handler, a user's
            before(signum, frame)
            return
        signal.signal(signum, before)  # SIG_DFL: die of the signal, as asked
        signal.raise_signal(signum)

    return handler


@contextmanager
def _cleanup_on_signals() -> Iterator[None]:
    """Registered temporary files are removed before SIGINT, SIGTERM or SIGHUP take effect."""
    previous: dict[int, Any] = {}
    handler = _on_signal(previous)
    for name in _SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            before = signal.getsignal(signum)
            if before == signal.SIG_IGN or before is None:  # nohup, a background job: ignored it stays
                continue
            previous[signum] = before
            signal.signal(signum, handler)
        except (ValueError, OSError):  # not the main thread: leave signals alone
            previous.pop(signum, None)
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


def temporary_name(real: Path) -> Path:
    """A fresh name beside ``real``: a dot, the first characters of its name, 16 random hex digits.

    Short whatever the target's length, so a valid name (up to NAME_MAX) always has one."""
    folder = real.parent if str(real.parent) else Path(".")
    return folder / f".{real.name[:_KEPT]}.{secrets.token_hex(8)}.tmp"


def writable_target(path: Path, label: str) -> tuple[Path, os.stat_result | None]:
    """The file ``path`` names (a symlink's target) and its stat (None when it does not exist),
    refusing what must not be replaced: a folder, a write-protected file, a socket, a missing
    folder. ``label`` is how messages name the path (``--output 'x.json'``)."""
    real = Path(os.path.realpath(path)) if os.path.islink(path) else path
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UsageError(f"{label} cannot be written: {exc.strerror or exc}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{label} is a directory; name a file")
        if stat.S_ISREG(st.st_mode) and (not os.access(real, os.W_OK) or not st.st_mode & 0o222):
            raise UsageError(f"{label} is write-protected; it was left as it is")
        if stat.S_ISSOCK(st.st_mode):
            raise UsageError(f"{label} is a socket; name a file")
    folder = real.parent if str(real.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{label}: folder {str(folder)!r} does not exist")
    return real, st


def write_atomically(path: Path, write: Callable[[IO[bytes]], Any], label: str | None = None) -> None:
    """Call ``write`` with a binary file whose content then replaces ``path``, all or nothing.

    A symlink's target is replaced and the link kept; a device or FIFO is written into, never
    replaced; a write-protected file is refused. A new file gets the mode a plain write would
    (0666 less the umask), a replaced one keeps its mode. Failures are :class:`UsageError`, one
    line naming ``label`` (default: the path); no temporary file outlives the call.
    """
    label = label if label is not None else repr(str(path))
    real, st = writable_target(path, label)
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:  # a character device or a FIFO: write into it, as a shell redirect would
            with open(real, "wb") as fh:
                write(fh)
        except OSError as exc:
            raise UsageError(f"{label} cannot be written: {exc.strerror or exc}") from None
        return
    with _cleanup_on_signals():
        tmp: str | None = None  # the temporary file to remove, until it is renamed
        try:
            while True:
                name = str(temporary_name(real))
                tmp = name
                _pending.add(name)  # registered before the file exists: a signal from here on removes it
                try:
                    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o600)
                    break
                except FileExistsError:  # not ours (a 2^-64 chance): forget it, never remove it
                    tmp = None
                    _pending.discard(name)
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            if st is not None:  # keep the mode of the file we replace
                mode = stat.S_IMODE(st.st_mode)
            else:  # created 0600; give it the mode a plain write would have
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.chmod(name, mode)
            os.replace(name, real)
            tmp = None
            _pending.discard(name)
        except OSError as exc:
            raise UsageError(f"{label} cannot be written: {exc.strerror or exc}") from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                _pending.discard(tmp)  # after the unlink: a signal before it still removes the file
