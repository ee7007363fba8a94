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


class ModelFailed(TraceToolError):
    """The model's own code failed where no row can say so (a later forward, the backward): exit 3."""

    exit_code = ExitCode.MODEL_REJECTED


class OutOfMemory(UsageError):
    """An allocation failed while the tool ran a real forward (or built its model, or its input):
    exit 2 in our words, never the model's failure."""

    worded: bool = False  # the message already says what the guard expected


#: What torch's allocators say when they cannot allocate (CPU: DefaultCPUAllocator, CUDA, MPS).
_ALLOCATION_WORDS = ("can't allocate memory", "DefaultCPUAllocator", "out of memory", "Out of memory")


def is_out_of_memory(exc: BaseException | None) -> bool:
    """``exc`` (or what it was raised from) is an allocation failure: ``MemoryError``,
    ``torch.OutOfMemoryError``, or a ``RuntimeError`` of an allocator that could not allocate."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (MemoryError, OutOfMemory)):
            return True
        if any(c.__name__ == "OutOfMemoryError" for c in type(exc).__mro__):
            return True
        if isinstance(exc, RuntimeError) and any(w in message_of(exc, 1000) for w in _ALLOCATION_WORDS):
            return True
        exc = exc.__cause__
    return False


def message_of(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``str(exc)``, at most ``limit`` characters, for any exception: one whose
    ``__str__`` raises or returns something other than a string is described instead of read."""
    try:
        text = str(exc)
    except KeyboardInterrupt:
        raise
    except BaseException as inner:  # the model's own __str__ failed: say so, never fail with it
        return f"(its message could not be read: {type(inner).__name__} in its __str__)"
    text = text[: limit * 4].strip()
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."
