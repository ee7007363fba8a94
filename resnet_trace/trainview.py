"""The training view of a trace: a step's predicted memory (``summary --train``, ``--budget``) and a
real backward beside it (``run --backward``). The arithmetic is :mod:`resnet_trace.training`'s;
this module drives it from traces."""

from __future__ import annotations

import dataclasses
import math

from resnet_trace.errors import UsageError
from resnet_trace.feed import Feed
from resnet_trace.records import InputTensor, Optimizer, Shape, Trace
from resnet_trace.spec import InvalidValue, check_shape
from resnet_trace.target import Target
from resnet_trace.tracer import shape_only


def with_train(target: Target, trace: Trace, *, optimizer: Optimizer, budget: int | None = None) -> Trace:
    """``trace`` (made with ``train=True``) with the memory of one training step, and the batch that fits.

    ``budget`` (bytes) adds ``fit_batch``: the largest batch whose ``peak_bytes`` fits, each
    candidate batch traced shape-only like this one.
    """
    from resnet_trace.training import train_info

    cache: dict[int, int] = {}

    def peak(n: int) -> int:
        if n not in cache:
            t = shape_only(target, _batched(trace, n), train=True)
            if t.error is not None or t.totals.activations_bytes is None:
                raise UsageError(
                    f"batch {n} cannot be traced: {t.error.message if t.error else 'no activations'}"
                )
            cache[n] = train_info(
                model=target.model,
                rows=t.rows,
                activations_bytes=t.totals.activations_bytes,
                optimizer=optimizer,
            ).peak_bytes
        return cache[n]

    if trace.error is not None or trace.totals.activations_bytes is None:
        return trace
    info = train_info(
        model=target.model,
        rows=trace.rows,
        activations_bytes=trace.totals.activations_bytes,
        optimizer=optimizer,
        budget_bytes=budget,
        peak_of_batch=peak if budget is not None else None,
    )
    return dataclasses.replace(trace, train=info)


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
    from resnet_trace.training import backward_step, grad_blocks, train_info, with_grads, with_measurement

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
    )
    return dataclasses.replace(trace, rows=with_grads(trace.rows, step), train=with_measurement(info, step))
