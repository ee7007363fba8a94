"""Shape-only execution: answer the output shape of the seed's few operations directly.

On the ``meta`` device PyTorch 2.13 runs ReLU and add through Python reference
kernels whose first call imports ``torch._dynamo`` (about a second). The seed's
forward uses six operations; :class:`ShapeMode`, a public ``TorchFunctionMode``,
computes their output shapes with the same arithmetic and checks as PyTorch and
returns empty ``meta`` tensors. Every other operation falls through to PyTorch
unchanged. Hooks still see the model's own forward. ``tests/test_shapes.py``
checks agreement with real CPU forwards, including inputs that fail.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    seq = tuple(value)
    return (seq[0], seq[0]) if len(seq) == 1 else (seq[0], seq[1])


def _empty(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=like.dtype, device="meta")


def _conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str) or x.dim() != 4:
        return NotImplemented
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    out_ch, in_per_group, kh, kw = weight.shape
    n, c, h, w = x.shape
    if c != in_per_group * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected input"
            f"{list(x.shape)} to have {in_per_group * groups} channels, but got {c} channels instead"
        )
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise RuntimeError(
            f"Calculated padded input size per channel: ({h + 2 * ph} x {w + 2 * pw}). "
            f"Kernel size: ({kh} x {kw}). Kernel size can't be greater than actual input size"
        )
    return _empty((n, out_ch, oh, ow), x)


def _pool_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _pool2d(x, kernel_size, stride, padding, dilation=1):
    (kh, kw) = _pair(kernel_size)
    (sh, sw) = _pair(stride) if stride not in (None, ()) else (kh, kw)
    (ph, pw), (dh, dw) = _pair(padding), _pair(dilation)
    if ph > kh // 2 or pw > kw // 2:
        raise RuntimeError("pad should be at most half of effective kernel size")
    *lead, h, w = x.shape
    oh, ow = _pool_out(h, kh, sh, ph, dh), _pool_out(w, kw, sw, pw, dw)
    if oh < 1 or ow < 1:
        raise RuntimeError(
            f"Given input size: ({'x'.join(str(d) for d in x.shape[-3:])}). "
            f"Calculated output size: ({x.shape[-3]}x{oh}x{ow}). Output size is too small"
        )
    return _empty((*lead, oh, ow), x)


def _max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if ceil_mode or return_indices:
        return NotImplemented
    return _pool2d(x, kernel_size, stride, padding, dilation)


def _avg_pool2d(
    x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    if ceil_mode:
        return NotImplemented
    return _pool2d(x, kernel_size, stride, padding)


def _adaptive_avg_pool2d(x, output_size):
    oh, ow = _pair(output_size) if output_size is not None else (None, None)
    *lead, h, w = x.shape
    return _empty((*lead, h if oh is None else oh, w if ow is None else ow), x)


def _relu(x, inplace=False):
    return x if inplace else _empty(x.shape, x)


def _linear(x, weight, bias=None):
    if x.shape[-1] != weight.shape[1]:
        rows = 1
        for d in x.shape[:-1]:
            rows *= d
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({rows}x{x.shape[-1]} and "
            f"{weight.shape[1]}x{weight.shape[0]})"
        )
    return _empty((*x.shape[:-1], weight.shape[0]), x)


def _add(a, b, *, alpha=1):
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return NotImplemented
    return _empty(_broadcast(tuple(a.shape), tuple(b.shape)), a)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    # torch.broadcast_shapes would do, but its first call imports sympy (0.3 s).
    size = max(len(a), len(b))
    a, b = (1,) * (size - len(a)) + a, (1,) * (size - len(b)) + b
    out = []
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y and 1 not in (x, y):
            raise RuntimeError(
                f"The size of tensor a ({x}) must match the size of tensor b ({y}) "
                f"at non-singleton dimension {i}"
            )
        out.append(y if x == 1 else x)
    return tuple(out)


_RULES = {
    torch.conv2d: _conv2d,
    F.conv2d: _conv2d,
    F.relu: _relu,
    torch.relu: _relu,
    F.max_pool2d: _max_pool2d,
    torch.max_pool2d: _max_pool2d,
    F.avg_pool2d: _avg_pool2d,
    torch._C._nn.avg_pool2d: _avg_pool2d,
    F.adaptive_avg_pool2d: _adaptive_avg_pool2d,
    torch._C._nn.adaptive_avg_pool2d: _adaptive_avg_pool2d,
    F.linear: _linear,
    torch._C._nn.linear: _linear,
    torch.Tensor.add: _add,
    torch.Tensor.__add__: _add,
    torch.add: _add,
}


class ShapeMode(TorchFunctionMode):
    """Answer output shapes of the seed's operations on ``meta`` tensors; pass the rest through."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = _RULES.get(func)
        if rule is not None and args and getattr(args[0], "is_meta", False):
            result = rule(*args, **kwargs)
            if result is not NotImplemented:
                return result
        return func(*args, **kwargs)
