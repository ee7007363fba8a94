"""Shape answers on ``meta``: a few common operations and a model build without initialisation.

:data:`META_RULES` answers the output of common operations on ``meta`` tensors directly, because
PyTorch's Python meta kernels for them import sympy and ``torch._dynamo`` on first use (about a
second, see docs/performance.md); the operation mode (:class:`~resnet_trace.ops.mode.OpMode`)
consults it. Anything else falls through to PyTorch unchanged; ``tests/test_shapes.py`` checks
the shortcuts against real CPU forwards, including inputs that fail. :class:`MetaBuild` builds
the built-in model on ``meta`` without initialising it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._device import DeviceContext

aten = torch.ops.aten


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    seq = tuple(value)
    return (seq[0], seq[0]) if len(seq) == 1 else (seq[0], seq[1])


def _empty(shape: Sequence[int], like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.empty(tuple(int(d) for d in shape), dtype=dtype or like.dtype, device="meta")


def _convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    if transposed or x.dim() != 4 or weight.dim() != 4:
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


def _pool2d(x, kernel_size, stride, padding, dilation=1) -> tuple[int, ...] | None:
    if x.dim() not in (3, 4):
        return None
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride) if stride not in (None, (), []) else (kh, kw)
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
    return (*lead, oh, ow)


def _max_pool2d_with_indices(x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    shape = None if ceil_mode else _pool2d(x, kernel_size, stride, padding, dilation)
    if shape is None:
        return NotImplemented
    return _empty(shape, x), _empty(shape, x, torch.int64)


def _avg_pool2d(
    x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    shape = None if ceil_mode else _pool2d(x, kernel_size, stride, padding)
    return NotImplemented if shape is None else _empty(shape, x)


def _adaptive_avg_pool2d(x, output_size):
    oh, ow = _pair(output_size)
    return _empty((*x.shape[:-2], oh, ow), x)


def _mean_dim(x, dim, keepdim=False, *, dtype=None):
    if dim is None or dtype is not None:
        return NotImplemented
    dims = {d % x.dim() for d in dim} if dim else set(range(x.dim()))
    shape = (
        [1 if i in dims else s for i, s in enumerate(x.shape)]
        if keepdim
        else [s for i, s in enumerate(x.shape) if i not in dims]
    )
    return _empty(shape, x)


def _same(x, *args, **kwargs):
    out = _dense_like(x)  # elementwise kernels keep a dense input's layout
    return NotImplemented if out is None else out


def _inplace(x, *args, **kwargs):
    return x


def _addmm(bias, mat1, mat2, *, beta=1, alpha=1):
    if mat1.dim() != 2 or mat2.dim() != 2:
        return NotImplemented
    if mat1.shape[1] != mat2.shape[0]:
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({mat1.shape[0]}x{mat1.shape[1]} and "
            f"{mat2.shape[0]}x{mat2.shape[1]})"
        )
    return _empty((mat1.shape[0], mat2.shape[1]), mat1)


def _mm(mat1, mat2):
    return _addmm(None, mat1, mat2)


def broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """``torch.broadcast_shapes`` without its first-call import of sympy."""
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


def _binary(a, b, *args, **kwargs):
    if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or not b.is_meta:
        return NotImplemented
    return _empty(broadcast(tuple(a.shape), tuple(b.shape)), a)


def _binary_(a, b, *args, **kwargs):
    if not isinstance(b, torch.Tensor) or not b.is_meta:
        return NotImplemented
    if broadcast(tuple(a.shape), tuple(b.shape)) != tuple(a.shape):
        return NotImplemented  # let PyTorch word the in-place error
    return a


# Batch and layer norm, softmax, bmm, dropout: PyTorch answers these on ``meta`` with Python meta
# kernels or reference decompositions (milliseconds a call, and imports on first use). Each rule
# below returns exactly what that kernel returns (shapes, dtypes and strides of every output) and
# returns NotImplemented for anything unusual, invalid input included, so that PyTorch handles
# (and words) it. tests/test_shapes.py compares every rule with the kernel it replaces.
_FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})


def _acc(dtype: torch.dtype) -> torch.dtype:
    """The statistics' dtype of a norm on meta: float32 for half and bfloat16 inputs."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _vector(t: Any, size: int, dtype: torch.dtype) -> bool:
    """``t`` is None or a meta vector of ``size`` elements in ``dtype``."""
    return t is None or (
        isinstance(t, torch.Tensor) and t.is_meta and t.dim() == 1 and t.shape[0] == size and t.dtype == dtype
    )


