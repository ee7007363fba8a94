"""The one route: a model choice, its inputs and the options, to one frozen trace per input.

Every command and every public call ends here, so the built-in model, a ``PATH.py:NAME``
reference and a module passed as it is take the same steps: the model is built (on ``meta``
for a shape-only trace), its blocks are found, a real forward passes the memory guard first,
then weights, input file, dtype and device apply, a model that cannot run on ``meta`` is
retried on the CPU, and the training view is added.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from resnet_trace.choice import ModelChoice, TraceOptions
from resnet_trace.errors import UsageError
from resnet_trace.feed import Call, Feed, as_call, check_names, embedding_sizes, plain_shape, values
from resnet_trace.inputs import FLOATING, spec_text
from resnet_trace.layout import BASE_DIM, NUM_CLASSES
from resnet_trace.ops import is_fake
from resnet_trace.records import (
    Device,
    DType,
    Head,
    InputTensor,
    Optimizer,
    Precision,
    Shape,
    Shard,
    Trace,
    Variant,
    shape_text,
)
from resnet_trace.spec import InvalidValue, ModelSpec
from resnet_trace.target import FAKE, Target, build, check_channels, default_call
from resnet_trace.tracer import (
    StepRegime,
    cast,
    describe_feed,
    fake_twin,
    find_blocks,
    param_dtype,
    placeholder,
    real_forward,
    session_of,
    shape_mode,
    shape_only,
)
from resnet_trace.trainview import largest_block_saved, with_backward, with_sharded_step, with_train

DTYPES = {DType.FLOAT32: torch.float32, DType.FLOAT16: torch.float16, DType.BFLOAT16: torch.bfloat16}


def trace_inputs(
    choice: ModelChoice,
    inputs: Sequence[Shape | Call] | None,
    options: TraceOptions,
    *,
    progress: Callable[[int], None] | None = None,
) -> list[Trace]:
    """A trace of each input (the model's default input when none): shape-only, or a real forward
    when ``options.real``. An input is a shape (one positional floating tensor) or one call's
    :class:`~resnet_trace.records.InputTensor` records."""
    calls = [as_call(i) for i in inputs or ()]
    if choice.builtin:
        for c in calls:
            if plain_shape(c) is None or len(c[0].shape) != 4:
                raise InvalidValue(
                    "inputs",
                    f"--input {spec_text(c)}: the built-in model takes one NxCxHxW float input, e.g. 1x3x224x224",
                )
    from resnet_trace.recorder.session import model_lock

    given = choice.model if isinstance(choice.model, nn.Module) else None
    # One trace of a module passed in at a time: another thread's waits (docs/security.md).
    # A real trace of a model this tool builds seeds torch's global generator for its weights:
    # one such trace at a time, so that a seed gives the same weights in every thread.
    seeded = _SEEDED if options.real and given is None else contextlib.nullcontext()
    with model_lock(given) if given is not None else contextlib.nullcontext(), seeded, untouched(given):
        if options.real:
            return _real(choice, calls, options, progress)
        return _shape_only(choice, calls, options)


_SEEDED = threading.Lock()


@contextlib.contextmanager
def untouched(model: nn.Module | None) -> Iterator[None]:
    """Whatever happens inside, the caller's state is as it was on the way out: the global RNG
    states (torch's, and CUDA's where present), the default dtype, grad mode and, for a module
    passed in, its buffers, every module's ``training`` flag, each parameter's ``requires_grad``
    and ``.grad``. (Its parameters are never written: a shape-only trace runs on a fake twin, a real
    one in ``eval()`` under ``no_grad``; ``--backward`` restores what its step changed.)"""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    dtype, grad = torch.get_default_dtype(), torch.is_grad_enabled()
    saved = None
    if model is not None:
        tensors = [b for b in model.buffers() if not b.is_meta and not is_fake(b)]
        saved = (
            [(b, b.detach().clone()) for b in tensors],
            [(m, m.training) for m in model.modules()],
            [(p, p.requires_grad, p.grad) for p in model.parameters()],
        )
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        if saved is not None:
            buffers, flags, params = saved
            with torch.no_grad():
                for b, old in buffers:
                    if b.shape == old.shape and b.dtype == old.dtype:
                        b.copy_(old)
            for m, flag in flags:
                if m.training is not flag:
                    m.training = flag
            for p, req, g in params:
                if p.requires_grad is not req:
                    p.requires_grad_(req)
                p.grad = g


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
    types = found.types
    info = dataclasses.replace(
        target.info, block=",".join(t.__name__ for t in types), block_found=True, block_rule=found.rule.value
    )
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
def _shape_only(choice: ModelChoice, calls: list[Call], options: TraceOptions) -> list[Trace]:
    precision = Precision(options.precision)
    if precision is not Precision.FP32 and options.dtype is not None:
        raise InvalidValue(
            "precision", "give precision or dtype, not both: precision sets the dtype of a step"
        )
    target = build(choice, device=FAKE, fake_seed=precision.autocast)
    given = None  # a module passed in: its fake twin is traced, the module itself only on a CPU retry
    if not choice.builtin and not isinstance(choice.model, str):
        given = target
        target = fake_twin(given)
    if options.dtype is not None and (not choice.builtin or options.dtype is not DType.FLOAT32):
        cast(target, dtype_of(options.dtype))  # ours are built in float32
    if not precision.autocast and precision is not Precision.FP32:
        cast(target, getattr(torch, precision.dtype_word))  # stored and run in it
    if options.trainable is not None:
        _freeze(target, options.trainable)
    calls = calls or [default_call(target)]
    notes = [n for c in calls for n in _check_call(target, c)]
    target = with_blocks(target, calls[0])
    train = options.train
    regime = StepRegime(autocast=precision.dtype_word if precision.autocast else None)
    with session_of(target, train=train) as session:  # hooks registered once for every size
        traces = []
        for i, c in enumerate(calls, 1):
            traces.append(
                shape_only(target, c, command="summary", train=train, session=session, regime=regime)
            )
            _collect_now_and_then(i)
    if not choice.builtin and any(t.error is not None for t in traces):
        traces = _cpu_fallback(traces, target, choice, calls, train, given)
    if train:
        again = [0] * len(traces)
        if options.checkpoint:
            again = [largest_block_saved(t) for t in traces]
            regime = dataclasses.replace(regime, checkpoint=True)
            traces = [
                shape_only(target, c, command="summary", train=True, regime=regime) if t.error is None else t
                for t, c in zip(traces, calls)
            ]
        traces = [
            with_train(
                target,
                t,
                optimizer=Optimizer(options.optimizer),
                budget=options.budget,
                regime=regime,
                precision=precision,
                recompute=r,
                gpus=options.gpus,
                shard=Shard(options.shard),
            )
            for t, r in zip(traces, again)
        ]
    return _noted(traces, notes)


def _freeze(target: Target, pattern: str) -> None:
    """``--trainable``: every parameter whose name does not match ``pattern`` frozen (a model of ours)."""
    import re

    rx = re.compile(pattern)
    names = [name for name, _ in target.model.named_parameters()]
    if not any(rx.search(n) for n in names):
        raise InvalidValue(
            "trainable", f"trainable {pattern!r} matches no parameter (names like {', '.join(names[:4])})"
        )
    for name, p in target.model.named_parameters():
        p.requires_grad_(bool(rx.search(name)))


#: A long sweep collects its garbage every this many inputs: the console script runs with the
#: cyclic collector off (it ends with ``os._exit``), and a trace leaves cycles behind.
COLLECT_EVERY = 64


def _collect_now_and_then(done: int) -> None:
    if done % COLLECT_EVERY == 0 and not gc.isenabled():
        gc.collect(0)  # the young objects only: a finished trace's cycles are among them


def _check_call(target: Target, call: Call) -> tuple[str, ...]:
    """Refuse what the model cannot take; the notes about what it may ignore."""
    shape = plain_shape(call)
    if shape is not None:
        check_channels(target, shape)
    if target.info.source != "builtin":
        return check_names(target.model, call)
    return ()


def _noted(traces: list[Trace], notes: Sequence[str]) -> list[Trace]:
    if not notes:
        return traces
    unique = tuple(dict.fromkeys(n[:300] for n in notes))
    return [dataclasses.replace(t, notes=(*unique, *t.notes)) for t in traces]


def _cpu_fallback(
    traces: list[Trace],
    target: Target,
    choice: ModelChoice,
    calls: list[Call],
    train: bool,
    given: Target | None = None,
) -> list[Trace]:
    """A user model that fails shape-only may only read a value: retry those inputs on the CPU,
    where it fits in memory; where it does not, the shape-only failure stands."""
    cpu: Target | None = None
    out = []
    for t, call in zip(traces, calls):
        if t.error is None:
            out.append(t)
            continue
        reads = _reads_a_value(t.error.message)
        try:
            guard_forward(target, call, 4, traced=t)  # the failed trace's rows, up to the failure
        except UsageError as exc:
            size = str(exc).split("; use ", 1)[0]
            why = (
                "it reads a tensor's value (.item(), .tolist() or an if on a tensor), which a "
                "shape-only trace does not have; "
            )
            hint = f"{why if reads else ''}not retried on the CPU: {size}"
            out.append(dataclasses.replace(t, error=dataclasses.replace(t.error, hint=hint[:400])))
            continue
        if cpu is None:
            if choice.reference is not None:
                built = build(choice, device=Device.CPU, init_seed=0)
            elif given is None or _on_meta(given.model):
                out.append(t)  # a module passed on meta has no values to run with
                continue
            else:
                built = _own(given, Device.CPU, None, copy_always=True)
            cpu = dataclasses.replace(built, fake=False, fake_mode=None)
        found = with_blocks(cpu, call)  # its blocks, found again on this forward
        again = shape_only(found, call, command=t.command, train=train)
        if again.error is None:
            where = t.error.module or "the model"
            why = "reads a tensor's value" if reads else "cannot run shape-only"
            note = f"note: {where} {why} ({t.error.message}); traced on the CPU instead"
            again = dataclasses.replace(again, notes=(*again.notes, note[:300]))
            out.append(again)
        else:
            out.append(t)
    return out


# -- run: a real forward ------------------------------------------------------------------------------
def _real(
    choice: ModelChoice,
    calls: list[Call],
    options: TraceOptions,
    progress: Callable[[int], None] | None,
) -> list[Trace]:
    if options.input_file is not None and calls:
        raise UsageError("give --input or --input-file, not both")
    instance = not choice.builtin and choice.reference is None
    # The shape-only twin: what the guard and the predictions read, never initialised.
    given = _own(build(choice), None, options.dtype) if instance else None
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
    room = _device_memory(dev) if dev is not Device.META else None
    x_file: Feed | None = None
    if options.input_file is not None and choice.builtin:
        one = _read_input(meta_target, Path(options.input_file), dev, room, dtype.itemsize)
        x_file, calls = Feed((one,)), [as_call(tuple(int(d) for d in one.shape))]
    elif options.input_file is not None:
        x_file, call = _read_inputs(meta_target, Path(options.input_file), dev, room, dtype)
        calls = [call]
    calls = calls or [default_call(meta_target)]
    notes = [n for c in calls for n in _check_call(meta_target, c)]
    meta_target = with_blocks(meta_target, calls[0])
    if dev is Device.META:
        if options.weights is not None:
            raise UsageError("--weights needs a real device: --device meta traces shapes only")
        if not instance:
            meta_target.model.to(dtype=dtype)
        return _noted([shape_only(meta_target, c, command="run") for c in calls], notes)
    for c in calls:
        guard_forward(meta_target, c, dtype.itemsize, available=room, device=dev)
    if given is not None:  # the caller's module, with the blocks its twin found
        given = dataclasses.replace(given, block_types=meta_target.block_types, info=meta_target.info)
    target = _real_model(choice, given or meta_target, options, dev, dtype, instance)
    traces = []
    for c in calls:
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
        )
        if t.inputs:  # the ranges the values were drawn from, as given
            t = dataclasses.replace(t, inputs=_with_ranges(t.inputs, c))
        if options.backward:
            t = with_backward(meta_target, target, t, x, target_class=options.target_class)
            if options.gpus > 1 or options.shard is not Shard.NONE:
                t = _sharded_step(choice, meta_target, t, x, options, dev)
        traces.append(t)
    return _noted(traces, notes)


def _reads_a_value(message: str) -> bool:
    """A shape-only failure that asked for a value: fake and meta tensors have none."""
    return any(
        m in message
        for m in (
            "_local_scalar_dense",
            "data-dependent",
            "DataDependent",
            "cannot be called on meta",
            "item()",
        )
    )


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


def _device_memory(device: str) -> int | None:
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
    elif traced is not None or target.fake or _on_meta(target.model):
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


def _on_meta(model: nn.Module) -> bool:
    tensors = list(model.parameters()) + list(model.buffers())
    return not tensors or all(t.is_meta for t in tensors)
