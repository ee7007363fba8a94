"""The one route: a model choice, its inputs and the options, to one frozen trace per input.

Every command and every public call ends here, so the built-in model, a ``PATH.py:NAME``
reference and a module passed as it is take the same steps: the model is built (on ``meta``
for a shape-only trace), its blocks are found, a real forward passes the memory guard first,
then weights, input file, dtype and device apply, a model that cannot run on ``meta`` is
retried on the CPU, and the training view is added.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from resnet_trace.choice import ModelChoice, TraceOptions
from resnet_trace.errors import UsageError
from resnet_trace.layout import BASE_DIM, NUM_CLASSES
from resnet_trace.records import Device, DType, Head, Optimizer, Shape, Trace, Variant, shape_text
from resnet_trace.spec import ModelSpec
from resnet_trace.target import Target, build, check_channels, default_input
from resnet_trace.tracer import (
    find_block_types,
    param_dtype,
    placeholder,
    real_forward,
    session_of,
    shape_only,
)
from resnet_trace.trainview import with_backward, with_train

DTYPES = {DType.FLOAT32: torch.float32, DType.FLOAT16: torch.float16, DType.BFLOAT16: torch.bfloat16}


def trace_inputs(
    choice: ModelChoice,
    inputs: Sequence[Shape] | None,
    options: TraceOptions,
    *,
    progress: Callable[[int], None] | None = None,
) -> list[Trace]:
    """A trace of each input (the model's default input when none): shape-only, or a real forward
    when ``options.real``."""
    if options.real:
        return _real(choice, list(inputs or ()), options, progress)
    return _shape_only(choice, list(inputs or ()), options)


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


def with_blocks(target: Target, shape: Shape) -> Target:
    """A user model traced without ``block``: its blocks, found with a shape-only pass of ``shape``."""
    if not (target.info.block_found and not target.block_types):
        return target
    types = find_block_types(target, placeholder(target, shape))
    info = dataclasses.replace(target.info, block=",".join(t.__name__ for t in types), block_found=True)
    return dataclasses.replace(target, block_types=types, info=info)


def _own(
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


# -- summary: shape-only ------------------------------------------------------------------------------
def _shape_only(choice: ModelChoice, shapes: list[Shape], options: TraceOptions) -> list[Trace]:
    target = build(choice)
    if not choice.builtin and not isinstance(choice.model, str):
        target = _own(target, None, options.dtype)
    elif options.dtype is not None and options.dtype is not DType.FLOAT32:  # ours are built in float32
        target.model.to(dtype=dtype_of(options.dtype))
    shapes = shapes or [default_input(target)]
    for s in shapes:
        check_channels(target, s)
    target = with_blocks(target, shapes[0])
    train = options.train
    with session_of(target, train=train) as session:  # hooks registered once for every size
        traces = [shape_only(target, s, command="summary", train=train, session=session) for s in shapes]
    if choice.reference is not None and any(t.error is not None for t in traces):
        traces = _cpu_fallback(traces, target, choice, train)
    if train:
        traces = [
            with_train(target, t, optimizer=Optimizer(options.optimizer), budget=options.budget)
            for t in traces
        ]
    return traces


def _cpu_fallback(traces: list[Trace], target: Target, choice: ModelChoice, train: bool) -> list[Trace]:
    """A user model that fails on ``meta`` may only lack meta support: retry those inputs on the CPU."""
    cpu: Target | None = None
    out = []
    for t in traces:
        if t.error is None:
            out.append(t)
            continue
        guard_forward(target, t.input_shape, 4, traced=t)  # the failed trace's rows, up to the failure
        if cpu is None:
            built = build(dataclasses.replace(choice, block=None), device=Device.CPU, init_seed=0)
            cpu = dataclasses.replace(built, block_types=target.block_types, info=target.info)
        again = shape_only(cpu, t.input_shape, command=t.command, train=train)
        if again.error is None:
            note = f"note: {t.error.module} cannot run on the meta device ({t.error.message}); traced on the CPU instead"
            again = dataclasses.replace(again, notes=(*again.notes, note[:300]))
            out.append(again)
        else:
            out.append(t)
    return out


# -- run: a real forward ------------------------------------------------------------------------------
def _real(
    choice: ModelChoice,
    shapes: list[Shape],
    options: TraceOptions,
    progress: Callable[[int], None] | None,
) -> list[Trace]:
    if options.input_file is not None and shapes:
        raise UsageError("give --input or --input-file, not both")
    instance = not choice.builtin and choice.reference is None
    # The shape-only twin: what the guard and the predictions read, never initialised.
    meta_target = build(choice) if not instance else _own(build(choice), None, options.dtype)
    own = next(iter(meta_target.model.parameters()), None) if instance else None
    device = (
        Device(options.device)
        if options.device
        else Device(own.device.type)
        if own is not None
        else Device.CPU
    )
    dev = resolve_device(device)
    dtype = dtype_of(options.dtype) if options.dtype is not None else param_dtype(meta_target.model)
    room = _device_memory(dev) if dev is not Device.META else None
    x_file = None
    if options.input_file is not None:
        x_file = _read_input(meta_target, Path(options.input_file), dev, room, dtype.itemsize)
        shapes = [tuple(int(d) for d in x_file.shape)]
    shapes = shapes or [default_input(meta_target)]
    for s in shapes:
        check_channels(meta_target, s)
    meta_target = with_blocks(meta_target, shapes[0])
    if dev is Device.META:
        if options.weights is not None:
            raise UsageError("--weights needs a real device: --device meta traces shapes only")
        meta_target = _own(meta_target, Device.META, options.dtype) if instance else meta_target
        if not instance:
            meta_target.model.to(dtype=dtype)
        return [shape_only(meta_target, s, command="run") for s in shapes]
    for s in shapes:
        guard_forward(meta_target, s, dtype.itemsize, available=room, device=dev)
    target = _real_model(choice, meta_target, options, dev, dtype, instance)
    traces = []
    for s in shapes:
        if x_file is not None:
            x = x_file.to(device=dev, dtype=dtype)
        else:
            gen = torch.Generator().manual_seed(options.seed)
            x = torch.randn(tuple(s), generator=gen).to(device=dev, dtype=dtype)
        t = real_forward(
            target,
            x,
            repeat=options.repeat,
            top_k=options.top_k,
            seed=options.seed if x_file is None else None,
            weights=options.weights,
            input_file=options.input_file,
            progress=progress,
            leaves=options.leaves,
        )
        if options.backward:
            t = with_backward(meta_target, target, t, x, target_class=options.target_class)
        traces.append(t)
    return traces


def _real_model(
    choice: ModelChoice,
    meta_target: Target,
    options: TraceOptions,
    dev: Device,
    dtype: torch.dtype,
    instance: bool,
) -> Target:
    """The model of a real forward: weights assigned into the meta-built model (no wasted
    initialisation), or initialised under ``seed``; a module passed as it is, copied if it must change."""
    if instance:
        target = _own(meta_target, dev, options.dtype, copy_always=options.weights is not None)
        if options.weights is not None:
            _load_weights(target, options.weights)
            target.model.to(device=str(dev), dtype=dtype)
        return target
    if options.weights is not None:
        _load_weights(meta_target, options.weights)
        meta_target.model.to(device=str(dev), dtype=dtype)
        return meta_target
    built = build(choice, device=dev, init_seed=options.seed)
    built.model.to(dtype=dtype)
    return dataclasses.replace(built, block_types=meta_target.block_types, info=meta_target.info)


def _load_weights(target: Target, weights: str) -> None:
    from resnet_trace.loading import load_weights

    info = target.info
    variant = info.variant if info.variant in ("seed", "fixed") else Variant.SEED
    head = info.head if info.head in ("avgpool7", "adaptive") else Head.AVGPOOL7
    spec = ModelSpec(info.base_dim or BASE_DIM, info.num_classes or NUM_CLASSES, Variant(variant), Head(head))
    load_weights(Path(weights), target.model, spec)


def _read_input(target: Target, path: Path, dev: Device, room: int | None, itemsize: int) -> torch.Tensor:
    """``--input-file``, its header checked before any data is copied: channels, then memory."""
    from resnet_trace.loading import load_input

    what = f"--input-file {str(path)!r}"

    def fits(shape: tuple[int, ...]) -> None:
        check_channels(target, shape, what=what)
        if dev is not Device.META:
            found = with_blocks(target, shape)
            try:
                guard_forward(found, shape, itemsize, available=room, device=dev)
            except UsageError as exc:
                raise UsageError(f"{what} was not read: {exc}") from None

    return load_input(path, channels=target.channels, check_shape=fits)


def _device_memory(device: str) -> int | None:
    """Free memory on an accelerator; ``None`` for the CPU (the guard reads the host's)."""
    if device == Device.CUDA:
        return int(torch.cuda.mem_get_info()[0])
    return None


def guard_forward(
    target: Target,
    shape: Shape,
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
    if target.largest_output is not None:
        largest = target.largest_output(shape)
    elif traced is not None or _on_meta(target.model):
        t = traced if traced is not None else shape_only(target, shape)
        largest, params = largest_traced(t), t.totals.params
    else:
        largest = 0
    assert params is not None  # every target records its parameter count when it is built
    what = f"run {shape_text(shape)}"
    if target.info.base_dim is not None:
        what += f" at base_dim {target.info.base_dim}"
    return guard(
        estimate_bytes(params, shape, largest, element_size),
        what,
        available=available,
        where="memory" if device == Device.CPU else f"{device} memory",
    )


def _on_meta(model: nn.Module) -> bool:
    tensors = list(model.parameters()) + list(model.buffers())
    return not tensors or all(t.is_meta for t in tensors)
