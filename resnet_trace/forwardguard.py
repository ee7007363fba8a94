"""The memory guard of a real forward, on the torch side: the bytes a forward of a call would take
(the target's own arithmetic, or a shape-only trace), checked against what the device has
(:func:`resnet_trace.memory.guard`) before anything is allocated."""

from __future__ import annotations

import math

import torch

from resnet_trace.feed import Call, as_call, plain_shape
from resnet_trace.inputs import spec_text
from resnet_trace.prepare import on_meta
from resnet_trace.records import Device, Shape, Trace, shape_text
from resnet_trace.target import Target
from resnet_trace.tracer import shape_only


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
    what = f"run {spec_text(call) if plain is None else shape_text(plain)}"
    if target.info.base_dim is not None:
        what += f" at base_dim {target.info.base_dim}"
    return guard(
        estimate_bytes(params, (sum(math.prod(t.shape) for t in call),), largest, element_size),
        what,
        available=available,
        where="memory" if device == Device.CPU else f"{device} memory",
    )
