"""One input, one hooked forward, one whole frozen :class:`~resnet_trace.records.Trace`.

The recorder (:mod:`resnet_trace.recorder`) watches module calls and operations; this module
runs the forward under it and hands what it saw to :mod:`resnet_trace.freeze` and
:mod:`resnet_trace.diagnosis`. :func:`shape_only` is ``summary``'s trace (no weights, no
activations on ``meta``), :func:`real_forward` is ``run``'s (statistics, logits, timings).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from resnet_trace.diagnosis import diagnose
from resnet_trace.errors import OutOfMemory, is_out_of_memory, message_of
from resnet_trace.feed import Call, Feed, as_call, placeholders, plain_shape
from resnet_trace.freeze import freeze_rows, output_shape, outputs, totals
from resnet_trace.modtree import module_tree
from resnet_trace.ops.fake import is_fake
from resnet_trace.outputsummary import VALUES_LIMIT, output_stats, output_values
from resnet_trace.recorder import BlockChoice, HookFailure, HookSession, Recorder, hook_session
from resnet_trace.records import (
    Depth,
    Device,
    InputTensor,
    RunInfo,
    Shape,
    Trace,
    TraceError,
    TreeNode,
)
from resnet_trace.target import Target
from resnet_trace.units import human


@dataclass
class Forward:
    """What one hooked forward saw: the recorder, the output and the failure, if any."""

    recorder: Recorder
    output: Any
    failure: BaseException | None


def session_of(
    target: Target,
    *,
    stats: bool = False,
    leaf_stats: bool = False,
    train: bool = False,
    find_blocks: bool = False,
    block_types: tuple[type[nn.Module], ...] | None = None,
) -> contextlib.AbstractContextManager[HookSession]:
    """The hooks of ``target`` for one forward after another (one per input size)."""
    return hook_session(
        target.model,
        target.block_types if block_types is None else block_types,
        stats=stats,
        leaf_stats=leaf_stats,
        train=train,
        find_blocks=find_blocks,
    )


def run_forward(
    target: Target,
    x: Any,
    *,
    stats: bool = False,
    leaf_stats: bool = False,
    train: bool = False,
    find_blocks: bool = False,
    block_types: tuple[type[nn.Module], ...] | None = None,
    session: HookSession | None = None,
) -> Forward:
    """One hooked forward. ``eval()`` under ``no_grad``, or with ``train`` in ``train()`` with autograd
    recording what it saves. Any exception from the model's code is the model's failure;
    a bug in our hooks is raised.

    ``session``: a :func:`session_of` ``target`` opened with these same options and kept open
    across forwards; without it, one is opened for this forward.
    """
    blocks = target.block_types if block_types is None else block_types
    if session is None:
        options = dict(stats=stats, leaf_stats=leaf_stats, train=train, find_blocks=find_blocks)
        with session_of(target, block_types=blocks, **options) as own:
            return _forward(target, x, own, train)
    wanted = dict(stats=stats, events=False, leaf_stats=leaf_stats, find_blocks=find_blocks, train=train)
    if session.options != wanted or session.block_types != blocks or session.model is not target.model:
        raise ValueError("run_forward: the session was opened for another target or other options")
    return _forward(target, x, session, train)


def _forward(target: Target, x: Any, session: HookSession, train: bool) -> Forward:
    out = None
    failure: BaseException | None = None
    feed = as_feed(x)
    # Every forward, as a fresh trace would: the model's code (or a failed forward) may have
    # changed a flag, and a module's own train() may do more than set it.
    target.model.train(train)
    with session.recording() as rec:
        grad = torch.enable_grad() if train else torch.no_grad()
        try:
            with grad:
                out = feed.call(target.model)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # the model's own code failed on this input (SystemExit too)
            if is_out_of_memory(exc) and not _shape_only(feed):  # ours to say (exit 2), not the model's
                name, _, module = rec.failing_module()
                where = f"{name} ({type(module).__name__})" if name else type(target.model).__name__
                raise OutOfMemory(f"{message_of(exc) or type(exc).__name__} in {where}") from exc
            if isinstance(exc, HookFailure):
                raise
            failure = exc
            rec.failure = rec.failing_module()
    return Forward(rec, out, failure)


def _shape_only(feed: Feed) -> bool:
    """On fake or meta tensors nothing real is allocated: a ``MemoryError`` is the model's (exit 3)."""
    return isinstance(x := feed.first, torch.Tensor) and (x.device.type == "meta" or is_fake(x))


