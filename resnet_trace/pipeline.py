"""The one route: a model choice, its inputs and the options, to one frozen trace per input.

Every command and every public call ends here, so the built-in model, a ``PATH.py:NAME``
reference and a module passed as it is take the same steps: the model is built (on ``meta``
for a shape-only trace), its blocks are found (:mod:`resnet_trace.prepare`), a real forward
passes the memory guard first (:mod:`resnet_trace.forwardguard`), then weights, input file,
dtype and device apply (:mod:`resnet_trace.realrun`), a model that cannot run shape-only is
retried on the CPU, and the training view is added. This module holds the route and
``summary``'s shape-only driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import threading
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from resnet_trace.choice import ModelChoice, TraceOptions
from resnet_trace.errors import OutOfMemory, UsageError
from resnet_trace.feed import Call, as_call, plain_shape
from resnet_trace.forwardguard import guard_forward
from resnet_trace.freeze import Sharing
from resnet_trace.inputs import spec_text
from resnet_trace.ops import is_fake
from resnet_trace.prepare import blocks_and_trace, check_call, dtype_of, noted, on_meta, own_copy, with_blocks
from resnet_trace.realrun import real_traces
from resnet_trace.records import Device, DType, Optimizer, Precision, Shape, Shard, Trace
from resnet_trace.spec import InvalidValue
from resnet_trace.target import FAKE, Target, build, default_call
from resnet_trace.tracer import StepRegime, cast, fake_twin, session_of, shape_only
from resnet_trace.trainview import largest_block_saved, with_train


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
        _check_seed_calls(calls)
    from resnet_trace.recorder.session import model_lock

    given = choice.model if isinstance(choice.model, nn.Module) else None
    # One trace of a module passed in at a time: another thread's waits (docs/security.md).
    # A real trace of a model this tool builds seeds torch's global generator for its weights:
    # one such trace at a time, so that a seed gives the same weights in every thread.
    seeded = _SEEDED if options.real and given is None else contextlib.nullcontext()
    with model_lock(given) if given is not None else contextlib.nullcontext(), seeded, untouched(given):
        if options.real:
            return real_traces(choice, calls, options, progress)
        return _shape_only(choice, calls, options)


def _check_seed_calls(calls: Sequence[Call]) -> None:
    for c in calls:
        if plain_shape(c) is None or len(c[0].shape) != 4:
            raise InvalidValue(
                "inputs",
                f"--input {spec_text(c)}: the built-in model takes one NxCxHxW float input, e.g. 1x3x224x224",
            )


_SEEDED = threading.Lock()

#: More shape-only inputs of the built-in model than this are traced this many at a time, each
#: run's traces handed on before the next run is traced: what ``summary`` holds stays flat.
STREAM_RUN = 512


def stream_inputs(
    choice: ModelChoice, calls: Sequence[Shape | Call] | None, options: TraceOptions
) -> Iterator[Trace]:
    """:func:`trace_inputs`'s traces, in order, as a stream: the built-in model's shape-only list of
    more than :data:`STREAM_RUN` inputs is traced in runs of that many, so that a caller who writes
    each trace as it comes holds one run, not 10,000 traces. Every input is checked before the
    first run (a refusal comes before any output). A model of your own is traced in one go: its
    blocks are found from its first input and its file imported once."""
    if options.real or not choice.builtin or calls is None or len(calls) <= STREAM_RUN:
        yield from trace_inputs(choice, calls, options)
        return
    every = [as_call(c) for c in calls]
    _check_seed_calls(every)
    target = build(choice)  # on meta: the seed's channels, for every input's check up front
    for c in every:
        check_call(target, c)
    for start in range(0, len(calls), STREAM_RUN):
        yield from trace_inputs(choice, calls[start : start + STREAM_RUN], options)


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
    notes = [n for c in calls for n in check_call(target, c)]
    train = options.train
    regime = StepRegime(autocast=precision.dtype_word if precision.autocast else None)
    first = None  # the first input's trace, from the forward that found the blocks
    if not train and regime.autocast is None and fake_twin(target) is target:
        target, first = blocks_and_trace(target, calls[0])
    else:
        target = with_blocks(target, calls[0])
    shared = Sharing()  # equal rows, shapes and names of many inputs held once
    with session_of(target, train=train) as session:  # hooks registered once for every size
        traces = []
        for i, c in enumerate(calls, 1):
            if i == 1 and first is not None:
                t = first
            else:
                t = shape_only(target, c, command="summary", train=train, session=session, regime=regime)
            traces.append(shared.trace(t) if len(calls) > 1 else t)
            _collect_now_and_then(i)
    del shared
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
    return noted(traces, notes)


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


#: Many inputs: the young garbage is collected after every one. The console script runs with the
#: cyclic collector off (it ends with ``os._exit``), and a trace leaves cycles behind (about
#: 200 KB at base 4); a young collection costs far less than the trace (the same CPU seconds for
#: 2,000 inputs as every 64th) and keeps the peak at one trace's garbage, not 64 traces'.
COLLECT_EVERY = 1


def _collect_now_and_then(done: int) -> None:
    if done % COLLECT_EVERY == 0 and not gc.isenabled():
        gc.collect(0)  # the young objects only: a finished trace's cycles are among them


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
            elif given is None or on_meta(given.model):
                out.append(t)  # a module passed on meta has no values to run with
                continue
            else:
                built = own_copy(given, Device.CPU, None, copy_always=True)
            cpu = dataclasses.replace(built, fake=False, fake_mode=None)
        found = with_blocks(cpu, call)  # its blocks, found again on this forward
        try:
            again = shape_only(found, call, command=t.command, train=train)
        except OutOfMemory:  # the retry could not allocate: the shape-only failure stands
            out.append(t)
            continue
        if again.error is None:
            where = t.error.module or "the model"
            why = "reads a tensor's value" if reads else "cannot run shape-only"
            note = f"note: {where} {why} ({t.error.message}); traced on the CPU instead"
            again = dataclasses.replace(again, notes=(*again.notes, note[:300]))
            out.append(again)
        else:
            out.append(t)
    return out


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
