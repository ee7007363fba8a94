"""The training view against an independent truth: saved_tensors_hooks on a real CPU forward, a real backward."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from torch import nn
from training_truth import grad_truth, saved_truth

from resnet_trace import api
from resnet_trace.errors import UsageError
from resnet_trace.memory import parse_budget
from resnet_trace.model import BottleNeck, ResNet
from resnet_trace.records import Kind, Report
from resnet_trace.render.bars import decades_below, log_bars
from resnet_trace.render.table import render_svg, render_table
from resnet_trace.spec import ModelSpec
from resnet_trace.training import (
    TRANSIENT_FACTOR,
    Optimizer,
    backward_step,
    fit_batch,
    grad_blocks,
    grads_bytes,
    optimizer_bytes,
    params_bytes,
    train_info,
    transient_bytes,
    with_grads,
    with_measurement,
)


def _real_seed(base: int, variant: str, head: str = "avgpool7") -> ResNet:
    torch.manual_seed(0)
    return ResNet(base, 2, variant=variant, head=head).train()


def _check_rows(rows, truth, *, only_blocks: bool = False) -> int:
    """Every row the truth can name (a module that is not shared) has the truth's bytes; returns how many."""
    compared = 0
    for r in rows:
        if only_blocks and r.kind != Kind.BLOCK:
            continue
        key = (r.name, r.call)
        if key not in truth.per_call:
            continue
        assert (r.saved_bytes, r.out_bytes) == (truth.per_call[key], truth.out_bytes[key]), key
        compared += 1
    return compared


# ------------------------------------------------------------------ saved activations, per row


@pytest.mark.parametrize("variant", ["seed", "fixed"])
@pytest.mark.parametrize(
    "base, shape, head",
    [
        (16, (2, 3, 224, 224), "avgpool7"),
        (8, (3, 3, 160, 128), "adaptive"),
        (4, (1, 3, 224, 224), "avgpool7"),
    ],
)
def test_saved_bytes_equal_saved_tensors_hooks(variant, base, shape, head):
    t = api.trace_shapes(api.build_target(ModelSpec(base, 2, variant, head)), shape, train=True)
    truth = saved_truth(_real_seed(base, variant, head), torch.randn(shape))
    blocks = [r for r in t.rows if r.kind == Kind.BLOCK]
    assert len(blocks) == 16
    assert all(r.saved_bytes and r.saved_bytes > 0 for r in blocks)
    assert _check_rows(t.rows, truth) >= 16 + 4 + 2  # blocks, stages, stem and head at least
    assert t.totals.activations_bytes == truth.total


def _hf_resnet() -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 2, 1, 1], num_labels=3
    )
    return ResNetForImageClassification(config)


def _hf_vit(attn: str) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        attn_implementation=attn,
    )
    return ViTForImageClassification(config)


@pytest.mark.parametrize(
    "make, shape, blocks",
    [
        (_hf_resnet, (2, 3, 64, 64), 5),
        (lambda: _hf_vit("eager"), (2, 3, 32, 32), 3),
        (lambda: _hf_vit("sdpa"), (2, 3, 32, 32), 3),
    ],
    ids=["hf-resnet", "hf-vit-eager", "hf-vit-sdpa"],
)
def test_transformers_models_saved_bytes(make, shape, blocks):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = make()
    t = api.trace_shapes(api.model_target(model, input_shape=shape), shape, train=True)
    truth = saved_truth(model.train(), torch.randn(shape))
    assert t.totals.activations_bytes == truth.total  # batch norm statistics (buffers) included
    assert _check_rows(t.rows, truth, only_blocks=True) == blocks


# ------------------------------------------------------------------ bytes of params, grads, optimizer


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(10, 10)  # 110 params
        self.b = self.a  # the same module again: counted once
        self.frozen = nn.Linear(10, 5)  # 55 params, no grad
        self.frozen.requires_grad_(False)


@pytest.mark.parametrize(
    "dtype, size", [(torch.float32, 4), (torch.float16, 2), (torch.bfloat16, 2), (torch.float64, 8)]
)
def test_param_grad_optimizer_bytes_rules(dtype, size):
    m = _Shared().to(dtype)
    assert params_bytes(m) == (110 + 55) * size  # frozen parameters are in memory too
    assert grads_bytes(m) == 110 * size  # only what requires grad gets a .grad
    expected = {"sgd": 0, "momentum": 110 * size, "adam": 220 * size, "adamw": 220 * size}
    for opt in Optimizer:
        assert optimizer_bytes(m, opt) == expected[opt.value]


