"""The memory guard of a real forward, on the torch side: the bytes a forward of a call would take
(the target's own arithmetic, or a shape-only trace), checked against what the device has
(:func:`resnet_trace.memory.guard`) before anything is allocated."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from resnet_trace.errors import OutOfMemory, is_out_of_memory, message_of
from resnet_trace.feed import Call, as_call, plain_shape
from resnet_trace.inputs import spec_text
from resnet_trace.prepare import on_meta
from resnet_trace.records import Device, Shape, Trace, shape_text
from resnet_trace.target import Target
from resnet_trace.tracer import shape_only
from resnet_trace.units import human


def device_memory(device: str) -> int | None:
    """Free memory on an accelerator; ``None`` for the CPU (the guard reads the host's)."""
    if device == Device.CUDA:
        return int(torch.cuda.mem_get_info()[0])
    return None


def guard_forward(
    target: Target,
    shape: Shape | Call,
    element_size: int,
    *,
    available: int | None = None,
    device: str = Device.CPU,
    traced: Trace | None = None,
) -> int:
    """Refuse (UsageError) a real forward of ``shape`` that would not fit; its estimated bytes.

    The largest output comes from the target's own arithmetic where it has one (the built-in
    model), otherwise from a shape-only trace (``traced``, when the caller has one); a module
    passed as it is on a real device is estimated from its parameters and input alone, since a
    trace of it would allocate what the guard is there to prevent.
    """
    from resnet_trace.memory import estimate_bytes, guard, largest_traced

    params = target.info.model_params
    call = as_call(shape)
    plain = plain_shape(call)
    if target.largest_output is not None and plain is not None:
        largest = target.largest_output(plain)
    elif traced is not None or target.fake or on_meta(target.model):
        t = traced if traced is not None else shape_only(target, shape)
        largest, params = largest_traced(t), t.totals.params
    else:
        largest = 0
    assert params is not None  # every target records its parameter count when it is built
    return guard(
        estimate_bytes(params, (sum(math.prod(t.shape) for t in call),), largest, element_size),
        forward_words(target, call),
        available=available,
        where="memory" if device == Device.CPU else f"{device} memory",
    )


def forward_words(target: Target, shape: Shape | Call) -> str:
    """A real forward in words: ``run 8x3x224x224 at base_dim 64``."""
    call = as_call(shape)
    plain = plain_shape(call)
    what = f"run {spec_text(call) if plain is None else shape_text(plain)}"
    if target.info.base_dim is not None:
        what += f" at base_dim {target.info.base_dim}"
    return what


@contextlib.contextmanager
def out_of_memory_said(what: str, need: int) -> Iterator[None]:
    """An allocation that fails inside (``MemoryError``, ``torch.OutOfMemoryError``, an allocator's
    ``RuntimeError``) as one line of ours, exit 2: ``out of memory``, what failed and the ``need``
    bytes the guard expected for the forward; never the model's failure."""
    try:
        yield
    except BaseException as exc:
        if getattr(exc, "worded", False) or not is_out_of_memory(exc):
            raise
        said = message_of(exc, 200) or type(exc).__name__
        err = OutOfMemory(
            f"out of memory: {what} could not allocate ({said}); the memory guard expected about "
            f"{human(need)} for the forward; use 'resnet-trace summary', which needs no memory, "
            "or a smaller batch"
        )
        err.worded = True
        raise err from None
