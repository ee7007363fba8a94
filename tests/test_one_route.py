"""One route: ``trace()`` honours every option for a model passed in as for the built-in one, or refuses it.

Expected values come from a plain forward of an independent copy of the model, never from the tool.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

import resnet_trace as rt
from resnet_trace.model import ResNet


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.head(y.mean(dim=(2, 3)))


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_model_passed_in_honours_dtype_weights_and_input_file(tmp_path):
    torch.manual_seed(1)
    model = Small().eval()
    before = _state(model)
    other = Small()
    with torch.no_grad():
        for p in other.parameters():
            p.uniform_(-1, 1)
    weights = tmp_path / "w.pt"
    torch.save(other.state_dict(), weights)
    x = torch.rand(2, 3, 9, 9)
    xfile = tmp_path / "x.pt"
    torch.save(x, xfile)

    r = rt.trace(model=model, real=True, dtype="bfloat16", weights=weights, input_file=xfile)

    truth = copy.deepcopy(other).eval().to(torch.bfloat16)
    with torch.no_grad():
        expected = truth(x.to(torch.bfloat16)).float()
    got = torch.tensor(r.trace.run.logits)
    assert r.trace.dtype == "bfloat16"
    assert r.trace.input_shape == (2, 3, 9, 9)
    assert r.trace.run.weights == str(weights) and r.trace.run.input_file == str(xfile)
    assert torch.equal(got, expected)
    # the caller's model is as it was: its weights, its dtype, its mode
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert not model.training


def test_the_built_in_model_takes_the_same_options(tmp_path):
    torch.manual_seed(2)
    seed = ResNet(4, 3)
    weights = tmp_path / "seed.pt"
    torch.save(seed.state_dict(), weights)
    x = torch.rand(1, 3, 224, 224)
    xfile = tmp_path / "x.pt"
    torch.save(x, xfile)

    r = rt.trace(base_dim=4, num_classes=3, real=True, dtype="bfloat16", weights=weights, input_file=xfile)

    truth = copy.deepcopy(seed).eval().to(torch.bfloat16)
    with torch.no_grad():
        expected = truth(x.to(torch.bfloat16)).float()
    assert r.trace.dtype == "bfloat16"
    assert torch.equal(torch.tensor(r.trace.run.logits), expected)


def test_a_model_passed_in_passes_the_memory_guard(monkeypatch):
    monkeypatch.setenv("RESNET_TRACE_MEMORY_LIMIT", "1MiB")
    from resnet_trace.errors import UsageError

    with pytest.raises(UsageError, match="run 64x3x224x224 needs about"):
        rt.trace(model=Small(), real=True, input_shape=(64, 3, 224, 224))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(base_dim=7),
        dict(num_classes=3),
        dict(variant="fixed"),
        dict(head="adaptive"),
        dict(repeat=3),
        dict(seed=1),
        dict(top_k=2),
        dict(device="meta"),
        dict(target=1),
        dict(optimizer="sgd"),
    ],
)
def test_an_option_that_does_not_apply_is_refused_not_ignored(kwargs):
    with pytest.raises(ValueError) as info:
        rt.trace(model=Small(), **kwargs)
    name = next(iter(kwargs))
    assert name in str(info.value) or "built-in" in str(info.value)


def test_a_cuda_free_machine_still_traces_a_meta_model_in_its_own_dtype():
    with torch.device("meta"):
        model = Small().to(torch.float16)
    r = rt.trace(model=model, input_shape=(1, 3, 8, 8))
    assert r.trace.device == "meta" and r.trace.dtype == "float16"


def test_budget_80GB_means_the_same_to_the_flag_and_the_environment(monkeypatch):
    from resnet_trace.memory import limit_override, parse_budget

    monkeypatch.setenv("RESNET_TRACE_MEMORY_LIMIT", "80GB")
    assert limit_override() == parse_budget("80GB") == 80 * 10**9
    monkeypatch.setenv("RESNET_TRACE_MEMORY_LIMIT", "24GiB")
    assert limit_override() == parse_budget("24GiB") == 24 * 2**30
    assert os.environ["RESNET_TRACE_MEMORY_LIMIT"] == "24GiB"
