"""Activation statistics against torch's own reductions (``Tensor.std``, ``==``), including edge values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from resnet_trace import trace
from resnet_trace.recorder import ActivationStats


def truth(t: torch.Tensor) -> tuple[float, float, float, float, float]:
    f = t.detach().reshape(-1)
    if f.dtype != torch.float64:
        f = f.float()
    std = f.std().item() if f.numel() > 1 else 0.0
    return f.mean().item(), std, f.min().item(), f.max().item(), (f == 0).sum().item() / f.numel()


def same(a: float, b: float, rel: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=rel, abs=1e-12)


CASES = {
    "relu": lambda: torch.relu(torch.randn(4, 64, 28, 28)),
    "offset": lambda: torch.relu(torch.randn(2, 8, 56, 56)) * 3 + 10,  # mean >> std
    "negative zero": lambda: torch.tensor([0.0, -0.0, 1.0, -2.0]),
    "nan": lambda: torch.tensor([0.0, -0.0, 1.0, float("nan")]),
    "inf": lambda: torch.tensor([float("inf"), 0.0, -1.0]),
    "all zero": lambda: torch.zeros(7),
    "one value": lambda: torch.tensor([3.0]),
    "half": lambda: torch.randn(33).half(),
    "bfloat16": lambda: torch.randn(2, 5).bfloat16().relu(),
    "float64": lambda: torch.randn(17, dtype=torch.float64).relu(),
    "transposed": lambda: torch.arange(12.0).reshape(3, 4).t(),
    "over 2**24": lambda: torch.relu(torch.randn(2**24 + 3)),
    "mild offset, one pass": lambda: torch.randn(3, 1000) + 2.0,  # mean**2 / var = 4
    "large offset, centred": lambda: torch.randn(3, 1000) * 0.01 + 100.0,
    "huge": lambda: torch.randn(5000) * 1e25,  # squares overflow float32
    "tiny": lambda: torch.randn(5000) * 1e-30,  # squares underflow float32
    "constant": lambda: torch.full((2049,), 3.25),
    "not a multiple of a row": lambda: torch.randn(1024 * 3 + 17),
    "centred, several chunks": lambda: torch.randn(3 * 2**18 + 5) * 0.01 + 100.0,
    "float64 zeros, several chunks": lambda: torch.randn(2**19 + 1, dtype=torch.float64).relu(),
}


@pytest.mark.parametrize("name", list(CASES))
def test_statistics_match_torch(name: str) -> None:
    torch.manual_seed(0)
    t = CASES[name]()
    got = ActivationStats()(t)
    assert got is not None
    mean, std, low, high, zeros = truth(t)
    assert same(got.mean, mean, 1e-6)
    assert same(got.std, std, 2e-6)
    assert same(got.min, low, 0) and same(got.max, high, 0)
    assert got.zero_fraction == zeros  # an exact count, NaN not counted as zero


def test_one_measure_serves_tensors_of_every_size_and_dtype_in_turn() -> None:
    """The recorder keeps one ``ActivationStats`` (and its scratch buffer) for a whole forward."""
    torch.manual_seed(0)
    measure = ActivationStats()
    for t in (
        torch.relu(torch.randn(2**20 + 7)),
        torch.relu(torch.randn(3, dtype=torch.float64)),
        torch.randn(2**18 - 1) * 0.01 + 50.0,
        torch.relu(torch.randn(2**19, dtype=torch.float64)),
        torch.zeros(5),
    ):
        measure.forget()
        got = measure(t)
        assert got is not None
        mean, std, low, high, zeros = truth(t)
        assert same(got.mean, mean, 1e-6) and same(got.std, std, 2e-6)
        assert got.min == low and got.max == high and got.zero_fraction == zeros


def test_a_tensor_is_measured_once_until_an_operation_runs() -> None:
    measure = ActivationStats()
    t = torch.relu(torch.randn(1000))
    first = measure(t)
    assert measure(t) is first  # the same tensor, nothing run since: measured once
    t.zero_()
    measure.forget()  # what the recorder does on every operation of the model
    again = measure(t)
    assert again is not None and again.zero_fraction == 1.0 and again.max == 0.0


class _ZeroedThroughData(nn.Module):
    """Writes its output through ``.data``, which no version counter sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y.data.zero_()
        return y


class _InferenceInside(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.conv(x)


class _Net(nn.Module):
    def __init__(self, block: type[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(block(), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def _layer_trace(block: type[nn.Module]):
    """A real trace, at layer depth, of ``block`` followed by an identity."""
    return trace(model=_Net(block), input_shape=(1, 3, 8, 8), real=True, depth="layer", block=block.__name__)


def test_a_block_that_rewrites_its_output_is_measured_after_the_rewrite() -> None:
    torch.manual_seed(0)
    t = _layer_trace(_ZeroedThroughData)
    block = next(r for r in t.rows if r.name == "blocks.0")
    assert block.activation is not None
    assert block.activation.zero_fraction == 1.0 and block.activation.max == 0.0


def test_inference_tensors_are_measured() -> None:
    # an inference tensor has no version counter: the statistics must not need one
    t = _layer_trace(_InferenceInside)
    assert t.trace.error is None
    rows = [r for r in t.rows if r.name.startswith("blocks.0")]
    assert rows and all(r.activation is not None for r in rows)
    a = rows[0].activation
    assert a is not None and a.min <= a.mean <= a.max and 0.0 <= a.zero_fraction <= 1.0


def test_a_new_tensor_with_the_same_values_reuses_nothing_stale() -> None:
    measure = ActivationStats()
    a = measure(torch.ones(64))
    b = measure(torch.full((64,), 2.0))
    assert a is not None and b is not None and (a.mean, b.mean) == (1.0, 2.0)


def test_nothing_to_measure() -> None:
    measure = ActivationStats()
    assert measure(torch.empty(0)) is None
    assert measure(torch.empty(3, device="meta")) is None
    assert measure((1, "x")) is None