def _dense(x: torch.Tensor) -> bool:
    """x's elements fill its storage span exactly once, in some order of its dimensions."""
    expected = 1
    for stride, size in sorted((st, s) for s, st in zip(x.shape, x.stride()) if s != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _dense_like(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """``empty_like(x)``: the same strides when x is non-overlapping and dense, as PyTorch keeps them.

    None otherwise (the caller falls through). ``torch.empty_like`` itself runs a Python meta
    kernel that imports sympy.
    """
    if x.numel() == 0 or not _dense(x):
        return None
    return torch.empty_strided(tuple(x.shape), x.stride(), dtype=dtype or x.dtype, device="meta")


def _batch_norm(x, weight, bias, running_mean, running_var, n_out: int):
    if x.dtype not in _FLOATS or x.dim() < 2 or x.numel() == 0:
        return NotImplemented
    channels = int(x.shape[1])
    stats = _acc(x.dtype)
    if not all(_vector(t, channels, x.dtype) for t in (weight, bias)):
        return NotImplemented
    if not all(
        _vector(t, channels, stats) or _vector(t, channels, x.dtype) for t in (running_mean, running_var)
    ):
        return NotImplemented
    out = _dense_like(x)
    if out is None:
        return NotImplemented
    saved = tuple(_empty((channels,), x, stats) for _ in range(2))
    if n_out == 3:
        return (out, *saved)
    if running_mean is None or running_var is None:
        return NotImplemented
    return (out, *saved, _empty(running_mean.shape, running_mean), _empty(running_var.shape, running_var))


def _native_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps):
    if not training and (running_mean is None or running_var is None):
        return NotImplemented
    return _batch_norm(x, weight, bias, running_mean, running_var, 3)


def _batch_norm_no_training(x, weight, bias, running_mean, running_var, momentum, eps):
    if running_mean is None or running_var is None:
        return NotImplemented
    return _batch_norm(x, weight, bias, running_mean, running_var, 3)


def _batch_norm_functional(x, weight, bias, running_mean, running_var, training, momentum, eps):
    return _batch_norm(x, weight, bias, running_mean, running_var, 5)


def _batch_norm_no_stats(x, weight, bias, training, momentum, eps):
    return _batch_norm(x, weight, bias, None, None, 3)


def _layer_norm(x, normalized_shape, weight, bias, eps):
    norm = tuple(int(d) for d in normalized_shape)
    axis = x.dim() - len(norm)
    if x.dtype not in _FLOATS or not norm or axis < 0 or tuple(x.shape[axis:]) != norm or x.numel() == 0:
        return NotImplemented
    for t in (weight, bias):
        if t is not None and not (
            isinstance(t, torch.Tensor) and t.is_meta and tuple(t.shape) == norm and t.dtype == x.dtype
        ):
            return NotImplemented
    stats_shape = (*x.shape[:axis], *(1,) * len(norm))
    stats = _acc(x.dtype)
    return _empty(x.shape, x), _empty(stats_shape, x, stats), _empty(stats_shape, x, stats)


def _softmax_dim(x: torch.Tensor, dim: int) -> bool:
    return x.dtype in _FLOATS and -max(x.dim(), 1) <= dim < max(x.dim(), 1)


def _softmax(x, dim, half_to_float):
    if not _softmax_dim(x, dim):
        return NotImplemented
    if half_to_float:
        if x.dtype != torch.float16:
            return NotImplemented
        return _empty(x.shape, x, torch.float32)
    return _empty(x.shape, x)


def _safe_softmax(x, dim, dtype=None):
    if not _softmax_dim(x, dim) or (dtype is not None and dtype not in _FLOATS):
        return NotImplemented
    return _empty(x.shape, x, dtype)


def _scalar(x, other):
    """``x * 2.0``, ``x / 8``: a floating tensor and a Python number keep the tensor's dtype."""
    if x.dtype not in _FLOATS or type(other) not in (int, float):
        return NotImplemented
    return _same(x)


def _bmm(a, b):
    if not (
        isinstance(b, torch.Tensor) and b.is_meta and a.dim() == 3 and b.dim() == 3 and a.dtype == b.dtype
    ):
        return NotImplemented
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        return NotImplemented  # let PyTorch word the mismatch
    return _empty((a.shape[0], a.shape[1], b.shape[2]), a)


def _native_dropout(x, p, train):
    if x.dtype not in _FLOATS or not 0 <= p <= 1:
        return NotImplemented
    out = _dense_like(x)
    if out is None:
        return NotImplemented
    return out, _dense_like(x, torch.bool)


META_RULES: dict[Any, Callable[..., Any]] = {
    aten.convolution.default: _convolution,
    aten.max_pool2d_with_indices.default: _max_pool2d_with_indices,
    aten.avg_pool2d.default: _avg_pool2d,
    aten._adaptive_avg_pool2d.default: _adaptive_avg_pool2d,
    aten.mean.dim: _mean_dim,
    aten.addmm.default: _addmm,
    aten.mm.default: _mm,
    aten.relu.default: _same,
    aten.relu_.default: _inplace,
    aten.gelu.default: _same,
    aten.silu.default: _same,
    aten.hardtanh.default: _same,
    aten.sigmoid.default: _same,
    aten.tanh.default: _same,
    aten.add.Tensor: _binary,
    aten.add_.Tensor: _binary_,
    aten.mul.Tensor: _binary,
    aten.native_batch_norm.default: _native_batch_norm,
    aten._native_batch_norm_legit_no_training.default: _batch_norm_no_training,
    aten._native_batch_norm_legit_functional.default: _batch_norm_functional,
    aten._native_batch_norm_legit.default: _native_batch_norm,
    aten._native_batch_norm_legit.no_stats: _batch_norm_no_stats,
    aten.native_layer_norm.default: _layer_norm,
    aten._softmax.default: _softmax,
    aten._safe_softmax.default: _safe_softmax,
    aten.bmm.default: _bmm,
    aten.mul.Scalar: _scalar,
    aten.div.Scalar: _scalar,
    aten.native_dropout.default: _native_dropout,
}


#: In-place random fills of a tensor: on ``meta`` there are no values to fill.
_RANDOM_FILLS = (
    "uniform_",
    "normal_",
    "bernoulli_",
    "cauchy_",
    "exponential_",
    "geometric_",
    "log_normal_",
    "random_",
)


class MetaBuild(DeviceContext):
    """Build a model on ``meta`` without initialising it: ``torch.device("meta")`` (the same context:
    the default device, the mode's place at the bottom of the stack) that also makes
    ``torch.nn.init``'s functions and a tensor's random fills return their tensor untouched.

    A ``meta`` tensor has no values, so initialising one changes nothing but costs Python time
    (about half of building the seed on ``meta``). One mode does both jobs: stacking a second
    function mode over ``torch.device`` would cost more than the initialisation it skips. A mode is
    thread-local, unlike a patch, so another thread building a real model is not affected.

    Skipped init functions skip their argument checks too (``kaiming_uniform_`` on a 1-D
    tensor raises on the CPU), so this is for the built-in model, whose code is ours; a model of
    your own is built under plain ``torch.device("meta")``, and fails on ``meta`` as on the CPU.
    """

    def __init__(self) -> None:
        super().__init__("meta")
        import torch.nn.init as init

        names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_")]
        self._skip = frozenset(
            [getattr(init, n) for n in names] + [getattr(torch.Tensor, n) for n in _RANDOM_FILLS]
        )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._skip:
            # torch.nn.init passes its tensor by keyword; a tensor method gets it as ``self``
            t = args[0] if args else kwargs.get("tensor")
            if getattr(t, "is_meta", False):
                return t
        return super().__torch_function__(func, types, args, kwargs)
