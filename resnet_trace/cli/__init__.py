"""The command line: thin commands over the library (``commands``), their options (``options``), how a
result leaves (``output``) and the edge with the outside: ``streams``, ``files`` and ``errors``.

``main`` imports the commands itself, so that a Ctrl-C at any moment after the process starts,
while Typer, Rich or torch are still being imported, ends as ``resnet-trace: interrupted`` and
exit 130, as it does once a command runs.
"""

from __future__ import annotations

import os
import signal
from typing import Any

__all__ = ["app", "main"]

#: Packages whose import a Ctrl-C must not cut short: torch's C extension swallows an exception
#: raised inside it (numpy then counts as missing, the run goes on, exit 0) or aborts the process.
_UNINTERRUPTED = ("torch", "numpy")


def _interrupt(signum: int, frame: Any) -> None:
    """SIGINT: KeyboardInterrupt, as Python's own handler, except inside an import of torch or
    numpy, where it is delivered again 50 ms later, until that import is done."""
    f = frame
    while f is not None:
        name = f.f_globals.get("__name__")
        if f.f_code.co_name == "<module>" and isinstance(name, str) and name.split(".")[0] in _UNINTERRUPTED:
            import _thread
            import threading

            timer = threading.Timer(0.05, _thread.interrupt_main)
            timer.daemon = True
            timer.start()
            return
        f = f.f_back
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point (``resnet-trace``, ``python -m resnet_trace``)."""
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when ignored (nohup, &)
            signal.signal(signal.SIGINT, _interrupt)
        from resnet_trace.cli.commands import main as run

        run()
    except KeyboardInterrupt:
        interrupted()


def interrupted() -> None:
    """Ctrl-C outside a command's own handling: one line, exit 130, nothing else run."""
    try:
        os.write(2, b"resnet-trace: interrupted\n")
    except OSError:
        pass
    os._exit(130)


def __getattr__(name: str) -> Any:
    if name == "app":
        from resnet_trace.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
