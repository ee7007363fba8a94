"""The CLI's edge with the outside world: one-line errors, exit codes, and writing output.

Everything here is about streams and files, not about tracing: ``cli.py`` builds the
commands, this module makes sure each ends as data on stdout (or an atomically written
file) and at most one line on stderr.
"""

from __future__ import annotations

import codecs
import errno
import io
import os
import signal
import stat
import sys
import tempfile
import traceback
import unicodedata
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from resnet_trace.errors import ExitCode, TraceToolError, UsageError, message_of
from resnet_trace.printable import visible


def _click_classes() -> tuple[Any, Any]:
    """Typer's Click exception classes: its bundled copy (typer >= 0.2x) or the click package."""
    base = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    return base, sys.modules[base.__module__]


_ClickException, _click_exc = _click_classes()
# Typed Any: Click's classes come from whichever copy typer bundles, found at run time.
_EXIT: Any = tuple({typer.Exit, getattr(_click_exc, "Exit", typer.Exit)})
_ABORT: Any = tuple({typer.Abort, getattr(_click_exc, "Abort", typer.Abort)})
_NO_ARGS: Any = getattr(_click_exc, "NoArgsIsHelpError", None) or type("_NeverRaised", (Exception,), {})


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


# -- streams: closed descriptors and encodings that cannot spell the table ----------------------
ASCII_ERRORS = "resnet-trace-ascii"
_ASCII = {
    "\u2192": "->",  # →
    "\u2190": "<-",
    "\u2193": "v",  # ↓
    "\u2191": "^",
    "\u2026": "...",  # …
    "\u00b7": "-",  # ·
    "\u00d7": "x",  # ×
    "\u2013": "-",  # –
    "\u2014": "-",
    "\u2022": "*",
    "\u2248": "~",
    "\u2264": "<=",
    "\u2265": ">=",
    "\u2212": "-",
    "\u00a0": " ",
    "\u0394": "delta",  # Δ
    "\u2016": "|",  # ‖ (a norm's bars)
    "\u2202": "d",  # ∂
    "\u2717": "x",  # ✗
    "\u2713": "ok",  # ✓
}


def ascii_for(ch: str) -> str:
    """An ASCII stand-in for one character: box drawing becomes ``-|+``, arrows ``->``, ``Δ`` a word,
    an accented letter its base letter, anything else its ``\\uXXXX`` escape (never a bare ``?``)."""
    if ch in _ASCII:
        return _ASCII[ch]
    if "\u2500" <= ch <= "\u257f":  # box drawing
        name = unicodedata.name(ch, "")
        across = "HORIZONTAL" in name or "LEFT" in name or "RIGHT" in name
        down = "VERTICAL" in name or "UP" in name or "DOWN" in name
        return "+" if across and down else "|" if down else "-"
    if "\u2580" <= ch <= "\u259f":  # block elements (bars)
        return "#"
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
    if plain:  # é -> e
        return plain
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"  # never a bare "?"


def _transliterate(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    return "".join(ascii_for(ch) for ch in exc.object[exc.start : exc.end]), exc.end


codecs.register_error(ASCII_ERRORS, _transliterate)


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


# -- whose failure is it? -------------------------------------------------------------------------
def _user_module(frame: Any) -> bool:
    """A frame of the model's own code: a module ``usermodel`` imported for ``--model``."""
    name = frame.f_globals.get("__name__")
    if not isinstance(name, str):
        return False
    usermodel = sys.modules.get("resnet_trace.usermodel")
    modules = getattr(usermodel, "USER_MODULES", ())
    return any(name == m or name.startswith(m + ".") for m in modules)


def _torch_frame(frame: Any, *names: str) -> bool:
    name = frame.f_globals.get("__name__")
    return isinstance(name, str) and name.split(".")[0] == "torch" and frame.f_code.co_name in names


def model_failure(exc: BaseException) -> str | None:
    """Where the model's code raised ``exc``, in words, or None when it is not the model's.

    The model's, when a frame deeper than our innermost one is the model's own code (a module
    ``--model`` imported: its forward, its ``__str__``, its ``parameters()``), a module call (a
    forward, of any module), or autograd's backward. Raised in our code, or in a library our code
    called directly, it is ours (exit 4).
    """
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    name_of = [f.f_globals.get("__name__") for f in frames]
    ours = [i for i, n in enumerate(name_of) if isinstance(n, str) and n.split(".")[0] == "resnet_trace"]
    if not ours:
        return None
    deeper = frames[ours[-1] + 1 :]
    user = [f for f in deeper if _user_module(f)]
    if user:
        f = user[-1]
        return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}, in {f.f_code.co_name}"
    if any(_torch_frame(f, "_call_impl", "_wrapped_call_impl") for f in deeper):
        return "in a module's forward"
    if any(_torch_frame(f, "backward", "_engine_run_backward") for f in deeper):
        return "in the backward"
    return None


