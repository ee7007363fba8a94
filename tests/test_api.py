"""The Python API: documented examples run, the CLI's JSON is the records' to_dict, values are checked."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import resnet_trace as rt
from resnet_trace.api import trace
from resnet_trace.errors import UsageError
from resnet_trace.records import Depth, Head, Variant

ROOT = Path(__file__).resolve().parents[1]


def test_the_examples_in_docs_api_md_run():
    result = doctest.testfile(
        str(ROOT / "docs" / "api.md"),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.attempted > 10 and result.failed == 0


@pytest.mark.parametrize(
    "args,kwargs",
    [
        ((), {}),
        (
            ("--base-dim", "8", "-i", "2x3x200x210", "--depth", "layer"),
            dict(base_dim=8, input_shape=(2, 3, 200, 210), depth="layer"),
        ),
        (
            ("--base-dim", "4", "--variant", "fixed", "--collapse"),
            dict(base_dim=4, variant="fixed", collapse=True),
        ),
        (  # the enums, or their words
            ("--base-dim", "4", "--variant", "fixed", "--head", "adaptive", "--depth", "stage"),
            dict(base_dim=4, variant=Variant.FIXED, head=Head.ADAPTIVE, depth=Depth.STAGE),
        ),
        (("--base-dim", "4", "--filter", "layer_3"), dict(base_dim=4, filter="layer_3")),
        (
            (
                "-i",
                "1x3x256x256",
            ),
            dict(input_shape=(1, 3, 256, 256)),
        ),
    ],
)
def test_to_dict_is_the_cli_json(cli, args, kwargs):
    result = cli("summary", *args, "-f", "json", code=3 if "256" in "".join(args) else 0)
    assert rt.trace(**kwargs).to_dict() == json.loads(result.stdout)


def test_to_json_is_standard_json_and_round_trips():
    t = rt.trace(base_dim=4)
    assert json.loads(t.to_json()) == t.to_dict()


class _Tied(nn.Module):
    """Two linear layers sharing one weight tensor, and a third never called."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6, bias=False)
        self.b = nn.Linear(6, 6, bias=False)
        self.b.weight = self.a.weight
        self.spare = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def test_tied_weights_are_counted_once_in_the_totals():
    model = _Tied()
    t = rt.trace(model=model, input_shape=(1, 2, 3, 6))
    unique = {id(p): p.numel() for p in model.parameters()}
    assert t.totals.params == sum(unique.values()) == 36 + 21
    # Each row counts the shared weight; summing rows would count it twice (and miss the spare).
    assert [(r.name, r.params) for r in t.rows] == [("a", 36), ("b", 36)]
    assert t.totals.params_unused == 21 and t.totals.unused_modules == ("spare",)
    assert t.totals.macs == 2 * (1 * 2 * 3 * 6 * 6)


def test_each_submodules_training_flag_is_restored_exactly():
    from resnet_trace.model import ResNet

    net = ResNet(4, 2)
    net.train()
    net.layer_2.eval()
    before = [m.training for m in net.modules()]
    rt.trace(model=net, input_shape=(1, 3, 224, 224), real=True)
    rt.trace(model=net, input_shape=(1, 3, 224, 224))
    assert [m.training for m in net.modules()] == before


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(base_dim=20000), ValueError),
        (dict(base_dim=0), ValueError),
        (dict(base_dim=True), TypeError),
        (dict(num_classes=2.5), TypeError),
        (dict(input_shape=(1, 3, 224.7, 224)), TypeError),
        (dict(input_shape=(1, 3, 224)), TypeError),
        (dict(variant="other"), ValueError),
        (dict(head="avgpool8"), ValueError),
        (dict(dtype="float64"), ValueError),
        (dict(device="tpu", real=True), ValueError),
        (dict(optimizer="lbfgs", train=True), ValueError),
        (dict(repeat=10**9), ValueError),
        (dict(seed=-1), ValueError),
    ],
)
def test_the_api_checks_like_the_cli(kwargs, error):
    with pytest.raises(error) as info:
        rt.trace(**kwargs)
    assert "--" not in str(info.value)  # flag names are for the CLI alone
    value = next(iter(kwargs.values()))
    assert repr(value) in str(info.value) or f"{value:,}" in str(info.value) or str(value) in str(info.value)


def test_a_model_built_on_the_cpu_traces_shape_only():
    from resnet_trace.model import ResNet

    t = rt.trace(model=ResNet(4, 2), block="BottleNeck")
    assert t.error is None and t.output_shape == (1, 2)
    bad = rt.trace(model=ResNet(4, 2), input_shape=(1, 3, 256, 256))
    assert bad.error is not None and "256" not in bad.error.message.split("received")[0]
    assert "takes 128 features but received 512" in bad.error.message


def test_check_never_imports_what_a_golden_names(tmp_path):
    evil = tmp_path / "evil.py"
    marker = tmp_path / "ran"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\nfrom torch import nn\nNet = nn.Identity\n")
    doc = rt.trace(base_dim=4).to_dict()
    doc["model"]["source"] = f"{evil}:Net"
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="never runs code"):
        rt.check(golden)
    assert not marker.exists()


def test_the_api_validates_its_arguments():
    with pytest.raises(UsageError):
        trace(base_dim=0)
    with pytest.raises(UsageError):
        trace(input_shape=(1, 4, 224, 224))


def test_trace_train_is_the_cli_document(cli):
    doc = cli.json("summary", "--base-dim", "4", "--train", "--budget", "256MiB", "--optimizer", "sgd")
    assert rt.trace(base_dim=4, train=True, budget="256MiB", optimizer="sgd").to_dict() == doc


def test_trace_backward_on_a_model_instance_matches_autograd():
    torch.manual_seed(0)
    model = _Tied()
    r = rt.trace(model=model, block=nn.Linear, input_shape=(1, 2, 3, 6), backward=True, target=1)
    assert r.train is not None and r.train.target == 1
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, 2, 3, 6), generator=gen)
    out_a = model.a(x)
    out_a.retain_grad()
    logits = model.b(out_a).reshape(1, -1)  # the loss takes each sample's outputs as its logits
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([1]))
    loss.backward()
    rows = {row.name: row for row in r.rows}
    assert rows["a"].grad_norm == pytest.approx(out_a.grad.norm().item(), rel=1e-3)
    assert r.train.loss == pytest.approx(loss.item(), rel=1e-4)
