"""The tool's one small family of errors; ``cli.py`` alone turns them into exit codes."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes (README, ``--help``, docs/cli.md)."""

    OK = 0
    DIFFERENCES = 1  # check/diff found differences
    USAGE = 2  # bad option, malformed shape, missing/unsafe file, cannot fit in memory
    MODEL_REJECTED = 3  # the model cannot process this input: the trace stopped at a module
    INTERNAL = 4  # a bug: one line on stderr, the traceback with --debug
    INTERRUPTED = 130  # Ctrl-C


class TraceToolError(Exception):
    """Base of the errors a user can cause; ``exit_code`` says how the CLI ends."""

    exit_code: ExitCode = ExitCode.INTERNAL


class UsageError(TraceToolError):
    """A bad option value, a malformed shape, an unreadable or unsafe file, too much memory."""

    exit_code = ExitCode.USAGE
