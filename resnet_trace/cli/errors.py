"""Whose failure it is, and how it ends: one line on stderr and a documented exit code.

:class:`OneLineErrors` is the command group; every exception a command raises ends in its
``main`` as one line (:func:`resnet_trace.cli.streams._say`) and an :class:`ExitCode`. A failure
inside the model's own code is exit 3 (:func:`model_failure`), one of ours exit 4.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from resnet_trace.cli.streams import (
    _quiet_broken_pipe,
    _say,
    command_scope,
    count_lost_lines,
    lost_lines,
    prepare_streams,
    recursion_room,
)
from resnet_trace.errors import ExitCode, TraceToolError, message_of


def _click_classes() -> tuple[Any, Any]:
    """Typer's Click exception classes: its bundled copy (typer >= 0.2x) or the click package."""
    base = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    return base, sys.modules[base.__module__]


_ClickException, _click_exc = _click_classes()
# Typed Any: Click's classes come from whichever copy typer bundles, found at run time.
_EXIT: Any = tuple({typer.Exit, getattr(_click_exc, "Exit", typer.Exit)})
_ABORT: Any = tuple({typer.Abort, getattr(_click_exc, "Abort", typer.Abort)})
_NO_ARGS: Any = getattr(_click_exc, "NoArgsIsHelpError", None) or type("_NeverRaised", (Exception,), {})


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
        count_lost_lines()
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
        if lost_lines() and code == ExitCode.OK:
            code = ExitCode.USAGE  # something had to be said and stderr could not take it
        if standalone_mode:
            sys.exit(int(code))
        return int(code)