def test_optimizer_state_matches_torch():
    """The multipliers are what torch.optim really keeps after a step (floating state only)."""
    torch.manual_seed(0)
    for opt, make in [
        (Optimizer.SGD, lambda p: torch.optim.SGD(p, lr=0.1)),
        (Optimizer.MOMENTUM, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
        (Optimizer.ADAM, lambda p: torch.optim.Adam(p)),
        (Optimizer.ADAMW, lambda p: torch.optim.AdamW(p)),
    ]:
        m = _Shared()
        o = make([p for p in m.parameters() if p.requires_grad])
        m.a(torch.randn(3, 10)).sum().backward()
        o.step()
        state = sum(
            v.numel() * v.element_size()
            for s in o.state.values()
            for v in s.values()
            if isinstance(v, torch.Tensor) and v.dim() > 0
        )
        assert optimizer_bytes(m, opt) == state, opt


@pytest.mark.parametrize(
    "text, value",
    [
        ("24GiB", 24 * 2**30),
        ("24G", 24 * 2**30),
        ("80GB", 80 * 10**9),
        ("512 MiB", 512 * 2**20),
        ("1e9", 10**9),
    ],
)
def test_parse_budget(text, value):
    assert parse_budget(text) == value


@pytest.mark.parametrize("text", ["", "GiB", "-1GiB", "12 parsecs", "0", "nan"])
def test_parse_budget_rejects(text):
    with pytest.raises(UsageError):
        parse_budget(text)


# ------------------------------------------------------------------ the peak and the batch that fits


def test_peak_is_the_sum_of_its_terms():
    shape = (2, 3, 224, 224)
    target = api.build_target(ModelSpec(16, 2, "seed", "avgpool7"))
    t = api.trace_shapes(target, shape, train=True)
    info = train_info(
        model=target.model,
        rows=t.rows,
        activations_bytes=t.totals.activations_bytes,
        optimizer=Optimizer.ADAM,
    )
    p = sum(q.numel() for q in _real_seed(16, "seed").parameters()) * 4
    truth = saved_truth(_real_seed(16, "seed"), torch.randn(shape))
    largest_out = 2 * 16 * 112 * 112 * 4  # the stem conv's output: 2x16x112x112 float32
    assert (info.params_bytes, info.grads_bytes, info.optimizer_bytes) == (p, p, 2 * p)
    assert info.activations_bytes == truth.total
    assert info.transient_bytes == TRANSIENT_FACTOR * largest_out == transient_bytes(t.rows)
    assert info.peak_bytes == 4 * p + truth.total + TRANSIENT_FACTOR * largest_out


@pytest.mark.parametrize("budget", ["1GiB", "8GiB", "24GiB"])
def test_fit_batch_fits_and_one_more_does_not(budget):
    target = api.build_target(ModelSpec(16, 2, "seed", "avgpool7"))
    calls = []

    def peak(n: int) -> int:
        calls.append(n)
        t = api.trace_shapes(target, (n, 3, 224, 224), train=True)
        return train_info(
            model=target.model,
            rows=t.rows,
            activations_bytes=t.totals.activations_bytes,
            optimizer=Optimizer.ADAMW,
        ).peak_bytes

    b = parse_budget(budget)
    info = train_info(
        model=target.model,
        rows=(),
        activations_bytes=0,
        optimizer=Optimizer.ADAMW,
        budget_bytes=b,
        peak_of_batch=peak,
    )
    n = info.fit_batch
    assert n is not None and n > 1
    assert peak(n) <= b < peak(n + 1)
    assert len(calls) <= 8  # the straight line through batches 1 and 2 lands on it


@pytest.mark.parametrize(
    "peak",
    [
        lambda n: 1000 + 7 * n,
        lambda n: 10 * n * n,  # grows faster than a line
        lambda n: 100 * (n // 16 + 1),  # steps: flat between multiples of 16
        lambda n: 500 + 300 * (n > 5) + n,
    ],
)
@pytest.mark.parametrize("budget", [1, 999, 1007, 5000, 123_456])
def test_fit_batch_against_brute_force(peak, budget):
    expected = 0
    while peak(expected + 1) <= budget:
        expected += 1
    assert fit_batch(peak, budget) == expected


def test_fit_batch_when_the_peak_never_grows():
    assert fit_batch(lambda n: 10, 100, limit=1000) == 1000


# ------------------------------------------------------------------ a real backward: gradient norms


@pytest.mark.parametrize("variant", ["seed", "fixed"])
def test_gradient_norms_match_a_direct_computation(variant):
    model = _real_seed(16, variant).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, BottleNeck)]
    blocks += [("layer_1", model.layer_1), ("fc_layer", model.fc_layer)]
    old = torch.ones_like(model.fc_layer.bias)
    model.fc_layer.bias.grad = old  # a .grad the user had: it must come back untouched
    step = backward_step(model, x, target=1, blocks=blocks)
    out_norms, param_norms, loss = grad_truth(model, x, target=1, names=[n for n, _ in blocks])
    assert step.loss == pytest.approx(loss, rel=1e-6)
    assert set(step.grad_norms) == set(out_norms) and len(out_norms) == 18
    for key, value in out_norms.items():
        assert step.grad_norms[key] == pytest.approx(value, rel=1e-3), key
    for name, value in param_norms.items():
        assert step.param_grad_norms[name] == pytest.approx(value, rel=1e-3, abs=1e-30), name
    # restored: eval mode, no hook left, no .grad left, the user's .grad the very same tensor
    assert not model.training
    assert all(not m._forward_hooks for m in model.modules())
    assert model.fc_layer.bias.grad is old
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc_layer.bias")
    assert step.step_peak_bytes is None or step.step_peak_bytes > 0


