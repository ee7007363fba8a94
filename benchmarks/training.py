"""Predicted against measured peak memory of a real training step of the seed (docs/training.md).

    python benchmarks/training.py                      # base 16 and 32, batches 1 2 4 8, sgd and adam, CPU
    python benchmarks/training.py --base 64 --batch 2 4 --optimizer adamw
    python benchmarks/training.py --device cuda         # on a machine with CUDA
    python benchmarks/training.py --json                # the rows as JSON too

Each measurement is a fresh child process (so the resident memory is clean): it warms the
kernels and every optimizer up on a tiny model, notes its level, builds the seed (default
init), the input and the optimizer, runs two full steps (forward, cross-entropy, backward,
``step``, ``zero_grad``) and reports the peak above its level: on the CPU the resident
high-water mark (VmHWM, reset through /proc/self/clear_refs), on CUDA ``max_memory_allocated``.
The second step is the steady state (Adam's state exists, gradients are allocated afresh).
The prediction is the tool's own ``peak_bytes``, from a shape-only ``--train`` trace.
Exit status 1 when an error is over the target (25% on the CPU, 10% on CUDA).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHILD = r"""
import gc, json, sys
import torch
from resnet_trace.model import ResNet
base, batch, opt, device = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(int(sys.argv[5]))

def optimizer(params, opt):
    return {
        "sgd": lambda: torch.optim.SGD(params, lr=0.01),
        "momentum": lambda: torch.optim.SGD(params, lr=0.01, momentum=0.9),
        "adam": lambda: torch.optim.Adam(params),
        "adamw": lambda: torch.optim.AdamW(params),
    }[opt]()

def step(model, x, o):
    loss = torch.nn.functional.cross_entropy(model(x), torch.zeros(x.shape[0], dtype=torch.long, device=device))
    loss.backward()
    o.step()
    o.zero_grad()

def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

tiny = ResNet(2, 2).to(device)
for name in ("sgd", "momentum", "adam", "adamw"):  # lazy imports and kernels, before the level is noted
    step(tiny, torch.randn(1, 3, 224, 224, device=device), optimizer(list(tiny.parameters()), name))
del tiny
gc.collect()
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
else:
    open("/proc/self/clear_refs", "w").write("5")
    before = vm("VmRSS")
torch.manual_seed(0)
model = ResNet(base, 2).to(device)
x = torch.randn(batch, 3, 224, 224, device=device)
o = optimizer(list(model.parameters()), opt)
step(model, x, o)
first = (torch.cuda.max_memory_allocated() if device == "cuda" else vm("VmHWM")) - before
step(model, x, o)
second = (torch.cuda.max_memory_allocated() if device == "cuda" else vm("VmHWM")) - before
print(json.dumps({"first": first, "second": second}))
"""


def predicted(base: int, batch: int, optimizer: str) -> dict:
    from resnet_trace import api
    from resnet_trace.spec import ModelSpec
    from resnet_trace.training import Optimizer, train_info

    target = api.build_target(ModelSpec(base, 2, "seed", "avgpool7"))
    t = api.trace_shapes(target, (batch, 3, 224, 224), train=True)
    info = train_info(
        model=target.model,
        rows=t.rows,
        activations_bytes=t.totals.activations_bytes,
        optimizer=Optimizer(optimizer),
    )
    return {
        "params": info.params_bytes,
        "optimizer_state": info.optimizer_bytes,
        "activations": info.activations_bytes,
        "transient": info.transient_bytes,
        "peak": info.peak_bytes,
    }


def measure(base: int, batch: int, optimizer: str, device: str, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(base), str(batch), optimizer, device, str(threads)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--optimizer", nargs="+", default=["sgd", "adam"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    target = 0.10 if args.device == "cuda" else 0.25
    rows = []
    head = f"{'base':>4} {'batch':>5} {'optim':>6} {'predicted MiB':>13} {'measured MiB':>12} {'error':>7}"
    print(head + f" {'(1st step MiB)':>14}")
    for base in args.base:
        for batch in args.batch:
            for opt in args.optimizer:
                p = predicted(base, batch, opt)
                m = measure(base, batch, opt, args.device, args.threads)
                err = (p["peak"] - m["second"]) / m["second"]
                rows.append(
                    {"base": base, "batch": batch, "optimizer": opt, **m, "predicted": p, "error": err}
                )
                print(
                    f"{base:>4} {batch:>5} {opt:>6} {p['peak'] / 2**20:>13.1f} {m['second'] / 2**20:>12.1f} "
                    f"{err:>+7.1%} {m['first'] / 2**20:>14.1f}",
                    flush=True,
                )
    worst = max(abs(r["error"]) for r in rows)
    print(f"worst error {worst:.1%} (target {target:.0%} on {args.device})")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0 if worst <= target else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
