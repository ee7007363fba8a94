"""Ground floor: how a shape and a size in bytes are written as text. Imports nothing of the package."""

from __future__ import annotations

from collections.abc import Sequence

#: A tensor's shape, outermost dimension first.
Shape = tuple[int, ...]


def shape_text(shape: Sequence[int] | None) -> str:
    """``(1, 256, 56, 56)`` -> ``1x256x56x56``; empty for no shape (``None`` or ``()``)."""
    return "x".join(str(d) for d in shape) if shape else ""


def human(n: float) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ``39.2 MiB``, up to PiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover
