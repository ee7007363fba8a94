"""Parsing and validating what the user asks for, without importing torch."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from resnet_trace.errors import UsageError
from resnet_trace.layout import BASE_DIM, NUM_CLASSES
from resnet_trace.records import Head, Variant

SHAPE_FORM = "NxCxHxW with positive integers, e.g. 1x3x224x224"
# Generous but finite limits, chosen so that no tensor of a trace can overflow PyTorch's
# 64-bit sizes (a meta tensor still computes its storage in bytes):
#  * each dimension fits a C int;
#  * N*H*W <= 2**40 and base_dim <= 2**14: every activation of the seed holds at most
#    32 * base_dim * N*H*W elements (layer_5 at a 1x1 map), 2**59, times 4 bytes;
#  * num_classes <= 2**20: the logits hold N * num_classes <= 2**60 elements.
MAX_DIM = 2**31 - 1
MAX_SAMPLES_AREA = 2**40  # N * H * W
MAX_BASE_DIM = 2**14  # 256 times the seed's 64
MAX_NUM_CLASSES = 2**20

_DIGITS = 19  # more digits than this cannot be a dimension; also keeps int() away from huge strings
_DIM = re.compile(r"[1-9][0-9]*\Z")
_SWEEP = re.compile(r"\A(?P<lo>[0-9]+)(?:-|\.\.)(?P<hi>[0-9]+)(?::(?P<step>[0-9]+))?\Z")
MAX_SWEEP = 10_000


def _quote(value: str) -> str:
    """The user's value as a Python literal, cut short when it is very long."""
    return repr(value) if len(value) <= 60 else repr(value[:50]) + f"... ({len(value):,} characters)"


def _number(text: str, value: str) -> int:
    if len(text) > _DIGITS:
        raise UsageError(
            f"--input {_quote(value)}: each dimension must be at most {MAX_DIM:,}; expected {SHAPE_FORM}"
        )
    return int(text)


@dataclass(frozen=True, slots=True)
class SeedConfig:
    """The built-in model's four settings, every one given: what a seed checkpoint holds
    (:func:`resnet_trace.loading.checkpoint_config`) and what
    :meth:`resnet_trace.choice.ModelChoice.seed_config` resolves the choice of the built-in model
    to. The choice itself, of any model, is a :class:`~resnet_trace.choice.ModelChoice`."""

    base_dim: int = BASE_DIM
    num_classes: int = NUM_CLASSES
    variant: Variant = Variant.SEED
    head: Head = Head.AVGPOOL7

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", word("variant", Variant, self.variant))
        object.__setattr__(self, "head", word("head", Head, self.head))


#: Old name of :class:`SeedConfig`, kept for one release.
ModelSpec = SeedConfig


def parse_shape(text: str, *, quoted: str | None = None) -> tuple[int, int, int, int]:
    """Parse ``NxCxHxW``; raise :class:`UsageError` quoting the value otherwise.

    ``quoted`` is the value to quote in messages (the user's sweep, when ``text`` is one size of it).
    """
    raw = text if quoted is None else quoted
    parts = [p.strip() for p in text.strip().lower().split("x")]
    if len(parts) != 4 or not all(_DIM.match(p) for p in parts):
        hint = ""
        if len(parts) != 4 and all(_DIM.match(p) for p in parts):
            hint = f" (got {len(parts)} dimension{'s' if len(parts) != 1 else ''})"
        elif any(p.startswith("-") and _DIM.match(p[1:]) for p in parts):
            hint = " (dimensions cannot be negative)"
        elif any(_DIM.match(p) is None and p.strip("0") == "" and p for p in parts):
            hint = " (dimensions cannot be 0)"
        raise UsageError(f"--input {_quote(raw)} is not a shape{hint}: expected {SHAPE_FORM}")
    dims = tuple(_number(p, raw) for p in parts)
    if max(dims) > MAX_DIM:
        raise UsageError(
            f"--input {_quote(raw)}: each dimension must be at most {MAX_DIM:,}; expected {SHAPE_FORM}"
        )
    n, c, h, w = dims
    if n * h * w > MAX_SAMPLES_AREA:
        raise UsageError(
            f"--input {_quote(raw)} is too large to trace: N*H*W = {n * h * w:,} is over "
            f"{MAX_SAMPLES_AREA:,}, beyond what PyTorch's 64-bit tensor sizes can hold at every layer"
        )
    return n, c, h, w


