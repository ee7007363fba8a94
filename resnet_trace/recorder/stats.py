"""Activation statistics of a call's first output tensor: mean, std, min, max, fraction of zeros."""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator

import torch

from resnet_trace.ops import tensors_in
from resnet_trace.records import Activation

#: Values per pass through the scratch buffer: 1 MiB of float32, which stays in a core's cache
#: between the write and the read, and is allocated (and page-faulted) once, not per row. It also
#: keeps counting with a float dot product exact: every partial sum is an integer below 2**24.
_CHUNK = 2**18
#: Values per row when summing squares as row norms: each row's float32 error stays near 1e-7.
_ROW = 1024
#: Above this mean**2 / variance, the one-pass variance loses digits: centre the values first.
_CANCELLATION = 16.0
#: Largest magnitudes whose squares, 1024 at a time, stay normal float32 numbers: outside (or for a
#: zero tensor, NaN or infinity), std is taken in float64 instead.
_SQUARES_FIT = (1e-15, 1e17)


def _sum_of_squares(flat: torch.Tensor) -> float:
    """Sum of squares in float64, from the float32 norms of rows of 1024 values (then a float64 dot).

    As close as a cascade sum (relative error about 1e-7 on millions of values, where a single
    BLAS dot drifts by 1e-4), in one read of the values and no write.
    """
    n = flat.numel()
    rows = n // _ROW
    total = 0.0
    if rows:
        norms = torch.linalg.vector_norm(flat[: rows * _ROW].view(rows, _ROW), dim=1).double()
        total += float(torch.dot(norms, norms))
    if rows * _ROW < n:
        tail = flat[rows * _ROW :].double()
        total += float(torch.dot(tail, tail))
    return total


def distinct(t: torch.Tensor) -> tuple[torch.Tensor | None, int]:
    """``t``'s distinct elements and how many times each stands in ``t``; ``(None, 0)`` when they
    cannot be read without making more than ``t``'s own storage.

    A broadcast view (``expand()``: a stride of 0) repeats every distinct element equally often:
    its first index along each such dimension is read, and counted that many times. A view whose
    other strides overlap (``as_strided``, ``unfold``) names more elements than its storage holds;
    reading them would materialise what the model never allocated, so past 1 MiB of them
    (:data:`_CHUNK` values) it has no statistics.
    """
    if any(st == 0 and size > 1 for st, size in zip(t.stride(), t.shape)):
        index = tuple(slice(0, 1) if st == 0 else slice(None) for st in t.stride())
        small = t[index]
        repeat = t.numel() // max(small.numel(), 1)
        t = small
    else:
        repeat = 1
    try:
        held = t.untyped_storage().nbytes() // max(t.element_size(), 1)
    except (RuntimeError, NotImplementedError):  # a tensor without a storage of its own (a subclass)
        return t, repeat
    if t.numel() > max(held, _CHUNK):  # a small one is read all the same: 1 MiB at most
        return None, 0
    return t, repeat


class ActivationStats:
    """Mean, std (unbiased, as ``Tensor.std``), min, max and fraction of zeros of a first output tensor.

    Vectorised reductions, reading the values four times and writing once, the write through a
    1 MiB scratch buffer reused chunk by chunk (:data:`_CHUNK`):

    - ``sum`` and ``aminmax``;
    - the sum of squares as row norms (:func:`_sum_of_squares`), giving the variance in one pass
      as (sum of squares - n mean**2) / (n - 1), in float64. Where that would lose digits (mean**2
      over 16 times the variance) the values are centred first, a two-pass variance. Either way
      std agrees with ``Tensor.std`` to about 1e-6. Values whose squares would leave float32's
      normal range (or a NaN or an infinity) take ``Tensor.std`` in float64 instead;
    - ``sign(x)``, whose ``dot`` with itself counts the non-zeros. That count is exact: each chunk's
      partial sums stay below 2**24, where float arithmetic on integers is exact. It is skipped
      when min > 0 or max < 0, and a tensor with a NaN (``torch.sign`` maps NaN to 0) is counted
      with ``eq`` instead. ``eq`` and a sum, used before, took several times longer than all the
      other passes together on the CPU.

    The last result is kept for the tensor it came from (held weakly) until the next operation of
    the model (the recorder calls :meth:`forget`), so a stage whose output is its last block's
    output, with nothing run in between, is not measured twice. (A version counter would miss a
    write through ``.data`` and does not exist on inference tensors.)
    """

    def __init__(self) -> None:
        self._scratch: torch.Tensor | None = None
        self._last: tuple[weakref.ref[torch.Tensor], Activation] | None = None

    def _chunks(self, flat: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``flat`` in chunks of :data:`_CHUNK` values, each with a scratch slice of its size."""
        s = self._scratch
        if s is None or s.dtype != flat.dtype or s.device != flat.device:
            s = self._scratch = torch.empty(_CHUNK, dtype=flat.dtype, device=flat.device)
        for chunk in flat.split(_CHUNK):
            yield chunk, s[: chunk.numel()]

    def __call__(self, out: object) -> Activation | None:
        t = next(tensors_in(out), None)
        if t is None or t.is_meta or t.numel() == 0 or t.is_complex():
            return None
        last = self._last
        if last is not None and last[0]() is t:
            return last[1]
        with torch.no_grad():
            a = self._measure(t.detach())
        if a is not None:
            self._last = (weakref.ref(t), a)
        return a

    def forget(self) -> None:
        """An operation ran: the last result may no longer describe its tensor."""
        self._last = None

    def _measure(self, whole: torch.Tensor) -> Activation | None:
        found, repeat = distinct(whole)
        if found is None:
            return None
        t = found
        if t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        flat = t.reshape(-1)
        n = flat.numel()
        low, high = torch.aminmax(flat)
        total, low_f, high_f = torch.stack([flat.sum(), low, high]).tolist()
        mean = total / n
        deviations = 0.0  # the sum of squared deviations from the mean, over the distinct values
        scale = max(abs(low_f), abs(high_f))
        if n > 1 and not _SQUARES_FIT[0] <= scale <= _SQUARES_FIT[1]:
            # squares would underflow or overflow float32 (or there is a NaN or an infinity)
            deviations = float(flat.double().var()) * (n - 1)
        elif n > 1:
            deviations = _sum_of_squares(flat) - n * mean * mean
            if not (deviations > 0 and mean * mean * (n - 1) <= _CANCELLATION * deviations):
                deviations = 0.0
                for chunk, buf in self._chunks(flat):
                    deviations += _sum_of_squares(torch.sub(chunk, mean, out=buf))
        # Each distinct value stands for ``repeat`` elements of the tensor: so do their deviations.
        total_n = n * repeat
        std = math.sqrt(deviations * repeat / (total_n - 1)) if total_n > 1 else 0.0
        if mean != mean:  # torch.sign(NaN) is 0, which would count a NaN as a zero
            zeros = int(flat.eq(0).sum(dtype=torch.int64).item())
        elif low_f > 0 or high_f < 0:
            zeros = 0
        else:  # the sign's squares count the non-zeros, exactly
            counts = [torch.dot(buf, buf) for buf in (torch.sign(c, out=b) for c, b in self._chunks(flat))]
            zeros = n - sum(int(c) for c in torch.stack(counts).tolist())
        return Activation(mean=mean, std=std, min=low_f, max=high_f, zero_fraction=zeros / n)
