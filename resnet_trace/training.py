"""The training view: what one training step holds in memory, the batch that fits, gradients per block.

The predicted peak of one step (docs/training.md states and checks it)::

    peak_bytes = params_bytes + grads_bytes + optimizer_bytes + activations_bytes + transient_bytes

* ``params_bytes``: every distinct parameter of the model (frozen ones too: they are in memory);
* ``grads_bytes``: the distinct parameters that require grad (frozen ones get no ``.grad``);
* ``optimizer_bytes``: the optimizer's state, a multiple of the trainable parameters' bytes
  (:class:`Optimizer`: sgd 0, momentum 1, adam 2, adamw 2);
* ``activations_bytes``: every distinct storage autograd saves for backward in the forward
  (the tracer measures it; parameters excluded, a storage counted once);
* ``transient_bytes``: what the backward allocates on top while it runs
  (:func:`transient_bytes`: ``TRANSIENT_FACTOR`` x the largest output of any call).

:func:`backward_step` runs a real forward and backward and measures what the rows cannot predict:
gradient norms per block and the step's real peak. Nothing here renders; records come back frozen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from resnet_trace.errors import UsageError
from resnet_trace.feed import Feed
from resnet_trace.ops import tensors_in
from resnet_trace.peak import PeakMeter
from resnet_trace.records import Kind, Optimizer, Row, TrainInfo

#: The backward's transient, in units of the largest output of any call (docs/training.md, measured).
TRANSIENT_FACTOR = 8
#: ``fit_batch`` never searches past this batch (a peak that does not grow with the batch).
MAX_BATCH = 2**31


def _unique_params(model: nn.Module) -> list[nn.Parameter]:
    return list(model.parameters())  # parameters() already yields a shared parameter once


def params_bytes(model: nn.Module) -> int:
    """Bytes of every distinct parameter, frozen ones included (they are in memory all the same)."""
    return sum(p.numel() * p.element_size() for p in _unique_params(model))


def grads_bytes(model: nn.Module) -> int:
    """Bytes of the gradients a backward creates: one per distinct parameter that requires grad."""
    return sum(p.numel() * p.element_size() for p in _unique_params(model) if p.requires_grad)


def optimizer_bytes(model: nn.Module, optimizer: Optimizer) -> int:
    """The optimizer's state: ``state_multiplier`` x the bytes of the trainable parameters."""
    return optimizer.state_multiplier * grads_bytes(model)


def transient_bytes(rows: Iterable[Row]) -> int:
    """The backward's largest transient: ``TRANSIENT_FACTOR`` x the largest ``out_bytes`` of any row.

    While the backward passes through a call, the gradient of its output and the gradient of its
    input are live together with the copies the kernels make (the CPU convolution backward makes the
    gradient contiguous, and a residual add holds one gradient per branch until they are summed);
    docs/training.md shows the measurements behind the factor.
    """
    return TRANSIENT_FACTOR * max((r.out_bytes or 0 for r in rows), default=0)


