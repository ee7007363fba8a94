"""Attention in a model built on ``meta``: a shape-only trace (on fake CPU tensors) agrees with a real CPU forward."""

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