def test_a_module_called_twice_gets_a_norm_per_call():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Linear(6, 6)
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            return self.head(self.block(torch.tanh(self.block(x))))

    torch.manual_seed(0)
    m = Twice()
    x = torch.randn(4, 6)
    step = backward_step(m, x, target=2, blocks=[("block", m.block)])
    out_norms, param_norms, _ = grad_truth(m, x, target=2, names=["block"])
    assert set(step.grad_norms) == {("block", 1), ("block", 2)}
    for key, value in out_norms.items():
        assert step.grad_norms[key] == pytest.approx(value, rel=1e-3)
    assert step.param_grad_norms["block"] == pytest.approx(param_norms["block"], rel=1e-3)


def test_batch_norm_statistics_and_mode_restored():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    m(torch.randn(2, 3, 8, 8))
    m.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    backward_step(m, torch.randn(2, 3, 8, 8), target=0, blocks=[("1", m[1])])
    assert not m.training
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_with_grads_and_measurement_fill_the_records():
    shape = (2, 3, 224, 224)
    target = api.build_target(ModelSpec(16, 2, "seed", "avgpool7"), device="cpu", init_seed=0)
    t = api.trace_shapes(target, shape, train=True)
    blocks = grad_blocks(t.rows, target.model)
    assert [name for name, _ in blocks] == [r.name for r in t.rows if r.kind == Kind.BLOCK]
    step = backward_step(target.model, torch.randn(shape), target=0, blocks=blocks)
    rows = with_grads(t.rows, step)
    got = {r.name: r.grad_norm for r in rows if r.kind == Kind.BLOCK}
    assert got == {k[0]: v for k, v in step.grad_norms.items()}
    info = with_measurement(
        train_info(
            model=target.model,
            rows=t.rows,
            activations_bytes=t.totals.activations_bytes,
            optimizer=Optimizer.SGD,
        ),
        step,
    )
    assert info.loss == step.loss and info.target == 0
    if step.step_peak_bytes is not None:
        assert info.measured_peak_bytes == info.params_bytes + step.step_peak_bytes
    # the table shows the bytes, the norms and a bar per block; the SVG keeps the bar
    report = Report(replace(t, rows=rows, train=info), tuple(r for r in rows if r.depth.value == "block"))
    text = render_table([report])
    assert "saved" in text and "‖dL/dout‖" in text and "█" in text and "Training step" in text
    assert "█" in render_svg([report])


def test_with_grads_finds_a_block_called_twice_by_its_module_name():
    """Rows of a module called twice are named ``NAME (call k/n)``; its norms are keyed by the module."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(6, 6)

        def forward(self, x):
            return x + torch.tanh(self.lin(x))

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Block()
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            return self.head(self.block(self.block(x))).flatten(1)  # the logits grad_truth takes

    torch.manual_seed(0)
    m = Twice()
    x = torch.randn(1, 2, 3, 6)
    t = api.trace(model=m, block=Block, input_shape=tuple(x.shape))
    assert [r.name for r in t.rows] == ["block (call 1/2)", "block (call 2/2)", "head"]
    blocks = grad_blocks(t.rows, m)
    assert blocks == [("block", m.block)]
    step = backward_step(m, x, target=2, blocks=blocks)
    rows = with_grads(t.rows, step)
    out_norms, param_norms, _ = grad_truth(m, x, target=2, names=["block"])
    for r in rows[:2]:
        assert r.grad_norm == pytest.approx(out_norms[("block", r.call)], rel=1e-3), r.name
        assert r.param_grad_norm == pytest.approx(param_norms["block"], rel=1e-3), r.name
    assert rows[2] is t.rows[2]  # no block, no norms


# ------------------------------------------------------------------ rendering


def test_log_bars():
    bars = log_bars([1e-5, 1e-3, 1e-1, None, 0.0, float("nan")], width=8)
    assert bars[2] == "█" * 8  # the largest fills the width
    assert bars[1] == "████    "  # 1e-3 lies halfway (in decades) between 1e-5 and 1e-1
    assert bars[0] == "▏       "  # the smallest still shows an eighth: it is not zero
    assert bars[3:] == ["", "0", "?"]
    assert log_bars([None, None]) == ["", ""]
    assert log_bars([2.0]) == ["█" * 12]
    assert decades_below([1e-5, None, 1e-1]) == pytest.approx(4.0)


def test_renderers_do_not_import_torch():
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import resnet_trace.render.table, resnet_trace.render.compare, resnet_trace.render.bars\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