def fit_batch(peak_of_batch: Callable[[int], int], budget_bytes: int, *, limit: int = MAX_BATCH) -> int:
    """The largest batch ``n`` with ``peak_of_batch(n) <= budget_bytes``; 0 when batch 1 does not fit.

    ``peak_of_batch`` must not decrease with the batch. The answer is checked against that same
    function: ``peak_of_batch(n) <= budget_bytes < peak_of_batch(n + 1)`` (unless ``n == limit``).
    A straight line through batches 1 and 2 gives a first guess (exact when the peak is affine in
    the batch, as for convolutional nets), then an exponential and a binary search make it certain.
    """
    cache: dict[int, int] = {}

    def fits(n: int) -> bool:
        if n not in cache:
            cache[n] = peak_of_batch(n)
        return cache[n] <= budget_bytes

    if not fits(1):
        return 0
    lo, hi = 1, None  # fits(lo); not fits(hi)
    slope = cache.setdefault(2, peak_of_batch(2)) - cache[1] if limit >= 2 else 0
    if slope > 0:
        guess = min(limit, 1 + (budget_bytes - cache[1]) // slope)
        if guess > 1:
            if fits(guess):
                lo = guess
            elif fits(guess - 1):
                lo, hi = guess - 1, guess
            else:
                hi = guess - 1
    step = 1
    while hi is None:
        if lo >= limit:
            return limit
        c = min(limit, lo + step)
        if fits(c):
            lo, step = c, step * 2
        else:
            hi = c
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def train_info(
    *,
    model: nn.Module,
    rows: Sequence[Row],
    activations_bytes: int,
    optimizer: Optimizer,
    budget_bytes: int | None = None,
    peak_of_batch: Callable[[int], int] | None = None,
    grad_params: Sequence[nn.Parameter] | None = None,
    recompute_bytes: int = 0,
) -> TrainInfo:
    """The memory of one training step, from a ``--train`` trace's rows and its saved-activation total.

    With ``budget_bytes``, ``peak_of_batch`` (the ``peak_bytes`` of the same model traced at batch
    ``n``) finds ``fit_batch``. ``model`` may live on ``meta``: only parameter sizes are read.
    """
    p = params_bytes(model)
    if grad_params is None:
        g = grads_bytes(model)
        trainable = None
    else:
        g = sum(q.numel() * q.element_size() for q in grad_params)
        trainable = sum(q.numel() for q in grad_params)
    o = optimizer.state_multiplier * g
    t = transient_bytes(rows)
    info = TrainInfo(
        optimizer=optimizer.value,
        params_bytes=p,
        grads_bytes=g,
        optimizer_bytes=o,
        activations_bytes=activations_bytes,
        transient_bytes=t,
        peak_bytes=p + g + o + activations_bytes + t + recompute_bytes,
        recompute_bytes=recompute_bytes,
        trainable_params=trainable,
    )
    if budget_bytes is not None:
        if peak_of_batch is None:
            raise ValueError("budget_bytes needs peak_of_batch to search the batch")
        info = replace(info, budget_bytes=budget_bytes, fit_batch=fit_batch(peak_of_batch, budget_bytes))
    return info


# ---------------------------------------------------------------------------------------------
# A real forward and backward: gradient norms per block and the measured peak.

Key = tuple[str, int]  # (module name, call index from 1)


@dataclass(frozen=True, slots=True)
class BackwardStep:
    """What one real forward + backward measured.

    ``grad_norms``: per call, the L2 norm of dloss/d(output) (every floating output tensor together).
    ``param_grad_norms``: per module (not per call: a parameter has one ``.grad`` however often its
    module runs), the L2 norm over the module's own parameters, its children's included.
    ``step_peak_bytes``: the peak memory of the step above the level before it (``None`` where it
    cannot be measured); ``peak_source`` says how it was read.
    """

    loss: float
    target: int
    grad_norms: dict[Key, float]
    param_grad_norms: dict[str, float]
    step_peak_bytes: int | None
    peak_source: str
    seconds: float


def loss_logits(out: object) -> torch.Tensor:
    """The tensor a loss is taken of: the output, its ``logits``, or its first tensor."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    first = next(tensors_in(out), None)
    if first is None:
        raise UsageError("the model's output holds no tensor to take a cross-entropy loss of")
    return first


def backward_step(
    model: nn.Module,
    x: Feed | torch.Tensor,
    *,
    target: int = 0,
    blocks: Sequence[tuple[str, nn.Module]],
) -> BackwardStep:
    """One real forward and backward of cross-entropy against class ``target`` for every sample.

    The model runs in training mode (it is a training step); ``model.training``, every parameter's
    ``.grad`` and every buffer (batch-norm statistics) are restored afterwards and every hook is
    removed, whatever happens. ``blocks`` names the modules whose gradients are reported; a module
    called several times gets one ``grad_norms`` entry per call, keyed ``(name, call)``.
    """
    params = _unique_params(model)
    saved_grads = [p.grad for p in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    was_training = model.training
    handles: list[torch.utils.hooks.RemovableHandle] = []
    squares: dict[Key, float] = {}
    calls: dict[str, int] = {}

    def forward_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object, out: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            key = (name, calls[name])
            squares.setdefault(key, 0.0)
            seen: set[int] = set()
            for t in tensors_in(out):
                if t.requires_grad and t.is_floating_point() and id(t) not in seen:
                    seen.add(id(t))

                    def grad_hook(grad: torch.Tensor, key: Key = key) -> None:
                        squares[key] += float(grad.detach().double().square().sum())

                    t.register_hook(grad_hook)

        return hook

    try:
        for p in params:
            p.grad = None
        for name, module in blocks:
            handles.append(module.register_forward_hook(forward_hook(name)))
        model.train()
        start = time.perf_counter()
        feed = x if isinstance(x, Feed) else Feed((x,))
        meter = PeakMeter(feed.first.device)  # the level before the step
        with torch.enable_grad():
            logits = loss_logits(feed.call(model))
            labels = torch.full((logits.shape[0],), int(target), dtype=torch.long, device=logits.device)
            loss = nn.functional.cross_entropy(logits.reshape(logits.shape[0], -1), labels)
            loss.backward()
            peak = meter.peak()
        seconds = time.perf_counter() - start
        param_norms: dict[str, float] = {}
        for name, module in blocks:
            if name in param_norms:
                continue
            total = sum(
                float(p.grad.detach().double().square().sum())
                for p in module.parameters()
                if p.grad is not None
            )
            param_norms[name] = math.sqrt(total)
        return BackwardStep(
            loss=float(loss.detach()),
            target=int(target),
            grad_norms={k: math.sqrt(v) for k, v in squares.items()},
            param_grad_norms=param_norms,
            step_peak_bytes=peak,
            peak_source=meter.source,
            seconds=seconds,
        )
    finally:
        for h in handles:
            h.remove()
        for p, g in zip(params, saved_grads):
            p.grad = g
        with torch.no_grad():
            for b, old in buffers:
                b.copy_(old)
        model.train(was_training)


def module_name(row: Row) -> str:
    """The module a row stands for: its name less the `` (call k/n)`` of a module called n > 1 times."""
    return row.name.rsplit(" (call ", 1)[0] if row.calls > 1 else row.name


def grad_blocks(rows: Sequence[Row], model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules of the block rows, each once, by name: :func:`backward_step`'s ``blocks``."""
    blocks: list[tuple[str, nn.Module]] = []
    seen: set[str] = set()
    for r in rows:
        name = module_name(r)
        if r.kind is Kind.BLOCK and name not in seen:
            seen.add(name)
            blocks.append((name, model.get_submodule(name)))
    return blocks


def with_grads(rows: Sequence[Row], step: BackwardStep) -> tuple[Row, ...]:
    """Rows with ``grad_norm`` (matched by module name and call) and ``param_grad_norm`` (by module name)."""
    out = []
    for r in rows:
        name = module_name(r)
        g = step.grad_norms.get((name, r.call))
        pg = step.param_grad_norms.get(name)
        out.append(r if g is None and pg is None else replace(r, grad_norm=g, param_grad_norm=pg))
    return tuple(out)


def with_measurement(info: TrainInfo, step: BackwardStep) -> TrainInfo:
    """``info`` with the loss, the target and the measured peak of a real step.

    ``measured_peak_bytes`` = ``params_bytes`` (resident before the step) + what the step added at
    its peak. ``run --backward`` takes no optimizer step, so compare it with an ``sgd`` prediction.
    """
    measured = None if step.step_peak_bytes is None else info.params_bytes + step.step_peak_bytes
    return replace(info, measured_peak_bytes=measured, loss=step.loss, target=step.target)
