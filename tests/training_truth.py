"""The independent truth for the training view: a REAL CPU forward (and backward), never the tool.

``saved_truth`` watches ``torch.autograd.graph.saved_tensors_hooks`` on a real forward with grad
enabled and attributes each distinct saved storage (keyed by ``untyped_storage().data_ptr()``;
storages of parameters excluded, buffers such as batch-norm statistics not) to every module call open when it was saved, as forward
pre/post hooks see them. ``grad_truth`` computes gradient norms with ``torch.autograd.grad``
on the same weights and input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

Key = tuple[str, int]  # (module name, call index from 1)


@dataclass
class SavedTruth:
    per_call: dict[Key, int] = field(default_factory=dict)  # distinct saved storage bytes per call
    out_bytes: dict[Key, int] = field(default_factory=dict)
    total: int = 0  # every distinct saved storage of the whole forward
    largest: int = 0  # the largest single saved storage


def _param_ptrs(model: nn.Module) -> set[int]:
    return {p.untyped_storage().data_ptr() for p in model.parameters()}  # buffers are not excluded


def _tensors(value: object) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif hasattr(value, "to_tuple"):  # transformers ModelOutput
        yield from _tensors(value.to_tuple())


def saved_truth(model: nn.Module, x: torch.Tensor | dict, names: Iterable[str] | None = None) -> SavedTruth:
    """Saved-for-backward storages of one real forward, per module call and in total."""
    wanted = set(names) if names is not None else None
    params = _param_ptrs(model)
    open_calls: list[Key] = []
    calls: dict[str, int] = {}
    sets: dict[Key, set[int]] = {}
    sizes: dict[int, int] = {}
    outs: dict[Key, int] = {}
    keep: list[torch.Tensor] = []  # keep every saved tensor alive: no address is reused
    handles = []
    named = {m: n for n, m in model.named_modules()}

    def pre(module: nn.Module, args: object) -> None:
        name = named[module]
        calls[name] = calls.get(name, 0) + 1
        key = (name, calls[name])
        open_calls.append(key)
        sets.setdefault(key, set())

    def post(module: nn.Module, args: object, out: object) -> None:
        key = open_calls.pop()
        seen: set[int] = set()
        total = 0
        for t in _tensors(out):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                total += t.untyped_storage().nbytes()
        outs[key] = total

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and storage.nbytes() > 0:
            keep.append(t)
            sizes[ptr] = storage.nbytes()
            for key in open_calls:
                sets[key].add(ptr)
        return t

    for module, name in named.items():
        if wanted is None or name in wanted:
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if isinstance(x, dict):
                model(**x)
            else:
                model(x)
    finally:
        for h in handles:
            h.remove()
    truth = SavedTruth(
        per_call={k: sum(sizes[p] for p in v) for k, v in sets.items() if k[0] != ""},
        out_bytes={k: v for k, v in outs.items() if k[0] != ""},
        total=sum(sizes.values()),
        largest=max(sizes.values(), default=0),
    )
    return truth


def _logits(out: object) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.logits  # type: ignore[attr-defined]


def grad_truth(
    model: nn.Module, x: torch.Tensor, *, target: int, names: Iterable[str]
) -> tuple[dict[Key, float], dict[str, float], float]:
    """Per call: ||dloss/doutput||; per module: ||dloss/dparams|| over its own parameters; the loss."""
    wanted = list(names)
    modules = dict(model.named_modules())
    outputs: dict[Key, torch.Tensor] = {}
    calls: dict[str, int] = {}
    handles = []

    def hook_for(name: str):
        def post(module: nn.Module, args: object, out: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            outputs[(name, calls[name])] = next(iter(_tensors(out)))

        return post

    for name in wanted:
        handles.append(modules[name].register_forward_hook(hook_for(name)))
    try:
        with torch.enable_grad():
            logits = _logits(model(x))
            labels = torch.full((logits.shape[0],), target, dtype=torch.long)
            loss = nn.functional.cross_entropy(logits, labels)
            keys = list(outputs)
            own = {n: [p for p in modules[n].parameters() if p.requires_grad] for n in wanted}
            flat = [p for n in wanted for p in own[n]]
            grads = torch.autograd.grad(loss, [outputs[k] for k in keys] + flat, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    out_norms = {k: float(g.double().norm()) for k, g in zip(keys, grads[: len(keys)])}
    param_norms: dict[str, float] = {}
    rest = list(grads[len(keys) :])
    for n in wanted:
        gs = [g for g in rest[: len(own[n])] if g is not None]
        rest = rest[len(own[n]) :]
        param_norms[n] = float(torch.sqrt(sum((g.double() ** 2).sum() for g in gs))) if gs else 0.0
    return out_norms, param_norms, float(loss.detach())
