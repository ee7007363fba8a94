"""A training step as people run it: bf16/fp16, autocast, checkpointing, frozen weights, unread parameters.

Every expected figure comes from a real CPU forward (and backward) of the same model under the same
regime: ``saved_tensors_hooks`` for what autograd keeps (tests/training_truth.py), ``.grad`` after a
real backward for what gets a gradient. Never from the tool.
"""

from __future__ import annotations

import contextlib
import re

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from training_truth import saved_truth

import resnet_trace as rt
from resnet_trace.model import BottleNeck, ResNet


def _seed() -> nn.Module:
    torch.manual_seed(0)
    return ResNet(8, 3, head="adaptive")


def _gpt2() -> nn.Module:
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tf.GPT2Config(
        vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64, attn_implementation="sdpa"
    )
    return tf.GPT2LMHeadModel(cfg)


SEED_SHAPE = (2, 3, 64, 64)
GPT2_IDS = ((2, 16), torch.int64)


def _seed_input() -> torch.Tensor:
    return torch.randn(SEED_SHAPE)


def _gpt2_input() -> dict:
    return {"input_ids": torch.randint(0, 100, (2, 16))}


def _trace(model: nn.Module, **options) -> rt.Report:
    if isinstance(model, ResNet):
        return rt.trace(model=model, input_shape=SEED_SHAPE, train=True, **options)
    return rt.trace(model=model, inputs={"input_ids": GPT2_IDS}, train=True, **options)


def _x(model: nn.Module):
    return _seed_input() if isinstance(model, ResNet) else _gpt2_input()


def _blocks(model: nn.Module) -> tuple[type[nn.Module], ...]:
    if isinstance(model, ResNet):
        return (BottleNeck,)
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

    return (GPT2Block,)


MODELS = [pytest.param(_seed, id="seed"), pytest.param(_gpt2, id="gpt2")]


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("precision", ["bf16-autocast", "fp16-autocast"])
def test_autocast_saved_bytes_equal_a_real_forward_under_autocast(make, precision):
    model = make()
    t = _trace(model, precision=precision).trace
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    with torch.autocast("cpu", dtype=dtype):
        truth = saved_truth(model.train(), _x(model))
    assert t.totals.activations_bytes == truth.total
    assert t.train.precision == precision
    assert t.train.params_bytes == sum(p.numel() * 4 for p in model.parameters())  # fp32 master weights


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_half_precision_step_stores_and_runs_in_it(make, precision):
    model = make()
    t = _trace(model, precision=precision).trace
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    half = model.to(dtype)
    x = _x(model)
    x = x.to(dtype) if isinstance(x, torch.Tensor) else x
    assert t.totals.activations_bytes == saved_truth(half.train(), x).total
    assert t.train.params_bytes == sum(p.numel() * 2 for p in half.parameters())


@contextlib.contextmanager
def _checkpointed(model: nn.Module, kept: dict[int, int]):
    """Every block through ``torch.utils.checkpoint`` (non-reentrant), its inputs recorded."""
    blocks = [m for m in model.modules() if isinstance(m, _blocks(model))]

    def keep(module, args, kwargs):
        for t in [*args, *kwargs.values()]:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()

    handles = [m.register_forward_pre_hook(keep, with_kwargs=True) for m in blocks]
    for m in blocks:
        m.forward = (lambda f: lambda *a, **k: checkpoint(f, *a, use_reentrant=False, **k))(m.forward)
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for m in blocks:
            del m.forward


@pytest.mark.parametrize("make", MODELS)
def test_checkpointing_keeps_block_inputs_and_what_runs_outside_blocks(make):
    model = make()
    t = _trace(model, checkpoint=True).trace
    plain = _trace(model).trace
    kept: dict[int, int] = {}
    saved: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(x):
        ptr = x.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = x.untyped_storage().nbytes()
        return x

    keep_alive = []
    model.train()
    with _checkpointed(model, kept), torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        keep_alive.append(
            model(**_x(model))
            if isinstance(model, nn.Module) and not isinstance(model, ResNet)
            else model(_x(model))
        )
    truth = sum({**saved, **kept}.values())
    assert t.totals.activations_bytes == truth
    assert t.train.checkpoint is True
    assert t.totals.activations_bytes < plain.totals.activations_bytes
    # the backward recomputes one block at a time: the most any block saved without checkpointing
    real_blocks = saved_truth(model.train(), _x(model))
    names = {n for n, m in model.named_modules() if isinstance(m, _blocks(model))}
    largest = max(v for (name, _), v in real_blocks.per_call.items() if name in names)
    assert t.train.recompute_bytes == largest
    assert t.train.peak_bytes == (
        t.train.params_bytes
        + t.train.grads_bytes
        + t.train.optimizer_bytes
        + t.train.activations_bytes
        + t.train.transient_bytes
        + largest
    )


def _grads_after_backward(model: nn.Module) -> int:
    model.train()
    for p in model.parameters():
        p.grad = None
    out = model(_x(model)) if isinstance(model, ResNet) else model(**_x(model)).logits
    out.float().sum().backward()
    return sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("make", MODELS)
def test_frozen_weights_get_no_gradient_and_autograd_saves_less(make):
    model = make()
    pattern = "fc_layer" if isinstance(model, ResNet) else r"h\.1\."
    t = _trace(model, trainable=pattern).trace
    for name, p in model.named_parameters():
        p.requires_grad_(bool(re.search(pattern, name)))
    assert t.totals.activations_bytes == saved_truth(model.train(), _x(model)).total
    grads = _grads_after_backward(model)
    assert t.train.grads_bytes == grads
    assert t.train.optimizer_bytes == 2 * grads  # adam: exp_avg and exp_avg_sq
    assert t.train.trainable_params == grads // 4


def test_a_never_read_parameter_gets_no_gradient_nor_adam_state():
    # the seed's three dim_equalizer modules never run (docs/seed.md)
    model = ResNet(16, 2)
    t = rt.trace(base_dim=16, train=True).trace
    grads = _grads_after_backward_seed(model)
    assert t.train.grads_bytes == grads
    assert t.train.optimizer_bytes == 2 * grads
    every = sum(p.numel() * 4 for p in model.parameters())
    assert every - grads == 345_856  # the figure: what was counted too many


def _grads_after_backward_seed(model: nn.Module) -> int:
    model.train()
    model(torch.randn(1, 3, 224, 224)).sum().backward()
    return sum(p.grad.numel() * 4 for p in model.parameters() if p.grad is not None)


def test_regime_options_need_train_and_a_valid_pattern():
    with pytest.raises(ValueError, match="precision"):
        rt.trace(base_dim=8, precision="bf16")
    with pytest.raises(ValueError, match="trainable"):
        rt.trace(base_dim=8, train=True, trainable="(")
    with pytest.raises(ValueError, match="matches no parameter"):
        rt.trace(base_dim=8, train=True, trainable="nothing_has_this_name")
    with pytest.raises(ValueError, match="precision"):
        rt.trace(base_dim=8, train=True, precision="fp8")
