"""The training view of a trace: a step's predicted memory (``summary --train``, ``--budget``) and a
real backward beside it (``run --backward``). The arithmetic is :mod:`resnet_trace.training`'s;
this module drives it from traces."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from resnet_trace.errors import UsageError
from resnet_trace.feed import Feed
from resnet_trace.records import (
    InputTensor,
    Kind,
    Optimizer,
    Precision,
    RankInfo,
    Shape,
    Shard,
    Trace,
    TrainInfo,
)
from resnet_trace.spec import InvalidValue, check_shape
from resnet_trace.target import Target
from resnet_trace.tracer import StepRegime, shape_only
from resnet_trace.training import train_info


def with_train(
    target: Target,
    trace: Trace,
    *,
    optimizer: Optimizer,
    budget: int | None = None,
    regime: StepRegime | None = None,
    precision: Precision = Precision.FP32,
    recompute: int = 0,
    gpus: int = 1,
    shard: Shard = Shard.NONE,
) -> Trace:
    """``trace`` (made with ``train=True`` under ``regime``) with the memory of one training step,
    and the batch that fits.

    Only parameters that require grad and that an operation read get a gradient and optimizer
    state (Adam keeps none for a parameter whose ``.grad`` stays ``None``). ``recompute``: with
    checkpointing, the largest block's saved bytes (from a trace without it), live again while that
    block is recomputed in the backward. ``budget`` (bytes) adds ``fit_batch``: the largest batch
    whose ``peak_bytes`` fits, each candidate batch traced shape-only like this one.
    """
    regime = regime or StepRegime()
    cache: dict[int, int] = {}

    def info_of(t: Trace, again: int, **more: object) -> TrainInfo:
        trained = grad_params(target, t)
        info = train_info(
            model=target.model,
            rows=t.rows,
            activations_bytes=t.totals.activations_bytes or 0,
            optimizer=optimizer,
            grad_params=trained,
            recompute_bytes=again,
            **more,  # type: ignore[arg-type]
        )
        if gpus == 1 and shard is Shard.NONE:
            return info
        ranks = sharded(target, info, trained, optimizer, gpus, shard)
        return dataclasses.replace(
            info, gpus=gpus, shard=shard.value, ranks=ranks, peak_bytes=max(r.peak_bytes for r in ranks)
        )

    def peak(n: int) -> int:
        if n not in cache:
            try:
                batched = _batched(trace, n)
            except UsageError:  # a batch beyond the input limits does not fit
                return (budget or 0) + 1
            t = shape_only(target, batched, train=True, regime=regime)
            if t.error is not None or t.totals.activations_bytes is None:
                raise UsageError(
                    f"batch {n} cannot be traced: {t.error.message if t.error else 'no activations'}"
                )
            again = 0
            if regime.checkpoint:
                plain = dataclasses.replace(regime, checkpoint=False)
                again = largest_block_saved(shape_only(target, batched, train=True, regime=plain))
            cache[n] = info_of(t, again).peak_bytes
        return cache[n]

    if trace.error is not None or trace.totals.activations_bytes is None:
        return trace
    info = info_of(trace, recompute, budget_bytes=budget, peak_of_batch=peak if budget is not None else None)
    info = dataclasses.replace(info, precision=precision.value, checkpoint=regime.checkpoint)
    return dataclasses.replace(trace, train=info)


def sharded(
    target: Target,
    info: TrainInfo,
    trained: list[nn.Parameter],
    optimizer: Optimizer,
    gpus: int,
    shard: Shard,
) -> tuple[RankInfo, ...]:
    """Every rank of a step sharded over ``gpus`` devices: what it holds (exact, as PyTorch's engines
    hold it), and its peak at the per-device batch (``info``'s activations, transient and recompute)."""
    from resnet_trace.sharding import block_units, rank_bytes

    units = block_units(target.model, target.block_types)
    held = rank_bytes(
        target.model, units, gpus, shard, optimizer.state_multiplier, {id(p) for p in trained}, backend="nccl"
    )
    return tuple(
        RankInfo(
            rank=r.rank,
            params_bytes=r.params_bytes,
            grads_bytes=r.grads_bytes,
            optimizer_bytes=r.optimizer_bytes,
            padding_bytes=r.padding_bytes,
            gathered_bytes=r.gathered_bytes,
            reduce_bytes=r.reduce_bytes,
            activations_bytes=info.activations_bytes,
            peak_bytes=r.peak_bytes(info.activations_bytes, info.transient_bytes) + info.recompute_bytes,
        )
        for r in held
    )


def grad_params(target: Target, trace: Trace) -> list[nn.Parameter]:
    """The parameters a backward gives a gradient: they require grad, and an operation read them."""
    unread = set(trace.totals.unread_params)
    return [p for name, p in target.model.named_parameters() if p.requires_grad and name not in unread]


def largest_block_saved(trace: Trace) -> int:
    """The most any one block call saved for the backward (what recomputing it holds again)."""
    return max((r.saved_bytes or 0 for r in trace.rows if r.kind is Kind.BLOCK), default=0)


def _batched(trace: Trace, n: int) -> Shape | tuple[InputTensor, ...]:
    """The trace's input with a batch of ``n``: every tensor's first dimension (the batch) set to ``n``."""
    if not trace.inputs:
        shape = (n, *trace.input_shape[1:])
        return check_shape(shape) if len(shape) == 4 else shape
    return tuple(dataclasses.replace(t, shape=(n, *t.shape[1:])) for t in trace.inputs)


def with_backward(meta_target: Target, target: Target, trace: Trace, x: Feed, *, target_class: int) -> Trace:
    """``trace`` (a real forward) with a real backward of cross-entropy against ``target_class``:
    per block the gradient norms, and the measured peak beside the predicted one."""
    from resnet_trace.recorder import keep_training_flags
    from resnet_trace.training import backward_step, grad_blocks, with_grads, with_measurement

    if trace.error is not None:
        return trace
    # the loss takes each sample's outputs, flattened, as its logits
    classes = (
        math.prod(trace.output_shape[1:]) if trace.output_shape and len(trace.output_shape) > 1 else None
    )
    if classes is not None and not 0 <= target_class < classes:
        raise InvalidValue("target", f"target class must be in 0..{classes - 1}, not {target_class}")
    predicted = shape_only(meta_target, trace.inputs or trace.input_shape, train=True)
    blocks = grad_blocks(trace.rows, target.model)
    with keep_training_flags(target.model):
        step = backward_step(target.model, x, target=target_class, blocks=blocks)
    info = train_info(
        model=meta_target.model,
        rows=predicted.rows,
        activations_bytes=predicted.totals.activations_bytes or 0,
        optimizer=Optimizer.SGD,
        grad_params=grad_params(meta_target, predicted),
    )
    return dataclasses.replace(trace, rows=with_grads(trace.rows, step), train=with_measurement(info, step))


def with_sharded_step(
    meta_target: Target,
    trace: Trace,
    measured: Sequence[Any],
    *,
    gpus: int,
    shard: Shard,
) -> Trace:
    """``trace`` (``run --backward``) with each rank of the real sharded step beside its prediction:
    the same step (Adam) predicted shape-only at this per-device batch, then measured."""
    predicted = shape_only(meta_target, trace.inputs or trace.input_shape, train=True)
    trained = grad_params(meta_target, predicted)
    info = train_info(
        model=meta_target.model,
        rows=predicted.rows,
        activations_bytes=predicted.totals.activations_bytes or 0,
        optimizer=Optimizer.ADAM,
        grad_params=trained,
    )
    ranks = sharded(meta_target, info, trained, Optimizer.ADAM, gpus, shard)
    by_rank = {m.rank: m for m in measured}
    ranks = tuple(
        dataclasses.replace(
            r,
            measured_params_bytes=by_rank[r.rank].params_bytes,
            measured_grads_bytes=by_rank[r.rank].grads_bytes,
            measured_optimizer_bytes=by_rank[r.rank].optimizer_bytes,
            measured_peak_bytes=by_rank[r.rank].peak_bytes,
        )
        if r.rank in by_rank
        else r
        for r in ranks
    )
    base = trace.train or info
    train = dataclasses.replace(
        base,
        gpus=gpus,
        shard=shard.value,
        ranks=ranks,
        optimizer=Optimizer.ADAM.value,
        peak_bytes=max(r.peak_bytes for r in ranks),
        measured_peak_bytes=max((r.measured_peak_bytes or 0 for r in ranks), default=None) or None,
    )
    return dataclasses.replace(trace, train=train)