def find_blocks(target: Target, x: Any) -> BlockChoice:
    """The classes of the outermost modules that join their own stream (a residual add, or a
    concatenation), never nesting; failing that, the most repeated child class of the model's
    longest ``Sequential`` or ``ModuleList`` (:func:`resnet_trace.recorder.choose_blocks`); and
    the rule that found them. One forward, every non-leaf call a scope."""
    from resnet_trace.recorder import choose_blocks

    fwd = run_forward(target, x, find_blocks=True, block_types=())
    return choose_blocks(target.model, fwd.recorder.joiners)


def find_and_record(target: Target, x: Any) -> tuple[BlockChoice, Forward | None]:
    """:func:`find_blocks`, and the forward of the blocks found from the same forward: its events
    replayed (:mod:`resnet_trace.recorder.replay`), the rows, skips and totals a second plain forward
    would record. The forward is None where a replay cannot stand in for it: the forward failed,
    or it changed the model (a second forward would run the model as it is now)."""
    from resnet_trace.recorder import choose_blocks
    from resnet_trace.recorder.replay import replay

    buffers = [id(b) for b in target.model.buffers()]
    with session_of(target, find_blocks=True, block_types=()) as session:
        session.keep_log = True
        fwd = _forward(target, x, session, False)
        found = choose_blocks(target.model, fwd.recorder.joiners)
        if fwd.failure is not None or buffers != [id(b) for b in target.model.buffers()]:
            return found, None  # a buffer made in forward (a cache): a second forward sees it
        into = session.replay_recorder(found.types)
    if into is None:
        return found, None
    try:
        return found, Forward(replay(fwd.recorder, into), fwd.output, None)
    except Exception:  # pragma: no cover - a bug of ours: the second forward is the exact route
        return found, None


def as_feed(x: Any) -> Feed:
    """A tensor (one positional input), a dict (keyword inputs) or a :class:`Feed`, as a Feed."""
    if isinstance(x, Feed):
        return x
    if isinstance(x, dict):
        return Feed((), x)
    return Feed((x,))


def shape_mode(target: Target) -> contextlib.AbstractContextManager[Any]:
    """Where a shape-only forward of ``target`` runs: the built-in model on ``meta`` as it is; any
    other model under ``FakeTensorMode``, as ``torch.export`` traces, so that code reading a tensor's
    value while building a mask sees a traced tensor (transformers takes its static path) and the
    CPU's own kernel choices and saved tensors are kept."""
    if not target.fake:
        return contextlib.nullcontext()
    from torch._subclasses.fake_tensor import FakeTensorMode

    return target.fake_mode or FakeTensorMode(allow_non_fake_inputs=True)


def fake_twin(target: Target) -> Target:
    """``target`` with its model on fake tensors: the structure copied, every parameter and buffer a
    fake twin of the real one (no data is copied, and the caller's model is never touched).

    A model built on fake tensors, and the built-in one, are returned as they are. Parameters read
    through a twin keep one storage each, so a saved view of one (``weight.t()``) is known for a
    parameter and not counted as an activation.
    """
    if not target.fake or target.fake_mode is not None:
        return target
    import copy

    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)

    def twin(t: torch.Tensor) -> torch.Tensor:
        if t.is_meta:  # a module built on meta: fakes on the CPU, so that it runs as the CPU would
            with mode:
                return torch.empty_strided(tuple(t.shape), tuple(t.stride()), dtype=t.dtype, device="cpu")
        return mode.from_tensor(t)

    memo: dict[int, Any] = {}
    for p in target.model.parameters():
        memo[id(p)] = nn.Parameter(twin(p), requires_grad=p.requires_grad)
    for b in target.model.buffers():
        memo[id(b)] = twin(b)
    with warnings.catch_warnings():  # a fake tensor left on a module by an earlier trace is copied too
        warnings.simplefilter("ignore", UserWarning)
        model = copy.deepcopy(target.model, memo)
    return dataclasses.replace(target, model=model, fake_mode=mode)


def cast(target: Target, dtype: torch.dtype) -> None:
    """Every floating parameter and buffer of ``target`` (a model this tool owns: built, or a fake
    twin) in ``dtype``. A fake model is cast tensor by tensor inside its mode (``Module.to`` cannot
    swap fake parameters)."""
    if target.fake_mode is None:
        target.model.to(dtype=dtype)
        return
    with target.fake_mode, torch.no_grad():
        for t in [*target.model.parameters(), *target.model.buffers()]:
            if t.is_floating_point():
                t.data = t.data.to(dtype)


