"""Issue 25: what ``run`` costs is bounded by the work the model does, not by the size of its output.

The yardstick is measured here, not assumed: a bare script that imports torch, builds the same
model and runs its forward under ``no_grad`` (what the tool's own forward has to do at least).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# one worker under pytest-xdist: these peaks are not measured while another memory test runs
pytestmark = pytest.mark.xdist_group("memory")

POSIX = pytest.mark.skipif(os.name != "posix", reason="ru_maxrss of a child is POSIX")

SEGMENTATION = """
import torch
from torch import nn


class Seg(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.r = nn.ReLU()
        self.b = nn.Conv2d(8, 21, 1)

    def forward(self, x):
        return self.b(self.r(self.a(x)))
"""

BARE = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from seg import Seg
with torch.no_grad():
    y = Seg().eval()(torch.randn(1, 3, 512, 512))
print(tuple(y.shape))
"""

# Runs argv[1:] as a child and prints its exit code and peak RSS (the only child, so the figure is its own).
PEAK = """
import json, resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"code": p.returncode, "err": p.stderr[-2000:], "out": p.stdout[-2000:], "peak": peak}))
"""


def _peak(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PEAK, *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@POSIX
def test_a_segmentation_run_writes_a_small_document_within_1_5x_the_forwards_own_memory(tmp_path):
    """Conv2d(3,8) -> ReLU -> Conv2d(8,21) at 1x3x512x512: 5,505,024 output values. The JSON
    carries the output's shape, dtype and statistics (under 1 MB, it was 171 MB), and the run's
    peak RSS stays within 1.5x the bare forward's (it was 1.2 GB)."""
    (tmp_path / "seg.py").write_text(SEGMENTATION)
    bare = _peak(sys.executable, "-c", BARE, str(tmp_path))
    assert bare["code"] == 0, bare["err"]
    assert bare["out"].strip() == "(1, 21, 512, 512)"
    out = tmp_path / "run.json"
    tool = _peak(
        sys.executable, "-m", "resnet_trace", "run", "--model", f"{tmp_path / 'seg.py'}:Seg",
        "-i", "1x3x512x512", "--format", "json", "-o", str(out),
    )  # fmt: skip
    assert tool["code"] == 0, tool["err"]
    assert out.stat().st_size < 2**20, out.stat().st_size
    doc = json.loads(out.read_text())
    (first,) = doc["outputs"]
    assert first["shape"] == [1, 21, 512, 512]
    stats = first["stats"]
    assert stats is not None and stats["min"] <= stats["mean"] <= stats["max"]
    assert tool["peak"] <= 1.5 * bare["peak"], (tool["peak"] / 2**20, bare["peak"] / 2**20)


HOOK_OSERROR = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def register_forward_pre_hook(self, *args, **kwargs):
        raise OSError(28, "the model's own disk is full")

    def forward(self, x):
        return self.fc(x)
"""


def _invoke(*args: str):
    from typer.testing import CliRunner

    from resnet_trace.cli import app

    return CliRunner().invoke(app, list(args), prog_name="resnet-trace")


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "csv", "markdown"])
def test_a_sweep_traced_in_runs_writes_what_one_run_writes(monkeypatch, fmt):
    """More inputs than ``pipeline.STREAM_RUN`` are traced run by run and each document or table
    written as it comes: the bytes equal those of one run holding every trace."""
    import resnet_trace.pipeline as pipeline

    args = ("summary", "--base-dim", "4", "-f", fmt, "-i", "1x3x190-197x224", "-i", "2x3x224x224")
    whole = _invoke(*args)
    monkeypatch.setattr(pipeline, "STREAM_RUN", 3)  # 9 inputs: runs of 3, 3 and 3
    runs = _invoke(*args)
    assert (runs.exit_code, runs.stdout, runs.stderr) == (whole.exit_code, whole.stdout, whole.stderr)
    assert whole.exit_code == 3 and whole.stdout.count("190") >= 1  # heights under 193 stop at avgpool


def test_a_failure_while_the_output_is_made_is_the_models_not_the_files(tmp_path):
    """The document is written while the traces are made: an OSError the model raises then (here
    from registering a hook) is the model's failure, exit 3, and no file or temporary is left."""
    model = tmp_path / "m.py"
    model.write_text(HOOK_OSERROR)
    out = tmp_path / "out.json"
    result = _invoke("summary", "--model", f"{model}:Net", "-i", "1x4", "-f", "json", "-o", str(out))
    assert result.exit_code == 3, result.output
    assert "the model's code failed" in result.stderr and "disk is full" in result.stderr
    assert "cannot be written" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py"]


def test_a_refused_input_in_a_later_run_is_refused_before_any_output(monkeypatch):
    """Every input of a streamed sweep is checked before the first run is traced: a 4-channel
    input after 5 good ones (runs of 3) is exit 2 with nothing on stdout, as an unstreamed list is."""
    import resnet_trace.pipeline as pipeline

    monkeypatch.setattr(pipeline, "STREAM_RUN", 3)
    result = _invoke(
        "summary", "--base-dim", "4", "-f", "jsonl", "-i", "1x3x220-224x224", "-i", "1x4x224x224"
    )
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "has 4 channels" in result.stderr


@POSIX
def test_a_reader_that_goes_away_still_gets_the_exit_code_of_every_input():
    """``| head -1`` reads one document and closes the pipe; the inputs after it still count: the
    one that stops is named on stderr and the exit code is 3."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "resnet_trace", "summary", "--base-dim", "4", "-f", "jsonl",
         "-i", "1x3x200-224x224", "-i", "1x3x1x224"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 3, err
    assert json.loads(first)["input_shape"] == [1, 3, 200, 224]
    assert "1x3x1x224: stopped at avgpool" in err and "Traceback" not in err
