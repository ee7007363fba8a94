"""Multiply-accumulates of one ATen operation: convolutions, matrix products and fused attention.

For the whole batch, bias adds excluded: ``FlopCounterMode``'s count / 2. :func:`op_macs` is what
the operation mode (:mod:`resnet_trace.ops.mode`) reports with every operation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

aten = torch.ops.aten


def _prod(values: Sequence[int]) -> int:
    return math.prod(int(v) for v in values)


def _conv_macs(args: tuple, out: Any) -> int:
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    if not isinstance(out, torch.Tensor):
        return 0
    batch = int(x.shape[0])
    if transposed:
        # weight is (c_in, c_out / groups, *k); every input element meets every kernel tap
        c_in, c_out_g, *kernel = w.shape
        return batch * _prod(x.shape[2:]) * c_in * c_out_g * _prod(kernel)
    c_out, c_in_g, *kernel = w.shape
    return batch * _prod(out.shape[2:]) * c_out * c_in_g * _prod(kernel)


def _mm_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    return int(a.shape[0]) * int(a.shape[1]) * int(b.shape[1])


def _bmm_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    return int(a.shape[0]) * int(a.shape[1]) * int(a.shape[2]) * int(b.shape[2])


def _attention_macs(args: tuple, out: Any) -> int:
    """Q·Kᵀ and A·V of a fused attention kernel: (B, H, L, E) x (B, H, S, E) x (B, H, S, Ev)."""
    q, k, v = args[0], args[1], args[2]
    lead = _prod(q.shape[:-2])
    length, e = int(q.shape[-2]), int(q.shape[-1])
    s, ev = int(k.shape[-2]), int(v.shape[-1])
    return lead * length * s * e + lead * length * s * ev


_MACS: dict[Any, Callable[[tuple, Any], int]] = {
    aten.convolution.default: _conv_macs,
    aten._convolution.default: _conv_macs,
    aten.mm.default: lambda a, o: _mm_macs(a[0], a[1]),
    aten.addmm.default: lambda a, o: _mm_macs(a[1], a[2]),
    aten.bmm.default: lambda a, o: _bmm_macs(a[0], a[1]),
    aten.baddbmm.default: lambda a, o: _bmm_macs(a[1], a[2]),
}
for _name in (
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_flash_attention_forward",
    "_efficient_attention_forward",
):
    _packet = getattr(aten, _name, None)
    if _packet is not None:
        for _overload in _packet.overloads():
            _MACS[getattr(_packet, _overload)] = _attention_macs


def op_macs(func: Any, args: tuple, out: Any) -> int:
    """Multiply-accumulates of one ATen operation (0 for anything but convolutions and products)."""
    rule = _MACS.get(func)
    return int(rule(args, out)) if rule is not None else 0