def _sweep_sizes(value: str, part: str) -> range:
    m = _SWEEP.match(part)
    assert m is not None
    lo, hi = _number(m["lo"], value), _number(m["hi"], value)
    step = _number(m["step"], value) if m["step"] is not None else 1
    if lo < 1 or hi < lo or step < 1:
        raise UsageError(
            f"--input {_quote(value)}: a sweep is lo-hi[:step] with 1 <= lo <= hi and step >= 1 "
            f"(e.g. 1x3x190-230x224)"
        )
    if (hi - lo) // step + 1 > MAX_SWEEP:
        raise UsageError(f"--input {_quote(value)} sweeps more than {MAX_SWEEP:,} sizes")
    return range(lo, hi + 1, step)


def expand_inputs(values: list[str]) -> list[tuple[int, int, int, int]]:
    """Expand ``--input`` values into shapes.

    ``1x3x180-240:4x224`` sweeps one dimension (lo-hi[:step]); the same sweep in H and W,
    ``1x3x190-230x190-230``, sweeps square sizes (H and W together).
    """
    shapes: list[tuple[int, int, int, int]] = []
    for value in values:
        parts = [p.strip() for p in value.strip().lower().split("x")]
        sweeps = [i for i, p in enumerate(parts) if _SWEEP.match(p)]
        if len(parts) != 4 or not sweeps:
            shapes.append(parse_shape(value))
            continue
        square = sweeps == [2, 3]
        if len(sweeps) > 1 and not square:
            raise UsageError(
                f"--input {_quote(value)}: sweep one dimension, or H and W together with the same "
                f"range (1x3x190-230x190-230)"
            )
        if square and parts[2] != parts[3]:
            raise UsageError(
                f"--input {_quote(value)}: H and W sweep together only over the same range "
                f"(1x3x190-230x190-230); sweep one of them for other sizes"
            )
        sizes = _sweep_sizes(value, parts[sweeps[0]])
        first = list(parts)
        for i in sweeps:
            first[i] = str(sizes[0])
        parse_shape("x".join(first), quoted=value)  # the fixed dimensions, checked once
        for size in sizes:
            parts_i = list(parts)
            for i in sweeps:
                parts_i[i] = str(size)
            shapes.append(parse_shape("x".join(parts_i), quoted=value))
    return shapes


class InvalidValue(UsageError, ValueError):
    """A value out of its range; ``field`` names what it is (the CLI turns it into a flag)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidType(UsageError, TypeError):
    """A value of the wrong type (``base_dim=2.5``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


#: The upper bound of every numeric setting, keyed by field (the CLI's flags map onto these).
LIMITS: dict[str, int] = {
    "base_dim": MAX_BASE_DIM,
    "num_classes": MAX_NUM_CLASSES,
    "repeat": 10_000,
    "top_k": MAX_NUM_CLASSES,
    "seed": 2**63 - 1,
    "target": MAX_NUM_CLASSES - 1,
    "budget": 2**60,  # bytes
    "gpus": 2**20,
}


W = TypeVar("W", bound=Enum)


def word(field: str, kind: type[W], value: object) -> W:
    """``value`` (a member of ``kind`` or its word) as the member; InvalidValue naming it otherwise."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(w.value) for w in kind)
        raise InvalidValue(field, f"{field} must be one of {choices}, not {value!r}") from None


def integer(field: str, value: object, *, low: int = 1) -> int:
    """``value`` as an int within ``low``..``LIMITS[field]``; a bool or a float is refused, not rounded."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(field, f"{field} must be an integer, not {value!r}")
    top = LIMITS.get(field, MAX_DIM)
    if value < low:
        raise InvalidValue(field, f"{field} must be at least {low}, not {value}")
    if value > top:
        raise InvalidValue(field, f"{field} must be at most {top:,}, not {value:,}")
    return value


def check_shape(shape: object) -> tuple[int, int, int, int]:
    """An API input shape: four positive ints within the CLI's limits (no silent truncation)."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__"):
        raise InvalidType("input_shape", f"input_shape must be a sequence of 4 integers, not {shape!r}")
    dims = list(shape)  # type: ignore[call-overload]  # a sized non-string object, checked just above
    if len(dims) != 4 or any(isinstance(d, bool) or not isinstance(d, int) for d in dims):
        raise InvalidType("input_shape", f"input_shape must be 4 integers (N, C, H, W), not {shape!r}")
    return parse_shape("x".join(str(d) for d in dims), quoted=repr(tuple(dims)))
