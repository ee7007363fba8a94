"""The tensors a model is called with: shape-only placeholders or real values, and who reads them.

A :class:`Feed` is one call's positional and keyword tensors, made from the
:class:`~resnet_trace.records.InputTensor` records of an ``--input`` value (or ``inputs=``):

* shape-only: empty tensors (fake or on ``meta``), so nothing is allocated;
* ``run``: floats from a normal distribution under the seed; integers read by an embedding below
  that embedding's size; masks (a name holding ``mask``) all ones; a ``[lo,hi)`` range when given.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from resnet_trace.inputs import FLOATING, InputError
from resnet_trace.records import InputTensor, Shape


@dataclass(frozen=True)
class Feed:
    """One call of a model: ``model(*args, **kwargs)``."""

    args: tuple[torch.Tensor, ...] = ()
    kwargs: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def tensors(self) -> list[torch.Tensor]:
        return [*self.args, *self.kwargs.values()]

    @property
    def first(self) -> torch.Tensor:
        return self.tensors()[0]

    def call(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)

    def to(self, device: str) -> Feed:
        return Feed(tuple(t.to(device) for t in self.args), {k: t.to(device) for k, t in self.kwargs.items()})


Call = tuple[InputTensor, ...]


def as_call(value: Shape | Sequence[InputTensor]) -> Call:
    """A plain shape as one positional floating tensor; a call's tensors as they are."""
    if value and all(isinstance(v, InputTensor) for v in value):
        return tuple(value)  # type: ignore[arg-type]
    return (InputTensor(name=None, shape=tuple(int(d) for d in value)),)  # type: ignore[arg-type]


def plain_shape(call: Call) -> Shape | None:
    """The shape of a call that is one positional floating tensor (the seed's kind), else None."""
    if len(call) == 1 and call[0].name is None and call[0].dtype in (None, *FLOATING):
        return call[0].shape
    return None


def torch_dtype(word: str | None, floating: torch.dtype) -> torch.dtype:
    """The torch dtype of a word (``None``: the model's floating dtype)."""
    if word is None:
        return floating
    dtype = getattr(torch, word)
    assert isinstance(dtype, torch.dtype)
    return dtype


def resolved(call: Call, floating: torch.dtype) -> Call:
    """The call with every dtype written out (what a trace records)."""
    return tuple(
        InputTensor(
            t.name, t.shape, str(torch_dtype(t.dtype, floating)).removeprefix("torch."), t.low, t.high
        )
        for t in call
    )


def placeholders(call: Call, device: str | torch.device, floating: torch.dtype) -> Feed:
    """Empty tensors of the call's shapes (made inside a fake mode, they are fake)."""
    made = [(t.name, torch.empty(t.shape, dtype=torch_dtype(t.dtype, floating), device=device)) for t in call]
    return _feed(made)


def _feed(made: list[tuple[str | None, torch.Tensor]]) -> Feed:
    return Feed(tuple(x for n, x in made if n is None), {n: x for n, x in made if n is not None})


