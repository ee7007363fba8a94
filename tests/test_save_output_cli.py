"""``run --save-output FILE`` and ``trace(save_output=...)``: the forward's full outputs in a file.

The expected tensors are the model's own forward on the same input, computed here: the models
set their weights from ``arange``, so the tool's seeding cannot change them, and the input comes
from ``--input-file``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import resnet_trace
from resnet_trace.cli import app

USAGE = 2

MODELS = """
import torch
from torch import nn


def _fixed(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape).sin())
    return module


class Seg(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 5, 1)
        _fixed(self)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Nest(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        _fixed(self)

    def forward(self, x):
        y = self.fc(x)
        return {"logits": y, "parts": (y.relu(), y.sum(dim=-1).expand(4, x.shape[0])), "n": None}
"""


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), prog_name="resnet-trace")


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    namespace: dict = {}
    exec(compile(MODELS, str(path), "exec"), namespace)
    return path, namespace


def _saved_run(tmp_path, models, name: str, x: torch.Tensor, out):
    """``run --model FILE:name`` on ``x`` (an --input-file) saving to ``out``; the result, and the
    model's own forward of ``x`` (its weights come from ``arange``: the same in both)."""
    path, ns = models
    torch.save({"x": x}, tmp_path / "x.pt")
    result = _invoke(
        "run", "--model", f"{path}:{name}", "--input-file", str(tmp_path / "x.pt"), "--save-output", str(out)
    )
    assert result.exit_code == 0, result.output
    with torch.no_grad():
        return result, ns[name]().eval()(x)


def test_one_output_as_npy_holds_the_forwards_values(tmp_path, models):
    x = torch.randn(2, 3, 9, 7, generator=torch.Generator().manual_seed(3))
    out = tmp_path / "seg.npy"
    result, expected = _saved_run(tmp_path, models, "Seg", x, out)
    got = torch.from_numpy(np.load(out))
    assert got.shape == (2, 5, 9, 7)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert f"saved in {out}" in result.stderr


def test_a_nest_as_pt_reads_back_weights_only(tmp_path, models):
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(5))
    out = tmp_path / "nest.pt"
    result, expected = _saved_run(tmp_path, models, "Nest", x, out)
    got = torch.load(out, weights_only=True)
    assert set(got) == {"logits", "parts", "n"} and got["n"] is None
    torch.testing.assert_close(got["logits"], expected["logits"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["parts"][0], expected["parts"][0], rtol=1e-5, atol=1e-6)
    assert got["parts"][1].shape == (4, 3)  # the expand()ed view, written as its logical values
    torch.testing.assert_close(got["parts"][1], expected["parts"][1].contiguous(), rtol=1e-5, atol=1e-6)
    assert "(3 tensors," in result.stderr


def test_the_api_saves_what_a_real_trace_ran(tmp_path, models):
    _, ns = models
    model = ns["Seg"]().eval()
    x = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    out = tmp_path / "api.pt"
    report = resnet_trace.trace(model=model, inputs=x, save_output=out)
    assert report.trace.command == "run"  # save_output implies a real forward
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(torch.load(out, weights_only=True), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-i", "1x3x224x224", "-i", "2x3x224x224", "--save-output", "{d}/o.pt"], "give one --input"),
        (["--save-output", "{d}/o.txt"], "name a file ending in one of .npy, .pt"),
        (["--device", "meta", "--save-output", "{d}/o.npy"], "needs a real device"),
        (["--save-output", "{d}/same.json", "-o", "{d}/same.json", "-f", "json"], "which --output writes"),
        (["--save-output", "{d}/no/such/folder/o.pt"], "--save-output"),
    ],
)
def test_a_file_it_cannot_write_is_one_line_and_exit_2(tmp_path, args, words):
    result = _invoke("run", "--base-dim", "4", *[a.format(d=tmp_path) for a in args])
    assert result.exit_code == USAGE, result.output
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("o.*")) and not list(tmp_path.rglob("*.tmp"))


def test_a_bad_suffix_is_refused_before_the_forward(tmp_path, monkeypatch):
    import resnet_trace.tracer as tracer

    def no_forward(*args, **kwargs):
        raise AssertionError("the forward ran")

    monkeypatch.setattr(tracer, "run_forward", no_forward)
    result = _invoke("run", "--base-dim", "4", "--save-output", str(tmp_path / "o.csv"))
    assert result.exit_code == USAGE, result.output


FAILS_ON_REAL = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if not hasattr(x, "fake_mode") and x.device.type != "meta":
            raise ValueError("real inputs refused")
        return self.fc(x)
"""


def test_a_forward_that_stops_saves_nothing_and_says_so(tmp_path):
    """Exit 3, and a note that nothing was saved: an older file at that path is not this run's."""
    model = tmp_path / "fails.py"
    model.write_text(FAILS_ON_REAL)
    out = tmp_path / "o.pt"
    result = _invoke("run", "--model", f"{model}:Net", "-i", "1x4", "--save-output", str(out))
    assert result.exit_code == 3, result.output
    assert f"note: the forward stopped; nothing saved in {out}" in result.stderr
    assert not out.exists()
