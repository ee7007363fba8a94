"""Log-scale bars: one string per value, so that a gradient that vanishes by decades shows at a glance.

Pure functions of floats; no torch, no Rich.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

FULL = "█"
PARTS = " ▏▎▍▌▋▊▉"  # eighths of a cell, for a smooth end


def log_bars(values: Sequence[float | None], *, width: int = 12, decades: float | None = None) -> list[str]:
    """A bar per value, its length the value's log10 on a scale shared by all the values.

    The largest positive value fills ``width`` cells; each cell below it is ``span / width``
    decades, where ``span`` is ``decades`` or the spread of the values (at least one decade). A
    positive value too small for the scale still gets its first eighth, so it never reads as zero.
    ``None`` (not measured) gives ``""``; zero (an exact zero gradient) gives ``"0"``; a
    negative or non-finite value gives ``"?"``.
    """
    logs = [math.log10(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    out: list[str] = []
    if not logs:
        return ["" if v is None else "0" if v == 0 else "?" for v in values]
    hi = max(logs)
    span = decades if decades is not None else max(hi - min(logs), 1.0)
    for v in values:
        if v is None:
            out.append("")
        elif v == 0:
            out.append("0")
        elif not math.isfinite(v) or v < 0:
            out.append("?")
        else:
            frac = max(0.0, 1.0 - (hi - math.log10(v)) / span)
            eighths = max(1, round(frac * width * 8))
            full, part = divmod(eighths, 8)
            out.append((FULL * full + (PARTS[part] if part else "")).ljust(width))
    return out


def decades_below(values: Sequence[float | None]) -> float | None:
    """How many decades the smallest positive value lies below the largest; ``None`` without two."""
    logs = [math.log10(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    return max(logs) - min(logs) if len(logs) >= 2 else None
