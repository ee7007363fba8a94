"""The independent truth for models of any input, computed from a REAL CPU forward, never the tool.

* ``params``: the numel of every distinct parameter tensor (a tied embedding counted once);
* ``macs``: ``FlopCounterMode`` total // 2 on a real forward in ``eval()`` with attention on the
  math backend, except inside an ``nn.LSTM``: oneDNN's fused CPU LSTM is one operation that
  ``FlopCounterMode`` counts as 0, so there the layer arithmetic ``4 x hidden x (input + hidden)``
  per step, layer and direction replaces whatever it counted;
* ``output_shape``: the real output's ``logits`` (a ``ModelOutput`` holding one), else its first tensor;
* ``params_unused``: after a real forward and backward of the sum of every floating output
  (every parameter made to require a gradient, on a copy), the numel of the parameters whose
  ``.grad`` stayed ``None``.

Inputs are drawn here, independently of the tool: floats from ``randn``, integer ids below the
size of the embedding that reads them, masks (a name holding ``mask``) all ones.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


@dataclasses.dataclass(frozen=True)
class Arg:
    """One tensor of a call: ``name`` None for a positional one; ``high``: ids drawn below it."""

    name: str | None
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    high: int | None = None


@dataclasses.dataclass(frozen=True)
class Call:
    args: tuple[torch.Tensor, ...]
    kwargs: Mapping[str, torch.Tensor]

    def __call__(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs)


def make_call(spec: tuple[Arg, ...], seed: int = 0) -> Call:
    gen = torch.Generator().manual_seed(seed)
    args: list[torch.Tensor] = []
    kwargs: dict[str, torch.Tensor] = {}
    for a in spec:
        if a.dtype.is_floating_point:
            x = torch.randn(a.shape, generator=gen).to(a.dtype)
        elif a.name is not None and "mask" in a.name:
            x = torch.ones(a.shape, dtype=a.dtype)
        else:
            assert a.high is not None, a
            x = torch.randint(0, a.high, a.shape, generator=gen, dtype=a.dtype)
        if a.name is None:
            args.append(x)
        else:
            kwargs[a.name] = x
    return Call(tuple(args), kwargs)


def tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor of an output nest (tuples, lists, dicts, ``ModelOutput``, dataclasses)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):  # a ModelOutput is an OrderedDict of its set fields
        for v in value.values():
            yield from tensors(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from tensors(v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from tensors(getattr(value, f.name))


def first_output(value: Any) -> torch.Tensor:
    if isinstance(value, Mapping) and isinstance(value.get("logits"), torch.Tensor):
        return value["logits"]
    return next(tensors(value))


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def rnn_formula(module: nn.Module, x: torch.Tensor) -> int:
    """``gates x hidden x (input + hidden)`` per step (x batch), layer and direction."""
    gates = GATES[type(module)]
    steps_x_batch = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    dirs = 2 if module.bidirectional else 1
    h = module.hidden_size
    total = 0
    for layer in range(module.num_layers):
        inp = module.input_size if layer == 0 else h * dirs
        total += dirs * gates * h * (inp + h)
    return steps_x_batch * total


@dataclasses.dataclass(frozen=True)
class Truth:
    params: int
    macs: int
    output_shape: tuple[int, ...]
    params_unused: int
    rnn_counted: dict[str, tuple[int, int]]  # recurrent module -> (FlopCounterMode's MACs, formula)


def _module_macs(counter: FlopCounterMode, key: str) -> int:
    return sum(counter.get_flop_counts().get(key, {}).values()) // 2


def truth(model: nn.Module, spec: tuple[Arg, ...], seed: int = 0) -> Truth:
    m = copy.deepcopy(model).eval()
    call = make_call(spec, seed)
    root = type(m).__name__
    rnns = {name: mod for name, mod in m.named_modules() if type(mod) in GATES}
    formula: dict[str, int] = dict.fromkeys(rnns, 0)
    handles = []
    for name, mod in rnns.items():

        def pre(module: nn.Module, args: tuple, name: str = name) -> None:
            formula[name] += rnn_formula(module, args[0])

        handles.append(mod.register_forward_pre_hook(pre))
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
            out = call(m)
    finally:
        for h in handles:
            h.remove()
    assert counter.get_total_flops() % 2 == 0
    macs = counter.get_total_flops() // 2
    counted = {name: (_module_macs(counter, f"{root}.{name}"), formula[name]) for name in rnns}
    for name, mod in rnns.items():
        if isinstance(mod, nn.LSTM):  # the fused CPU LSTM: replace its count by the arithmetic
            macs += formula[name] - counted[name][0]
    shape = tuple(first_output(out).shape)

    for p in m.parameters():
        p.requires_grad_(True)
        p.grad = None
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        out = call(m)
        loss = sum(t.float().sum() for t in tensors(out) if t.is_floating_point() and t.requires_grad)
        assert isinstance(loss, torch.Tensor)
        loss.backward()
    unique = {id(p): p for p in m.parameters()}.values()
    unused = sum(p.numel() for p in unique if p.grad is None)
    return Truth(params(model), macs, shape, unused, counted)
