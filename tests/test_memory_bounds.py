"""Memory bounded by the work (issue 25, items 2-4): many inputs, budgets on a real model, and an
out-of-memory that is ours to say. Each case runs in a fresh process, measured from outside."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap

import pytest

from resnet_trace.units import human

# one worker under pytest-xdist: these peaks are not measured while another memory test runs
pytestmark = pytest.mark.xdist_group("memory")

USAGE = 2
GIB = 2**30


def _limited(limit: int):
    """A child's address space capped at ``limit`` bytes (``ulimit -v``)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return cap


def _cli(*args: str, limit: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "RESNET_TRACE_MEMORY_LIMIT"}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "resnet_trace", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
        preexec_fn=_limited(limit),
    )


def _seed_forward_bytes(base: int, n: int, h: int = 224) -> int:
    """The guard's figure for the seed at ``base`` on ``n``x3x``h``x``h``, from layer arithmetic:
    (parameters + input + 6 x the largest map) x 4 bytes. The stem's map (base channels at h/2)
    and layer_1's (4 x base channels at h/4) are equal and the largest."""
    import torch

    from resnet_trace.layout import NUM_CLASSES
    from resnet_trace.model import ResNet

    with torch.device("meta"):
        params = sum(p.numel() for p in ResNet(base, NUM_CLASSES).parameters())
    largest = n * base * (h // 2) ** 2
    assert largest == n * 4 * base * (h // 4) ** 2
    return (params + n * 3 * h * h + 6 * largest) * 4


def test_an_allocation_failure_during_run_is_exit_2_out_of_memory_with_the_guards_figure():
    """The guard is told there is room (the environment override), the address space is not: the
    forward's first big allocation fails. Exit 2 in our words, not exit 3 "check the input shape"."""
    limit = 4 * GIB
    result = _cli(
        "run",
        "--base-dim",
        "64",
        "-i",
        "640x3x224x224",
        limit=limit,
        env={"RESNET_TRACE_MEMORY_LIMIT": "1TB"},
    )
    assert result.returncode == USAGE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error: out of memory" in lines[0]
    assert "check the input shape" not in lines[0] and "Traceback" not in result.stderr
    assert f"expected about {human(_seed_forward_bytes(64, 640))} for the forward" in lines[0]
    assert result.stdout == ""


def test_the_guard_reads_the_address_space_limit_and_refuses_up_front():
    limit = 3 * GIB
    result = _cli("run", "--base-dim", "64", "-i", "640x3x224x224", limit=limit)
    assert result.returncode == USAGE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"needs about {human(_seed_forward_bytes(64, 640))}" in lines[0]
    assert "address-space limit (RLIMIT_AS, ulimit -v)" in lines[0]
    # what is left is the limit less what the process maps already: below the limit itself
    room = lines[0].split("of the ")[1].split(" of memory")[0]
    assert room != human(limit)


def test_a_small_forward_under_the_same_limit_still_runs():
    result = _cli("run", "--base-dim", "4", "-i", "1x3x224x224", "--format", "json", limit=3 * GIB)
    assert result.returncode == 0, result.stderr


_BUDGET = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from torch import nn
    import resnet_trace

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # on the CPU, real weights
    fits = [
        resnet_trace.trace(model=model, input_shape=(1, 3, 224, 224), budget=b).train.fit_batch
        for b in ("4GiB", "16GiB")
    ]
    # VmHWM, this process's own peak: ru_maxrss survives exec, so it would carry the peak of
    # the process that started this one (pytest's, over 1 GB late in the suite).
    with open("/proc/self/status") as fh:
        peak = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    print(json.dumps([*fits, peak]))
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the child's VmHWM")
def test_a_budget_on_a_cpu_model_allocates_nothing_that_scales_with_the_batch():
    """The search traces batches whose one 64x224x224 float map alone is over 500 MB; the whole
    process stays under 500 MB, so no batch-sized tensor was real."""
    result = subprocess.run([sys.executable, "-c", _BUDGET], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    fit_4, fit_16, peak_kib = json.loads(result.stdout.strip().splitlines()[-1])
    one_map = 64 * 224 * 224 * 4  # bytes of one conv output per sample
    assert fit_16 > fit_4 and fit_16 * one_map > 500 * 2**20, (fit_4, fit_16)
    assert peak_kib * 1024 < 500 * 2**20, f"peak RSS {peak_kib / 1024:.0f} MiB"


_PEAK = """
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_many_inputs_hold_little_more_than_one():
    """A sweep of 800 heights through the real command, traced and written as one JSON array:
    peak RSS within 1.2x one input's. Equal rows are shared, young garbage is collected after
    each input, and each input's document is written as it is rendered, as every format's text
    is (before: 1.37x at 800 inputs, 1.7x at 1,500; the table's figures at 10,000 inputs are in
    docs/performance.md)."""
    peaks = []
    for shape in ("1x3x224x224", "1x3x1-800x224"):
        argv = [sys.executable, "-m", "resnet_trace", "summary", "--base-dim", "4", "-f", "json", "-i", shape]
        out = subprocess.run(
            [sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True, timeout=900
        )
        code, peak = (int(v) for v in out.stdout.split())
        assert code == (0 if shape.endswith("224x224") else 3), (
            out.stderr
        )  # heights under 193 stop at avgpool
        peaks.append(peak)
    one, lots = peaks
    assert lots <= 1.2 * one, f"{lots / 1024:.0f} MiB for 800 inputs, {one / 1024:.0f} MiB for one"
