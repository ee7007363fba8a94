"""Parsing and validating what the user asks for, without importing torch."""

from __future__ import annotations

import re
from dataclasses import dataclass

from resnet_trace.errors import UsageError
from resnet_trace.layout import STEM_CHANNELS

SHAPE_FORM = "NxCxHxW with positive integers, e.g. 1x3x224x224"
# Generous but finite: keeps every count inside int64 and every message sane.
MAX_DIM = 2**31 - 1
MAX_ELEMENTS = 2**62

_DIM = re.compile(r"[1-9][0-9]*\Z")
_SWEEP = re.compile(r"\A(?P<lo>\d+)(?:-|\.\.)(?P<hi>\d+)(?::(?P<step>\d+))?\Z")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What model to build: the seed's options plus the variant and head."""

    base_dim: int = 64
    num_classes: int = 2
    variant: str = "seed"
    head: str = "avgpool7"


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """Parse ``NxCxHxW``; raise :class:`UsageError` quoting the value otherwise."""
    raw = text
    parts = text.strip().lower().split("x")
    if len(parts) != 4 or not all(_DIM.match(p.strip()) for p in parts):
        hint = ""
        if len(parts) != 4 and all(_DIM.match(p.strip()) for p in parts):
            hint = f" (got {len(parts)} dimension{'s' if len(parts) != 1 else ''})"
        raise UsageError(f"--input {raw!r} is not a shape{hint}: expected {SHAPE_FORM}")
    dims = tuple(int(p) for p in parts)
    if max(dims) > MAX_DIM:
        raise UsageError(f"--input {raw!r}: each dimension must be at most {MAX_DIM:,}")
    n, c, h, w = dims
    if n * c * h * w > MAX_ELEMENTS:
        raise UsageError(f"--input {raw!r} has more elements than any tensor can hold")
    if c != STEM_CHANNELS:
        raise UsageError(
            f"--input {raw!r} has {c} channels; the stem's first Conv2d takes {STEM_CHANNELS} "
            f"(try {n}x{STEM_CHANNELS}x{h}x{w})"
        )
    return n, c, h, w  # type: ignore[return-value]


def expand_inputs(values: list[str]) -> list[tuple[int, int, int, int]]:
    """Expand ``--input`` values; ``1x3x180-240:4x224`` sweeps one dimension (lo-hi[:step])."""
    shapes: list[tuple[int, int, int, int]] = []
    for value in values:
        parts = value.strip().lower().split("x")
        sweeps = [i for i, p in enumerate(parts) if _SWEEP.match(p.strip())]
        if len(parts) == 4 and len(sweeps) == 1:
            i = sweeps[0]
            m = _SWEEP.match(parts[i].strip())
            assert m is not None
            lo, hi, step = int(m["lo"]), int(m["hi"]), int(m["step"] or 1)
            if lo < 1 or hi < lo or step < 1:
                raise UsageError(
                    f"--input {value!r}: a sweep is lo-hi[:step] with 1 <= lo <= hi and step >= 1"
                )
            if (hi - lo) // step + 1 > 10_000:
                raise UsageError(f"--input {value!r} sweeps more than 10,000 sizes")
            for size in range(lo, hi + 1, step):
                parts_i = list(parts)
                parts_i[i] = str(size)
                shapes.append(parse_shape("x".join(parts_i)))
        elif len(parts) == 4 and len(sweeps) > 1:
            raise UsageError(f"--input {value!r}: sweep one dimension at a time")
        else:
            shapes.append(parse_shape(value))
    return shapes


def positive(name: str, value: int) -> int:
    if value < 1:
        raise UsageError(f"{name} must be at least 1, not {value}")
    if value > MAX_DIM:
        raise UsageError(f"{name} must be at most {MAX_DIM:,}, not {value:,}")
    return value