_DEBUG = "resnet_trace.debug"  # the key of --debug in the Click context's meta, shared by every context


def record_debug(ctx: typer.Context, value: bool) -> bool:
    """``--debug``'s callback (on the group and on each command): note it where OneLineErrors looks."""
    if value:
        ctx.meta[_DEBUG] = True
    return value


class OneLineErrors(TyperGroup):
    """Every failure ends as one line on stderr and a documented exit code.

    An internal error shows its traceback when ``--debug`` was parsed (as an option, never as
    another option's value) or ``RESNET_TRACE_DEBUG`` is set.
    """

    _meta: dict[str, Any] | None = None  # the meta of this invocation's contexts, kept for after an error

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        self._meta = ctx.meta  # one dict, shared with the command's context made from this one
        return ctx

    def resolve_command(self, ctx: Any, args: Any) -> Any:
        """The command to run, its work (the callback, after its options were parsed and any
        ``--help`` printed) wrapped in :func:`command_scope`."""
        name, cmd, rest = super().resolve_command(ctx, args)
        callback = getattr(cmd, "callback", None)
        if cmd is not None and callback is not None and not getattr(callback, "_scoped", False):

            def scoped(*a: Any, **kw: Any) -> Any:
                with command_scope():
                    return callback(*a, **kw)

            scoped._scoped = True  # type: ignore[attr-defined]
            cmd.callback = scoped
        return name, cmd, rest

    def _debug(self) -> bool:
        """``--debug`` was parsed (before the command or after it), or ``RESNET_TRACE_DEBUG`` is set."""
        recorded = self._meta is not None and bool(self._meta.get(_DEBUG))
        return recorded or bool(os.environ.get("RESNET_TRACE_DEBUG"))

    def main(
        self,
        args: Any = None,
        prog_name: Any = None,
        complete_var: Any = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:  # noqa: D102
        global _lost_lines
        _lost_lines = 0
        prepare_streams()
        argv = list(sys.argv[1:] if args is None else args)
        self._meta = None
        try:
            rv = super().main(
                args=argv,
                prog_name=prog_name or "resnet-trace",
                complete_var=complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
            code = rv if isinstance(rv, int) else 0
            if code == ExitCode.INTERRUPTED:  # Typer turns Ctrl-C into Exit(130), returned here
                _say("interrupted")
        except _EXIT as exc:
            code = exc.exit_code
            if code == ExitCode.INTERRUPTED:  # Typer's own handling of Ctrl-C inside a command
                _say("interrupted")
        except _NO_ARGS as exc:
            try:
                sys.stdout.write(exc.ctx.get_help() + "\n")
            except OSError:
                pass
            code = ExitCode.USAGE
        except _ClickException as exc:
            hint = ""
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                hint = f" (see '{ctx.command_path} --help')"
            _say(f"error: {exc.format_message()}{hint}")
            code = ExitCode.USAGE
        except (KeyboardInterrupt, *_ABORT) as exc:
            if isinstance(exc.__cause__, EOFError):  # an end of input, not Ctrl-C
                _say("error: the input ended unexpectedly")
                code = ExitCode.USAGE
            else:
                _say("interrupted")
                code = ExitCode.INTERRUPTED
        except RecursionError as exc:
            where = model_failure(exc)
            if where is not None:
                _say(
                    f"error: the model's code failed ({where}): it recursed deeper than {recursion_room():,} calls"
                )
                code = ExitCode.MODEL_REJECTED
            else:
                _say(
                    f"error: nested deeper than Python's recursion limit ({recursion_room():,} calls) "
                    "allows to follow: the model's modules, its inputs or a file"
                )
                code = ExitCode.USAGE
        except MemoryError:
            _say(
                "error: out of memory (use 'resnet-trace summary', which needs no memory, or a smaller input)"
            )
            code = ExitCode.USAGE
        except TraceToolError as exc:
            _say(f"error: {exc}")
            code = exc.exit_code
        except BrokenPipeError:
            _quiet_broken_pipe()
            code = ExitCode.OK
        except Exception as exc:  # the model's code, where no row can say so; else a bug of ours
            if self._debug():
                traceback.print_exc()
            where = model_failure(exc)
            if where is not None:
                _say(f"error: the model's code failed ({where}): {type(exc).__name__}: {message_of(exc)}")
                code = ExitCode.MODEL_REJECTED
            else:
                _say(
                    f"internal error: {type(exc).__name__}: {message_of(exc)} "
                    "(a bug; rerun with --debug for the traceback)"
                )
                code = ExitCode.INTERNAL
        except BaseException as exc:  # sys.exit or a BaseException of its own, from the model's code
            where = model_failure(exc)
            if where is None:
                raise
            what = (
                f"it called sys.exit({exc.code!r})"[:200]
                if isinstance(exc, SystemExit)
                else f"{type(exc).__name__}: {message_of(exc)}"
            )
            _say(f"error: the model's code failed ({where}): {what}")
            code = ExitCode.MODEL_REJECTED
        if _lost_lines and code == ExitCode.OK:
            code = ExitCode.USAGE  # something had to be said and stderr could not take it
        if standalone_mode:
            sys.exit(int(code))
        return int(code)


def _quiet_broken_pipe() -> None:
    """The reader went away (``| head``): stop writing, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, data_stream().fileno())
    except (OSError, ValueError):
        pass


class _Signalled(BaseException):
    """SIGTERM or SIGHUP arrived while a temporary file existed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _cleanup_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception for the span of a write (SIGINT already is one).

    A signal ignored when the write starts (SIGHUP under ``nohup``) stays ignored."""
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: object) -> None:
        raise _Signalled(signum)

    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            if signal.getsignal(signum) == signal.SIG_IGN:  # nohup: ignored it stays
                continue
            previous[signum] = signal.signal(signum, handler)
        except (ValueError, OSError):  # not the main thread: leave signals alone
            pass
    try:
        yield
    except _Signalled as exc:
        # The temporary file is gone (the caller's finally ran); now die of the signal as asked.
        for signum, old in previous.items():
            signal.signal(signum, old)
        previous.clear()
        signal.raise_signal(exc.signum)
        raise SystemExit(128 + exc.signum) from None  # a handler that returned
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _target(output: Path, option: str) -> tuple[Path, os.stat_result | None]:
    """The file ``output`` names (a symlink's target) and its stat, refusing what must not be replaced."""
    real = Path(os.path.realpath(output)) if os.path.islink(output) else output
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UsageError(f"{option} {str(output)!r} cannot be written: {exc.strerror or exc}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{option} {str(output)!r} is a directory; name a file")
        if stat.S_ISREG(st.st_mode) and (not os.access(real, os.W_OK) or not st.st_mode & 0o222):
            raise UsageError(f"{option} {str(output)!r} is write-protected; it was left as it is")
        if stat.S_ISSOCK(st.st_mode):
            raise UsageError(f"{option} {str(output)!r} is a socket; name a file")
    folder = real.parent if str(real.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{option} {str(output)!r}: folder {str(folder)!r} does not exist")
    return real, st


def write_output(text: str, output: Path | None, option: str = "--output") -> None:
    """stdout, or ``output`` written atomically (temporary file in the same folder, then renamed).

    A symlink's target is replaced and the link kept; a device or FIFO is written into,
    never replaced; a write-protected file is refused. The temporary file is removed on
    SIGINT, SIGTERM and SIGHUP.
    """
    named = str(output) if output is not None else None
    if named in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"):
        output = None  # the stream itself (the saved one: while a command works, fd 1 is stderr)
    elif named in ("/dev/stderr", "/dev/fd/2", "/proc/self/fd/2"):
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot write to stderr: {getattr(exc, 'strerror', None) or exc}") from None
        return
    if output is None:
        try:
            stream = data_stream()
            stream.write(text)
            stream.flush()
        except BrokenPipeError:  # the reader went away (| head): stop quietly
            _quiet_broken_pipe()
        except (OSError, ValueError) as exc:  # a full disk behind a redirect, a closed stdout
            raise UsageError(f"cannot write to stdout: {getattr(exc, 'strerror', None) or exc}") from None
        return
    real, st = _target(output, option)
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:  # a character device or a FIFO: write into it, as a shell redirect would
            with open(real, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        except OSError as exc:
            raise UsageError(f"{option} {str(output)!r} cannot be written: {exc.strerror or exc}") from None
        return
    folder = real.parent if str(real.parent) else Path(".")
    tmp = None
    with _cleanup_on_signals():
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            if st is not None:  # keep the mode of the file we replace
                mode = stat.S_IMODE(st.st_mode)
            else:  # mkstemp makes the file 0600; give it the mode a plain write would have.
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.chmod(tmp, mode)
            os.replace(tmp, real)
            tmp = None
        except OSError as exc:
            raise UsageError(f"{option} {str(output)!r} cannot be written: {exc.strerror or exc}") from None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
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


def _check_writable(path: Path | None, option: str) -> None:
    """Refuse an output path before any work, naming the option it came from."""
    if path is None:
        return
    _target(path, option)


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
