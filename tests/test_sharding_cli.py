"""``--gpus N --shard MODE`` through the real CLI: summary's per-rank figures, and run --backward's
real sharded step (gloo over loopback, N local processes) measured beside them.

The truth is the engine itself: ``run --backward`` reads each rank's local tensors after a real
FSDP2 / ZeroRedundancyOptimizer / DDP step (resnet_trace.distributed), independently of the
arithmetic (resnet_trace.sharding) that predicts them.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from resnet_trace.cli import app

# beside tests/test_sharding.py's ranks under pytest-xdist, never at the same time
pytestmark = pytest.mark.xdist_group("ranks")

SEED = ["--base-dim", "4", "--head", "adaptive", "-i", "2x3x32x32"]


def _json(*args: str) -> dict:
    r = CliRunner().invoke(app, list(args), prog_name="resnet-trace")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("shard", ["full", "optimizer"])
def test_run_backward_measures_every_rank_of_the_real_sharded_step(shard):
    doc = _json("run", *SEED, "--backward", "--gpus", "2", "--shard", shard, "-f", "json")
    train = doc["train"]
    assert train["gpus"] == 2 and train["shard"] == shard and len(train["ranks"]) == 2
    for r in train["ranks"]:
        for field in ("params_bytes", "grads_bytes", "optimizer_bytes"):
            assert r[field] == r["measured_" + field], (r["rank"], field)
    assert train["peak_bytes"] == max(r["peak_bytes"] for r in train["ranks"])
    # what summary --train predicts for the same step is what the engine held
    summary = _json("summary", *SEED, "--train", "--gpus", "2", "--shard", shard, "-f", "json")["train"]
    assert [(r["params_bytes"], r["grads_bytes"], r["optimizer_bytes"]) for r in summary["ranks"]] == [
        (r["measured_params_bytes"], r["measured_grads_bytes"], r["measured_optimizer_bytes"])
        for r in train["ranks"]
    ]


def test_sharding_divides_what_each_device_holds():
    one = _json("summary", *SEED, "--train", "-f", "json")["train"]
    full = _json("summary", *SEED, "--train", "--gpus", "4", "--shard", "full", "-f", "json")["train"]
    assert len(full["ranks"]) == 4
    # every parameter is split over the ranks: their local bytes add up to the whole model's
    assert sum(r["params_bytes"] for r in full["ranks"]) == one["params_bytes"]
    assert sum(r["optimizer_bytes"] for r in full["ranks"]) == one["optimizer_bytes"]
    ddp = _json("summary", *SEED, "--train", "--gpus", "4", "--shard", "none", "-f", "json")["train"]
    assert all(r["params_bytes"] == one["params_bytes"] for r in ddp["ranks"])


def test_gpus_without_train_or_backward_is_refused():
    r = CliRunner().invoke(app, ["summary", "--gpus", "2"], prog_name="resnet-trace")
    assert r.exit_code == 2 and "train" in r.stderr