def placeholder(target: Target, shape: Shape | Call) -> Feed:
    """A shape-only input: empty tensors beside the model's parameters (inside :func:`shape_mode`
    they are fake; a built-in model's are on ``meta``)."""
    call = as_call(shape)
    tensors = list(target.model.parameters()) + list(target.model.buffers())
    floating = param_dtype(target.model)
    if not target.fake:
        params = list(target.model.parameters())
        if not params or (tensors and all(t.is_meta for t in tensors)):
            return placeholders(call, Device.META, floating)
        # zeros, not empty: a real forward of a model on a real device reads them
        feed = placeholders(call, params[0].device, floating)
        for t in feed.tensors():
            t.zero_()
        return feed
    device = tensors[0].device if tensors else torch.device("cpu")
    return placeholders(call, device, floating)


def param_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter (float32 for a model without one)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


@dataclass(frozen=True)
class StepRegime:
    """How a ``--train`` forward runs: under ``torch.autocast`` in ``autocast`` (a dtype word), and
    with every block checkpointed (``torch.utils.checkpoint``, non-reentrant)."""

    autocast: str | None = None
    checkpoint: bool = False


def shape_only(
    target: Target,
    shape: Shape | Call,
    *,
    command: str = "summary",
    train: bool = False,
    session: HookSession | None = None,
    regime: StepRegime | None = None,
) -> Trace:
    """A shape-only trace of ``shape`` (a shape, or one call's tensors): no weights, no activations.

    ``train`` runs the forward with autograd in ``train()`` mode and records what it saves.
    ``session``: a :func:`session_of` ``target`` with the same ``train``, shared by several sizes.
    ``regime``: autocast and activation checkpointing for a ``train`` forward.
    """
    if session is None:
        target = fake_twin(target)
    regime = regime or StepRegime()
    with contextlib.ExitStack() as stack:
        stack.enter_context(shape_mode(target))
        if session is None and regime.checkpoint:
            session = stack.enter_context(session_of(target, train=train))
        x = placeholder(target, shape)
        if regime.autocast is not None:
            device = x.first.device.type
            dtype = getattr(torch, regime.autocast)
            stack.enter_context(torch.autocast("cpu" if device == Device.META else device, dtype=dtype))
        if regime.checkpoint:
            assert session is not None
            stack.enter_context(_checkpointed(target, session))
        fwd = run_forward(target, x, train=train, session=session)
        rows = freeze_rows(target, fwd.recorder, timed=False)
        return trace_of(target, fwd, x, command=command, rows=rows)


@contextlib.contextmanager
def _checkpointed(target: Target, session: HookSession) -> Iterator[None]:
    """Every block of ``target`` (a model this tool owns: a copy or its own build) run through
    ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``, as transformers'
    ``gradient_checkpointing_enable()`` does: autograd keeps each block's inputs and nothing saved
    inside it (recomputed in the backward). The inputs are recorded as saved, once per storage."""
    from torch.utils.checkpoint import checkpoint

    from resnet_trace.ops import tensors_in

    blocks = [m for m in target.model.modules() if target.block_types and isinstance(m, target.block_types)]

    def keep_inputs(module: nn.Module, args: tuple, kwargs: dict) -> None:
        rec = session.recorder
        if rec is not None:
            for t in tensors_in((args, kwargs)):
                if t.is_floating_point():
                    rec.pack(t)

    handles = [m.register_forward_pre_hook(keep_inputs, with_kwargs=True, prepend=True) for m in blocks]
    for m in blocks:
        m.forward = functools.partial(checkpoint, m.forward, use_reentrant=False)
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for m in blocks:
            del m.forward  # the class's own forward again