def values(
    call: Call,
    device: str | torch.device,
    floating: torch.dtype,
    seed: int,
    highs: Mapping[int, int] | None = None,
) -> Feed:
    """Real values under ``seed`` (drawn on the CPU, then moved, so a seed means one input everywhere).

    ``highs``: for the call's ``i``-th tensor, the size of the embedding that reads it.
    """
    gen = torch.Generator().manual_seed(seed)
    made = []
    for i, t in enumerate(call):
        dtype = torch_dtype(t.dtype, floating)
        if dtype == torch.bool:
            x = (
                torch.ones(t.shape, dtype=dtype)
                if _is_mask(t)
                else torch.randint(0, 2, t.shape, generator=gen).bool()
            )
        elif dtype.is_floating_point or dtype.is_complex:
            if t.low is not None and t.high is not None:
                x = torch.rand(t.shape, generator=gen) * (t.high - t.low) + t.low
            else:
                x = torch.randn(t.shape, generator=gen)
            x = x.to(dtype)
        elif t.low is not None and t.high is not None:
            x = torch.randint(
                int(t.low), max(int(-(-t.high // 1)), int(t.low) + 1), t.shape, generator=gen, dtype=dtype
            )
        elif _is_mask(t):
            x = torch.ones(t.shape, dtype=dtype)
        else:
            high = (highs or {}).get(i)
            x = torch.randint(0, high if high else 2, t.shape, generator=gen, dtype=dtype)
        made.append((t.name, x.to(device)))
    return _feed(made)


def _is_mask(t: InputTensor) -> bool:
    return t.name is not None and "mask" in t.name.lower()


def check_names(model: nn.Module, call: Call) -> tuple[str, ...]:
    """Refuse a name ``forward`` does not take, or more positional inputs than it has (InputError).

    A name ``forward`` only takes through ``**kwargs`` is let through, with a note: the model
    may well ignore it (a misspelt ``attention_maks`` to a transformers model is).
    """
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return ()
    kinds = inspect.Parameter
    named = [p.name for p in params if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)]
    takes_any = any(p.kind is kinds.VAR_KEYWORD for p in params)
    takes_many = any(p.kind is kinds.VAR_POSITIONAL for p in params)
    positional = [p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    listed = ", ".join(named[:16]) + (", ..." if len(named) > 16 else "") or "no named inputs"
    cls = type(model).__name__
    n_pos = sum(1 for t in call if t.name is None)
    if n_pos > len(positional) and not takes_many:
        raise InputError(
            f"--input gives {n_pos} positional inputs; {cls}.forward takes {len(positional)} ({listed})"
        )
    for t in call:
        if t.name is not None and t.name not in named and not takes_any:
            raise InputError(
                f"--input {t.name}=...: {cls}.forward takes no input {t.name!r} (it takes {listed})"
            )
    taken = {p.name for p in positional[:n_pos]}
    for t in call:
        if t.name is not None and t.name in taken:
            raise InputError(f"--input {t.name}=...: {t.name!r} is already the positional input")
    return tuple(
        f"note: {cls}.forward has no parameter {t.name!r}: it goes to **kwargs, which may ignore it "
        f"(its parameters: {listed})"
        for t in call
        if t.name is not None and t.name not in named
    )


@contextlib.contextmanager
def _embedding_hooks(model: nn.Module, feed: Feed, found: dict[int, int]) -> Iterator[None]:
    ids = {id(x): i for i, x in enumerate(feed.tensors())}

    def pre(module: nn.Module, args: tuple) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            return
        x = args[0]
        for t in (x, getattr(x, "_base", None)):
            i = ids.get(id(t)) if t is not None else None
            if i is not None:
                size = int(module.num_embeddings)  # type: ignore[arg-type]
                found[i] = min(found.get(i, size), size)

    handles = [m.register_forward_pre_hook(pre) for m in model.modules() if isinstance(m, nn.Embedding)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def embedding_sizes(model: nn.Module, feed: Feed, forward: Any) -> dict[int, int]:
    """For each tensor of ``feed`` (by position in the call) that an ``nn.Embedding`` reads directly
    (or through a view), that embedding's size; ``forward()`` runs the model on ``feed``.

    Tensors no embedding reads are bounded by the smallest embedding of the model, when it has one.
    """
    found: dict[int, int] = {}
    if not any(isinstance(m, nn.Embedding) for m in model.modules()):
        return found
    with _embedding_hooks(model, feed, found), contextlib.suppress(Exception):
        forward()
    smallest = min(int(m.num_embeddings) for m in model.modules() if isinstance(m, nn.Embedding))
    for i, x in enumerate(feed.tensors()):
        if i not in found and not (x.dtype.is_floating_point or x.dtype == torch.bool):
            found[i] = smallest
    return found


def describe(value: object) -> tuple[Call, Feed] | None:
    """Example tensors passed to the API (a tensor, a sequence of them, or a name -> tensor mapping):
    their records and the feed that holds them as they are; None when ``value`` holds no tensors."""
    if isinstance(value, torch.Tensor):
        value = (value,)
    made: list[tuple[str | None, torch.Tensor]]
    if isinstance(value, Mapping) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
        made = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        made = [(None, v) for v in value]
    else:
        return None
    call = tuple(
        InputTensor(n, tuple(int(d) for d in v.shape), str(v.dtype).removeprefix("torch.")) for n, v in made
    )
    return call, _feed(made)
