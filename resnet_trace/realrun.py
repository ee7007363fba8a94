"""``run``'s driver: a real forward of each call, after the memory guard, with weights, an input
file, the dtype and device asked for, and a backward (and a sharded step) when asked."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from resnet_trace.choice import ModelChoice, TraceOptions
from resnet_trace.errors import UsageError
from resnet_trace.feed import Call, Feed, as_call, check_names, embedding_sizes, values
from resnet_trace.forwardguard import device_memory, forward_words, guard_forward, out_of_memory_said
from resnet_trace.inputs import FLOATING
from resnet_trace.layout import BASE_DIM, NUM_CLASSES
from resnet_trace.prepare import check_call, dtype_of, noted, own_copy, resolve_device, with_blocks
from resnet_trace.records import Device, Head, InputTensor, Optimizer, Shard, Trace, Variant
from resnet_trace.saving import check_save_path
from resnet_trace.spec import InvalidValue, ModelSpec
from resnet_trace.target import Target, build, check_channels, default_call
from resnet_trace.tracer import (
    describe_feed,
    fake_twin,
    param_dtype,
    placeholder,
    real_forward,
    shape_mode,
    shape_only,
)
from resnet_trace.trainview import with_backward, with_sharded_step


def real_traces(
    choice: ModelChoice,
    calls: list[Call],
    options: TraceOptions,
    progress: Callable[[int], None] | None,
) -> list[Trace]:
    """A real forward of each call (the input file's, or the model's default input when none)."""
    if options.input_file is not None and calls:
        raise UsageError("give --input or --input-file, not both")
    if options.save_output is not None:  # a file it cannot write is refused before the work
        check_save_path(options.save_output, f"--save-output {options.save_output!r}")
    instance = not choice.builtin and choice.reference is None
    # The shape-only twin: what the guard and the predictions read, never initialised.
    given = own_copy(build(choice), None, options.dtype) if instance else None
    meta_target = fake_twin(given) if given is not None else build(choice)
    own = next(iter(given.model.parameters()), None) if given is not None else None
    device = (
        Device(options.device)
        if options.device
        else Device(own.device.type)
        if own is not None
        else Device.CPU
    )
    dev = resolve_device(device)
    dtype = dtype_of(options.dtype) if options.dtype is not None else param_dtype(meta_target.model)
    room = device_memory(dev) if dev is not Device.META else None
    x_file: Feed | None = None
    if options.input_file is not None and choice.builtin:
        one = _read_input(meta_target, Path(options.input_file), dev, room, dtype.itemsize)
        x_file, calls = Feed((one,)), [as_call(tuple(int(d) for d in one.shape))]
    elif options.input_file is not None:
        x_file, call = _read_inputs(meta_target, Path(options.input_file), dev, room, dtype)
        calls = [call]
    calls = calls or [default_call(meta_target)]
    if options.save_output is not None and len(calls) > 1:
        raise UsageError(f"--save-output keeps one input's outputs: give one --input, not {len(calls):,}")
    notes = [n for c in calls for n in check_call(meta_target, c)]
    meta_target = with_blocks(meta_target, calls[0])
    if dev is Device.META:
        for flag, value in (("--weights", options.weights), ("--save-output", options.save_output)):
            if value is not None:
                raise UsageError(f"{flag} needs a real device: --device meta traces shapes only")
        if not instance:
            meta_target.model.to(dtype=dtype)
        return noted([shape_only(meta_target, c, command="run") for c in calls], notes)
    needs = [guard_forward(meta_target, c, dtype.itemsize, available=room, device=dev) for c in calls]
    if given is not None:  # the caller's module, with the blocks its twin found
        given = dataclasses.replace(given, block_types=meta_target.block_types, info=meta_target.info)
    with out_of_memory_said(f"building the model for {forward_words(meta_target, calls[0])}", max(needs)):
        target = _real_model(choice, given or meta_target, options, dev, dtype, instance)
    traces = []
    for c, need in zip(calls, needs):
        with out_of_memory_said(forward_words(meta_target, c), need):
            traces.append(_one_real(choice, meta_target, target, c, x_file, options, dev, dtype, progress))
    return noted(traces, notes)


def _one_real(
    choice: ModelChoice,
    meta_target: Target,
    target: Target,
    c: Call,
    x_file: Feed | None,
    options: TraceOptions,
    dev: Device,
    dtype: torch.dtype,
    progress: Callable[[int], None] | None,
) -> Trace:
    """One call's real forward (and backward, and sharded step, when asked)."""
    if x_file is not None:
        x = _cast(x_file, dev, dtype)
    elif options.example is not None:
        x = options.example.to(str(dev))
    else:
        x = values(c, dev, dtype, options.seed, _embedding_highs(meta_target, c))
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
        save_output=options.save_output,
    )
    if t.inputs:  # the ranges the values were drawn from, as given
        t = dataclasses.replace(t, inputs=_with_ranges(t.inputs, c))
    if options.backward:
        t = with_backward(meta_target, target, t, x, target_class=options.target_class)
        if options.gpus > 1 or options.shard is not Shard.NONE:
            t = _sharded_step(choice, meta_target, t, x, options, dev)
    return t


