"""The CLI's edge with the outside world: one-line errors, exit codes, and writing output.

Everything here is about streams and files, not about tracing: ``cli.py`` builds the
commands, this module makes sure each ends as data on stdout (or an atomically written
file) and at most one line on stderr.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from resnet_trace.errors import ExitCode, TraceToolError, UsageError


def _click_classes() -> tuple[type, ...]:
    """Typer's Click exception classes: its bundled copy (typer >= 0.2x) or the click package."""
    base = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    return base, sys.modules[base.__module__]  # type: ignore[return-value]


_ClickException, _click_exc = _click_classes()
_EXIT = tuple({typer.Exit, getattr(_click_exc, "Exit", typer.Exit)})
_ABORT = tuple({typer.Abort, getattr(_click_exc, "Abort", typer.Abort)})
_NO_ARGS = getattr(_click_exc, "NoArgsIsHelpError", None) or type("_NeverRaised", (Exception,), {})


def _say(message: str) -> None:
    """One line on stderr, never parsed as markup."""
    sys.stderr.write(f"resnet-trace: {message}\n")
    sys.stderr.flush()


class OneLineErrors(TyperGroup):
    """Every failure ends as one line on stderr and a documented exit code."""

    def main(
        self,
        args: Any = None,
        prog_name: Any = None,
        complete_var: Any = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:  # noqa: D102
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv or bool(os.environ.get("RESNET_TRACE_DEBUG"))
        try:
            rv = super().main(
                args=argv,
                prog_name=prog_name or "resnet-trace",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
            code = rv if isinstance(rv, int) else 0
        except _EXIT as exc:
            code = exc.exit_code
            if code == ExitCode.INTERRUPTED:  # Typer's own handling of Ctrl-C inside a command
                _say("interrupted")
        except _NO_ARGS as exc:
            sys.stdout.write(exc.ctx.get_help() + "\n")  # type: ignore[union-attr]
            code = ExitCode.USAGE
        except _ClickException as exc:
            hint = ""
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                hint = f" (see '{ctx.command_path} --help')"
            _say(f"error: {exc.format_message()}{hint}")
            code = ExitCode.USAGE
        except (KeyboardInterrupt, *_ABORT):
            _say("interrupted")
            code = ExitCode.INTERRUPTED
        except TraceToolError as exc:
            _say(f"error: {exc}")
            code = exc.exit_code
        except BrokenPipeError:
            _quiet_broken_pipe()
            code = ExitCode.OK
        except Exception as exc:  # a bug of ours
            if debug:
                traceback.print_exc()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            _say(
                f"internal error: {type(exc).__name__}: {first} (a bug; rerun with --debug for the traceback)"
            )
            code = ExitCode.INTERNAL
        if standalone_mode:
            sys.exit(int(code))
        return int(code)


def _quiet_broken_pipe() -> None:
    """The reader went away (``| head``): stop writing, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def write_output(text: str, output: Path | None, option: str = "--output") -> None:
    """stdout, or ``output`` written atomically (temporary file in the same folder, then renamed)."""
    if output is None:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader went away (| head): stop quietly
            _quiet_broken_pipe()
        except OSError as exc:  # e.g. a full disk behind a redirect
            raise UsageError(f"cannot write to stdout: {exc.strerror or exc}") from None
        return
    _check_writable(output, option)
    folder = output.parent if str(output.parent) else Path(".")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file 0600; give it the mode a plain write would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, output)
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
    tty = output is None and sys.stdout.isatty()
    color = tty and not os.environ.get("NO_COLOR")
    if tty:
        import shutil

        return color, shutil.get_terminal_size().columns
    return False, 240


def _check_writable(path: Path | None, option: str) -> None:
    """Refuse an output path before any work, naming the option it came from."""
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{option} {str(path)!r} is a directory; name a file")
    if not folder.is_dir():
        raise UsageError(f"{option} {str(path)!r}: folder {str(folder)!r} does not exist")
