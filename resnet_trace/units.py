"""Ground floor: how a shape and a size in bytes are written as text. Imports nothing of the package."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: A tensor's shape, outermost dimension first.
Shape = tuple[int, ...]


def shape_text(shape: Sequence[int] | None) -> str:
    """``(1, 256, 56, 56)`` -> ``1x256x56x56``; empty for no shape (``None`` or ``()``)."""
    return "x".join(str(d) for d in shape) if shape else ""


def tensor_text(tensor: Any) -> str:
    """One input tensor (an ``InputTensor``) as ``--input`` names it: ``input_ids=2x16:int64[0,100)``."""
    text = shape_text(tensor.shape)
    if tensor.dtype is not None:
        text += f":{tensor.dtype}"
    if tensor.low is not None and tensor.high is not None:
        text += f"[{tensor.low:g},{tensor.high:g})"
    return f"{tensor.name}={text}" if tensor.name is not None else text


def input_text(shape: Sequence[int] | None, tensors: Sequence[Any] = ()) -> str:
    """A trace's input: its shape (``1x3x224x224``), or every tensor when it has several, names or dtypes."""
    return ",".join(tensor_text(t) for t in tensors) if tensors else shape_text(shape)


def human(n: float) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ``39.2 MiB``, up to PiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover
