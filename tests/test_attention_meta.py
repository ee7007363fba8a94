"""Attention on ``meta``: traced as the CPU runs it; the built-in model, with none, skips the function mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resnet_trace.api import model_target, trace_run, trace_shapes


class Attend(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 4, swallow: bool = False) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.heads = heads
        self.swallow = swallow
        self.modes_seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes_seen.append(torch._C._is_torch_function_mode_enabled())
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.swallow:
            try:
                y = F.scaled_dot_product_attention(q, k, v)
            except Exception:  # a model that hides its own errors
                y = v
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        return x + y.transpose(1, 2).reshape(n, t, d)


class Net(nn.Module):
    def __init__(self, swallow: bool = False) -> None:
        super().__init__()
        self.blocks = nn.Sequential(Attend(swallow=swallow), Attend(swallow=swallow))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def _facts(trace):
    return [(r.name, r.kind, r.in_shape, r.out_shape, r.params, r.macs, r.skips) for r in trace.rows]


def _agree(swallow: bool) -> None:
    shape = (2, 5, 16)
    with torch.device("meta"):
        meta_model = Net(swallow).eval()
    torch.manual_seed(0)
    cpu_model = Net(swallow).eval()
    target = model_target(meta_model, block="Attend", input_shape=shape)
    for _ in range(2):
        meta = trace_shapes(target, shape, command="summary")
        real = trace_run(model_target(cpu_model, block="Attend", input_shape=shape), torch.randn(shape))
        assert meta.error is None and real.error is None
        assert _facts(meta) == _facts(real)
        # per block: qkv n*t*16*48, then Q K^T and A V at n*heads*t*t*head_dim each
        n, t, d, heads = 2, 5, 16, 4
        per_block = n * t * d * 3 * d + 2 * n * heads * t * t * (d // heads)
        assert meta.totals.macs == real.totals.macs == 2 * per_block


def test_attention_on_meta_is_traced_as_the_cpu_runs_it():
    _agree(swallow=False)


def test_a_model_that_catches_exceptions_around_attention_is_traced_alike():
    _agree(swallow=True)


def test_a_model_of_your_own_runs_attention_on_fake_cpu_tensors_the_builtin_without_a_mode():
    # A model of your own, even one built on meta, is traced on fake CPU tensors: its attention
    # takes the CPU's own kernel choice, with no function mode to route it. The built-in model,
    # which has no attention, runs on meta without one either (the mode costs every torch call).
    from torch._subclasses.fake_tensor import FakeTensor

    with torch.device("meta"):
        model = Net()
    own: list[tuple[bool, bool]] = []
    forward = Attend.forward

    def watched(self: Attend, x: torch.Tensor) -> torch.Tensor:
        own.append(
            (torch._C._is_torch_function_mode_enabled(), isinstance(x, FakeTensor) and x.device.type == "cpu")
        )
        return forward(self, x)

    Attend.forward = watched  # type: ignore[method-assign]
    try:
        trace_shapes(model_target(model, block="Attend", input_shape=(1, 3, 16)), (1, 3, 16))
    finally:
        Attend.forward = forward  # type: ignore[method-assign]
    assert own[-1] == (False, True) and model.blocks[0].modes_seen == []

    from resnet_trace.api import make_target

    seed = make_target(base_dim=8)
    seen: list[bool] = []
    handle = seed.model.register_forward_pre_hook(
        lambda m, a: seen.append(torch._C._is_torch_function_mode_enabled())
    )
    try:
        t = trace_shapes(seed, (1, 3, 224, 224))
    finally:
        handle.remove()
    assert t.error is None and seen == [False]