def _sharded_step(
    choice: ModelChoice, meta_target: Target, t: Trace, x: Feed, options: TraceOptions, dev: Device
) -> Trace:
    """``run --backward --gpus N --shard MODE``: the same step for real on N local processes (gloo on
    the CPU, NCCL on CUDA), each rank measured beside its prediction."""
    from resnet_trace.distributed import ModelBuild, run_sharded_step

    if t.error is not None:
        return t
    if choice.reference is None and not choice.builtin:
        raise InvalidValue(
            "gpus",
            "gpus with backward builds the model in every process: give the seed's options or a "
            "PATH.py:NAME reference, not a module",
        )
    build = ModelBuild(choice, seed=options.seed, trainable=options.trainable)
    blocks = tuple(b for b in t.model.block.split(",") if b)
    measured = run_sharded_step(
        build, x.to("cpu"), options.gpus, Shard(options.shard), Optimizer.ADAM, blocks=blocks, device=str(dev)
    )
    return with_sharded_step(meta_target, t, measured, gpus=options.gpus, shard=Shard(options.shard))


def _embedding_highs(target: Target, call: Call) -> dict[int, int]:
    """The embedding size bounding each integer input without a range (a shape-only pass finds it)."""
    needs = [
        t
        for t in call
        if t.dtype is not None
        and t.dtype not in FLOATING
        and t.dtype != "bool"
        and t.low is None
        and not (t.name and "mask" in t.name.lower())
    ]
    if not needs:
        return {}
    twin = fake_twin(target)
    with shape_mode(twin), torch.no_grad():
        feed = placeholder(twin, call)
        return embedding_sizes(twin.model, feed, lambda: feed.call(twin.model))


def _with_ranges(recorded: tuple[InputTensor, ...], call: Call) -> tuple[InputTensor, ...]:
    if len(recorded) != len(call):
        return recorded
    return tuple(dataclasses.replace(r, low=c.low, high=c.high) for r, c in zip(recorded, call))


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
        target = own_copy(meta_target, dev, options.dtype, copy_always=options.weights is not None)
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


def _read_inputs(
    target: Target, path: Path, dev: Device, room: int | None, dtype: torch.dtype
) -> tuple[Feed, Call]:
    """``--input-file`` for a model of your own: one tensor, or named ones (a ``.pt`` dict, an
    ``.npz``), their names and memory checked before any data is copied."""
    from resnet_trace.loading import load_inputs

    what = f"--input-file {str(path)!r}"

    def fits(call: Call) -> None:
        try:
            check_names(target.model, call)
            if dev is not Device.META:
                guard_forward(with_blocks(target, call), call, dtype.itemsize, available=room, device=dev)
        except UsageError as exc:
            raise UsageError(f"{what} was not read: {exc}") from None

    made = load_inputs(path, check=fits)
    feed = Feed(tuple(t for n, t in made if n is None), {n: t for n, t in made if n is not None})
    return feed, describe_feed(feed)


def _cast(feed: Feed, dev: Device, dtype: torch.dtype) -> Feed:
    """A file's tensors on ``dev``; floating ones in the model's dtype, the others as they are."""

    def one(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=dev, dtype=dtype) if t.is_floating_point() else t.to(device=dev)

    return Feed(tuple(one(t) for t in feed.args), {k: one(t) for k, t in feed.kwargs.items()})
