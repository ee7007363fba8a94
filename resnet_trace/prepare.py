"""A model and its calls made ready for a trace: the dtype and device asked for, a copy where the
caller's module would change, blocks found, each call checked against the model."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from resnet_trace.errors import UsageError
from resnet_trace.feed import Call, check_names, plain_shape
from resnet_trace.freeze import freeze_rows
from resnet_trace.recorder import BlockChoice
from resnet_trace.records import Device, DType, Shape, Trace
from resnet_trace.target import Target, check_channels
from resnet_trace.tracer import fake_twin, find_and_record, find_blocks, placeholder, shape_mode, trace_of

DTYPES = {DType.FLOAT32: torch.float32, DType.FLOAT16: torch.float16, DType.BFLOAT16: torch.bfloat16}


def dtype_of(dtype: DType | str) -> torch.dtype:
    """The torch dtype of a :class:`DType` or its word."""
    return DTYPES[DType(dtype)]


def resolve_device(device: Device) -> Device:
    """``auto`` picks cuda when present; a device that is not here is a usage error."""
    if device is Device.AUTO:
        return Device.CUDA if torch.cuda.is_available() else Device.CPU
    if device is Device.CUDA and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available on this machine (try --device cpu)")
    if device is Device.MPS and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise UsageError("--device mps: no MPS device is available on this machine (try --device cpu)")
    return device


def with_blocks(target: Target, shape: Shape | Call) -> Target:
    """A user model traced without ``block``: its blocks, found with a shape-only pass of ``shape``."""
    if not (target.info.block_found and not target.block_types):
        return target
    twin = fake_twin(target)
    with shape_mode(twin):
        found = find_blocks(twin, placeholder(twin, shape))
    return _found(target, found)


def _found(target: Target, found: BlockChoice) -> Target:
    types = found.types
    info = dataclasses.replace(
        target.info, block=",".join(t.__name__ for t in types), block_found=True, block_rule=found.rule.value
    )
    return dataclasses.replace(target, block_types=types, info=info)


def blocks_and_trace(
    target: Target, shape: Shape | Call, command: str = "summary"
) -> tuple[Target, Trace | None]:
    """:func:`with_blocks`, and the shape-only trace of ``shape`` (a plain one: no ``train``, no
    autocast) with the blocks found, from one forward (:func:`resnet_trace.tracer.find_and_record`).
    ``target`` is a fake model of this tool's own (:func:`fake_twin` gives it back as it is). The
    trace is None where the one forward cannot give it: the caller traces ``shape`` again."""
    if not (target.info.block_found and not target.block_types):
        return target, None
    with shape_mode(target):
        x = placeholder(target, shape)
        found, fwd = find_and_record(target, x)
        target = _found(target, found)
        if fwd is None:
            return target, None
        rows = freeze_rows(target, fwd.recorder, timed=False)
        return target, trace_of(target, fwd, x, command=command, rows=rows)


def own_copy(
    target: Target, device: Device | None, dtype: DType | str | None, *, copy_always: bool = False
) -> Target:
    """A module passed as it is, on ``device`` in ``dtype``: a copy whenever one of them would change it
    (the caller's model is never moved, cast or loaded into)."""
    model = target.model
    params = list(model.parameters())
    want_dtype = dtype_of(dtype) if dtype is not None else None
    moves = device is not None and any(p.device.type != device for p in params)
    casts = want_dtype is not None and any(p.is_floating_point() and p.dtype != want_dtype for p in params)
    if not (moves or casts or copy_always):
        return target
    model = copy.deepcopy(model)
    if moves:
        model = model.to(device=str(device))
    if casts:
        model = model.to(dtype=want_dtype)
    return dataclasses.replace(target, model=model)


def check_call(target: Target, call: Call) -> tuple[str, ...]:
    """Refuse what the model cannot take; the notes about what it may ignore."""
    shape = plain_shape(call)
    if shape is not None:
        check_channels(target, shape)
    if target.info.source != "builtin":
        return check_names(target.model, call)
    return ()


def noted(traces: list[Trace], notes: Sequence[str]) -> list[Trace]:
    if not notes:
        return traces
    unique = tuple(dict.fromkeys(n[:300] for n in notes))
    return [dataclasses.replace(t, notes=(*unique, *t.notes)) for t in traces]


def on_meta(model: nn.Module) -> bool:
    tensors = list(model.parameters()) + list(model.buffers())
    return not tensors or all(t.is_meta for t in tensors)
