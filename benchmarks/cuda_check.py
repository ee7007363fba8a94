"""A short, prepared check of ``run --device cuda`` on a machine with an NVIDIA GPU.

Not part of the test suite (CI has no GPU). Run from the repository root:
``python benchmarks/cuda_check.py`` (with the package importable). Exits non-zero on a failure.
Checks: cuda runs and gives the CPU's logits (same seed: weights are initialised on the CPU),
per-block CUDA-event times are positive, ``auto`` picks cuda, half precisions run, the memory
guard refuses a forward larger than the GPU, and ``summary`` is unaffected.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

FAILURES: list[str] = []


def tool(*args: str) -> tuple[int, dict | None, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "resnet_trace", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    doc = None
    if proc.stdout.strip().startswith("{"):
        doc = json.loads(proc.stdout)
    return proc.returncode, doc, proc.stderr.strip(), wall


def expect(ok: bool, what: str) -> None:
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        FAILURES.append(what)


def main() -> int:
    import torch

    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}", flush=True)
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name(0)}", flush=True)
    common = ["--format", "json", "--input", "2x3x224x224", "--seed", "1"]
    rc, gpu, err, wall = tool("run", "--device", "cuda", "--repeat", "5", *common)
    expect(rc == 0 and gpu is not None, f"run --device cuda --repeat 5 exits 0 ({wall:.1f}s) {err}")
    rc, cpu, err, _ = tool("run", "--device", "cpu", *common)
    expect(rc == 0 and cpu is not None, f"run --device cpu exits 0 {err}")
    if gpu and cpu:
        expect(gpu["device"] == "cuda", f"device recorded as {gpu['device']}")
        lg, lc = torch.tensor(gpu["logits"]), torch.tensor(cpu["logits"])
        diff = (lg - lc).abs().max().item()
        expect(
            torch.allclose(lg, lc, rtol=1e-2, atol=1e-3),
            f"cuda logits match cpu logits (max diff {diff:.2e})",
        )
        same = [(r["name"], r["out_shape"], r["skip"], r["macs"]) for r in gpu["rows"]] == [
            (r["name"], r["out_shape"], r["skip"], r["macs"]) for r in cpu["rows"]
        ]
        expect(same, "same rows (names, shapes, skips, MACs) on cuda and cpu")
        times = [r["time_ms"] for r in gpu["rows"] if r["kind"] == "bottleneck"]
        expect(
            all(t > 0 for t in times),
            f"16 CUDA-event block times > 0 (sum {sum(times):.3f} ms, "
            f"forward {gpu['run']['forward_ms']:.3f} ms, hook overhead {gpu['run']['hook_overhead_ms']:.3f} ms)",
        )
        for r in gpu["rows"][:4]:
            print(f"  {r['name']}: {r['time_ms']:.4f} ms, std {r['activation']['std']:.4g}")
    rc, auto, err, _ = tool("run", "--device", "auto", "--base-dim", "8", "--format", "json")
    expect(rc == 0 and auto is not None and auto["device"] == "cuda", f"--device auto picks cuda {err}")
    for dtype in ("float16", "bfloat16"):
        rc, doc, err, _ = tool("run", "--device", "cuda", "--dtype", dtype, "--format", "json")
        expect(rc == 0 and doc is not None and doc["dtype"] == dtype, f"--dtype {dtype} on cuda {err}")
    rc, _, err, wall = tool("run", "--device", "cuda", "--base-dim", "256", "--input", "4096x3x224x224")
    expect(
        rc == 2 and "summary" in err,
        f"memory guard refuses 4096x3x224x224 at base_dim 256 on the GPU in {wall:.1f}s: {err[:200]}",
    )
    rc, doc, err, _ = tool("summary", "--format", "json")
    expect(
        rc == 0 and doc is not None and doc["totals"]["macs"] == 5_368_434_688, f"summary unaffected {err}"
    )
    print(f"{len(FAILURES)} failed" if FAILURES else "all passed", flush=True)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
