"""The Python API never changes what the caller owns (issue: torchsummary's "accuracy decreases
after calling summary()"): model state, flags, grads, hooks, RNG, default dtype, grad mode.

Each call is made on a model with BatchNorm (running statistics), dropout, frozen parameters,
hooks of its own, gradients already set and a mix of train/eval submodules; everything is
snapshotted before and compared after, on success and on failure.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import resnet_trace as rt


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.head(x.mean((2, 3)))


def _model() -> Net:
    torch.manual_seed(1)
    m = Net()
    m.eval()
    m.drop.train()  # a mix of modes
    m.conv.bias.requires_grad_(False)  # a frozen parameter
    m.head.weight.grad = torch.ones_like(m.head.weight)  # a gradient the caller holds
    m.bn.num_batches_tracked.fill_(7)
    m.seen = []
    m.head.register_forward_hook(lambda mod, a, o: m.seen.append(1))
    m.register_forward_pre_hook(lambda mod, a: None)
    return m


def _hooks(m: nn.Module) -> list:
    out = []
    for name, mod in m.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            out.append((name, attr, tuple(getattr(mod, attr).keys())))
    return out


def _snapshot(m: Net) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in m.state_dict().items()},
        "training": [(n, mod.training) for n, mod in m.named_modules()],
        "requires_grad": [(n, p.requires_grad) for n, p in m.named_parameters()],
        "grads": [(n, None if p.grad is None else p.grad.clone()) for n, p in m.named_parameters()],
        "hooks": _hooks(m),
        "rng": torch.get_rng_state().clone(),
        "dtype": torch.get_default_dtype(),
        "grad_mode": torch.is_grad_enabled(),
        "mha": torch.backends.mha.get_fastpath_enabled(),
        "seen": list(m.seen),
    }


def _same(a: dict, b: dict) -> None:
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    for key in ("training", "requires_grad", "hooks", "dtype", "grad_mode", "mha"):
        assert a[key] == b[key], key
    for (n, g1), (_, g2) in zip(a["grads"], b["grads"]):
        assert (g1 is None) == (g2 is None) and (g1 is None or torch.equal(g1, g2)), n
    assert torch.equal(a["rng"], b["rng"])


SHAPE = (2, 3, 16, 16)


def _options(tmp_path) -> list[tuple[str, dict]]:
    weights = tmp_path / "w.pt"
    torch.save(_model().state_dict(), weights)
    x = tmp_path / "x.pt"
    torch.save(torch.randn(SHAPE), x)
    return [
        ("shape-only", {}),
        ("real", {"real": True}),
        ("real repeat", {"real": True, "repeat": 2, "seed": 3}),
        ("train", {"train": True}),
        ("budget", {"budget": "64MiB"}),
        ("backward", {"backward": True}),
        ("dtype", {"dtype": "bfloat16"}),
        ("real dtype", {"real": True, "dtype": "float16"}),
        ("meta device", {"real": True, "device": "meta"}),
        ("weights", {"weights": weights}),
        ("input file", {"input_file": x}),
        ("autocast", {"train": True, "precision": "bf16-autocast"}),
        ("checkpoint", {"train": True, "checkpoint": True}),
        ("trainable", {"train": True, "trainable": "head"}),
        ("layer depth", {"real": True, "depth": "layer"}),
    ]


def test_no_option_of_trace_changes_the_callers_model_or_state(tmp_path):
    for name, options in _options(tmp_path):
        m = _model()
        torch.manual_seed(123)
        torch.set_grad_enabled(True)
        before = _snapshot(m)
        kwargs = {"input_shape": SHAPE} if "input_file" not in options else {}
        rt.trace(model=m, **kwargs, **options)
        try:
            _same(before, _snapshot(m))
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


@pytest.mark.parametrize(
    "options",
    [{}, {"real": True}, {"train": True}, {"backward": True}],
    ids=["shape-only", "real", "train", "backward"],
)
def test_a_failing_trace_changes_nothing_either(options):
    m = _model()
    before = _snapshot(m)
    r = rt.trace(model=m, input_shape=(2, 5, 16, 16), **options)  # 5 channels: the conv refuses
    assert r.trace.error is not None
    _same(before, _snapshot(m))


def test_a_refused_call_changes_nothing():
    m = _model()
    before = _snapshot(m)
    with pytest.raises(ValueError):
        rt.trace(model=m, input_shape=SHAPE, base_dim=7)
    with pytest.raises(ValueError):
        rt.trace(model=m, input_shape=SHAPE, real=True, filter="(")
    _same(before, _snapshot(m))


def test_the_seeds_own_calls_leave_the_global_state_alone(tmp_path):
    torch.manual_seed(5)
    rng, dtype = torch.get_rng_state().clone(), torch.get_default_dtype()
    rt.trace(base_dim=8, real=True, seed=11)
    rt.compare(base_dim=8)
    rt.tree(base_dim=8)
    golden = tmp_path / "g.json"
    golden.write_text(rt.trace(base_dim=8).to_json(), encoding="utf-8")
    rt.check(golden)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_default_dtype() == dtype


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"input_shape": (0, 3, 224, 224)}, "input_shape"),
        ({"filter": "a{4294967296}"}, "filter"),
        ({"filter": "("}, "filter"),
        ({"budget": "lots"}, "budget"),
        ({"base_dim": 0}, "base_dim"),
        ({"weights": "/no/such/file.pt"}, "weights"),
        ({"inputs": {"x": (0, 3)}, "model": nn.Linear(3, 3)}, "inputs"),
        ({"train": True, "trainable": "("}, "trainable"),
    ],
)
def test_api_errors_are_pythons_and_name_the_parameter(kwargs, name):
    with pytest.raises((ValueError, TypeError)) as info:
        rt.trace(**kwargs)
    message = str(info.value)
    assert name in message and "--" not in message, message