def real_forward(
    target: Target,
    x: Feed | torch.Tensor,
    *,
    repeat: int = 1,
    top_k: int = 5,
    seed: int | None = None,
    weights: str | None = None,
    input_file: str | None = None,
    progress: Callable[[int], None] | None = None,
    leaves: bool = False,
    save_output: str | None = None,
) -> Trace:
    """A real forward with statistics; ``repeat`` > 1 adds timed passes and reports medians.
    ``save_output`` names a ``.npy``/``.pt`` file that gets the forward's full outputs.

    ``leaves`` (for ``--depth layer``) adds statistics to every leaf call and times them in
    the timed passes, which otherwise hook only the row modules.
    """
    x = as_feed(x)
    device = x.first.device.type
    sync = torch.cuda.synchronize if device == Device.CUDA else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fwd = run_forward(target, x, stats=True, leaf_stats=leaves)
    sync()
    forward_ms = (time.perf_counter() - t0) * 1000
    rec = fwd.recorder
    times = None
    overhead_ms = None
    if fwd.failure is None and (repeat > 1 or device == Device.CUDA):
        from resnet_trace.timing import timed_forwards

        row_modules = {id(r.module) for r in rec.rows if r.module is not None and r.depth is not Depth.LAYER}
        timings = timed_forwards(target, x, max(repeat, 1), row_modules, progress, leaves=leaves)
        times = timings.per_row
        forward_ms = timings.forward_s * 1000
        overhead_ms = None if timings.overhead_s is None else timings.overhead_s * 1000
    logits, topk = output_values(fwd.output if fwd.failure is None else None, top_k)
    run = RunInfo(
        seed=seed,
        repeat=repeat,
        forward_ms=forward_ms,
        hook_overhead_ms=overhead_ms,
        logits=logits,
        top_k=topk,
        weights=weights,
        input_file=input_file,
    )
    t = trace_of(target, fwd, x, command="run", rows=freeze_rows(target, rec, times), run=run)
    if fwd.failure is None:
        stats = output_stats(fwd.output)
        t = dataclasses.replace(
            t, outputs=tuple(dataclasses.replace(o, stats=stats.get(o.path)) for o in t.outputs)
        )
        if logits is None and t.outputs:
            n = math.prod(t.output_shape or ())
            note = (
                f"note: the output's {n:,} values are not in the document (over {VALUES_LIMIT:,}); "
                f"its statistics are (outputs[].stats)"
            )
            t = dataclasses.replace(t, notes=(*t.notes, note))
        if save_output is not None:
            from resnet_trace.saving import save_outputs

            saved = save_outputs(save_output, fwd.output, label=f"--save-output {save_output!r}")
            what = f"{saved.tensors:,} tensor{'s' if saved.tensors != 1 else ''}, {human(saved.nbytes)}"
            note = f"note: the outputs ({what}) are saved in {save_output}"
            t = dataclasses.replace(t, notes=(*t.notes, note))
    elif save_output is not None:  # nothing to save: say so, an older file there is not this run's
        t = dataclasses.replace(
            t, notes=(*t.notes, f"note: the forward stopped; nothing saved in {save_output}")
        )
    return t


def trace_of(
    target: Target,
    fwd: Forward,
    x: Feed | torch.Tensor,
    *,
    command: str,
    rows: tuple,
    run: RunInfo | None = None,
) -> Trace:
    """The one place a :class:`Trace` is assembled from a forward."""
    rec = fwd.recorder
    ok = fwd.failure is None
    feed = as_feed(x)
    first = feed.first
    call = describe_feed(feed)
    return Trace(
        command=command,
        model=target.info,
        device=Device.META if target.fake and not run else first.device.type,
        dtype=str(param_dtype(target.model)).removeprefix("torch."),  # the inputs' own: ``inputs``
        input_shape=tuple(int(d) for d in first.shape),
        output_shape=output_shape(fwd.output) if ok else None,
        rows=rows,
        totals=totals(target.model, rec),
        error=None if fwd.failure is None else diagnose(target, rec.failure, fwd.failure, rows),
        accepted_sizes=target.accepted_sizes,
        outputs=outputs(fwd.output) if ok else (),
        run=run,
        inputs=() if plain_shape(call) is not None else call,
    )


def describe_feed(feed: Feed) -> Call:
    """The records of a feed's tensors, dtypes written out (ranges are not a tensor's to say)."""
    return tuple(
        InputTensor(name, tuple(int(d) for d in t.shape), str(t.dtype).removeprefix("torch."))
        for name, t in [*((None, a) for a in feed.args), *feed.kwargs.items()]
    )


def tree_of(target: Target, shape: Shape | Call) -> tuple[TreeNode, TraceError | None]:
    """The module tree, marked with what ran in a shape-only trace of ``shape``."""
    target = fake_twin(target)
    with shape_mode(target):
        x = placeholder(target, shape)
        fwd = run_forward(target, x)
    error = None
    if fwd.failure is not None:
        rows = freeze_rows(target, fwd.recorder, timed=False)
        error = diagnose(target, fwd.recorder.failure, fwd.failure, rows)
    return module_tree(target.model, fwd.recorder.ran), error
