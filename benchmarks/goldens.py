"""Goldens at scale (issue 25): ``check`` of 10,000 documents and ``diff`` of 300,000 rows, this
checkout beside a baseline commit, side by side.

    python benchmarks/goldens.py                      # against 5b74b63 (before goldens at scale)
    python benchmarks/goldens.py --baseline HEAD~3    # against any commit
    python benchmarks/goldens.py --repeat 3           # more alternations (the baseline takes minutes)
    python benchmarks/goldens.py --no-baseline        # this checkout only

The goldens are written to a temporary folder:

* ``check10k.json``: 10,000 documents of the seed at base 4 (``--variant fixed``, a filter that
  shows no row), cycling over the 32 heights the seed's head takes (1x3x193x224 to 1x3x224x224),
  each equal to its trace (exit 0);
* ``a.json`` / ``b.json``: one document of 300,000 minimal schema-valid rows each, every row's
  MACs different (300,000 differences, exit 1), compared in the default table format;
* ``one.json``: one document, the floor a ``check`` costs (Python, torch, one trace).

Each command is a fresh child (``python -m resnet_trace``, the baseline's source first on
``PYTHONPATH``); the baseline is ``git archive``'d into a temporary folder. Wall time, CPU time
(user + system: on a shared machine it moves far less than wall time) and peak RSS
(``ru_maxrss`` from ``os.wait4``) are each child's own; the two sides alternate. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "5b74b63"  # the last commit before goldens at scale
HEIGHTS = range(193, 225)


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float
    rss_kib: int


def measure(cmd: Sequence[str], pythonpath: str, codes: tuple[int, ...]) -> Sample:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            # Not this checkout: ``python -m`` puts the working folder first on sys.path, before
            # PYTHONPATH, and the baseline would run this checkout's code.
            cwd=tempfile.gettempdir(),
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        if code not in codes:
            err.seek(0)
            raise SystemExit(f"exit {code}: {' '.join(cmd)}\n{err.read().decode(errors='replace')[-2000:]}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


def write_goldens(folder: Path) -> dict[str, Path]:
    """The goldens, from this checkout's own ``summary`` (one trace per height)."""
    docs = {}
    for h in HEIGHTS:
        out = subprocess.run(
            [sys.executable, "-m", "resnet_trace", "summary", "--base-dim", "4", "--variant", "fixed"]
            + ["-i", f"1x3x{h}x224", "--filter", "layer_1$", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).stdout
        d = json.loads(out)
        keep = ("schema", "command", "device", "dtype", "input_shape", "output_shape", "depth", "error")
        doc = {k: d[k] for k in keep}
        doc["model"] = {k: d["model"][k] for k in ("base_dim", "num_classes", "variant", "head", "source")}
        doc["filter"], doc["rows"] = "^$", []
        doc["totals"] = {k: d["totals"][k] for k in ("params", "params_unused", "macs", "unused_modules")}
        docs[h] = doc
    paths = {name: folder / f"{name}.json" for name in ("check10k", "one", "a", "b")}
    compact = {"separators": (",", ":")}
    paths["check10k"].write_text(json.dumps([docs[HEIGHTS[i % 32]] for i in range(10_000)], **compact))
    paths["one"].write_text(json.dumps(docs[224], **compact))
    row = {"kind": "block", "depth": "block", "parent": None, "stage": None, "down": None}
    row |= {"in_shape": [1], "out_shape": [1], "skip": None, "params": 0, "params_unused": 0}
    for name, macs in (("a", 0), ("b", 1)):
        rows = [{"name": f"r{i}", **row, "macs": macs} for i in range(300_000)]
        paths[name].write_text(json.dumps({**docs[224], "filter": None, "rows": rows}, **compact))
    return paths


def baseline_tree(ref: str, folder: Path) -> Path:
    archive = folder / "baseline.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), ref], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "baseline", filter="data")
    return folder / "baseline"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline", default=BASELINE, help=f"the commit to compare with (default {BASELINE})"
    )
    parser.add_argument("--no-baseline", action="store_true", help="measure this checkout only")
    parser.add_argument("--repeat", type=int, default=1, help="alternations of the two sides (default 1)")
    parser.add_argument("--write-goldens", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_goldens:
        write_goldens(args.write_goldens)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # Written by a child: a child's ru_maxrss counts its parent's memory at the fork, so this
        # process stays small (300,000 rows as dicts would be ~300 MB of every command's "peak").
        subprocess.run([sys.executable, __file__, "--write-goldens", str(folder)], check=True)
        g = {name: folder / f"{name}.json" for name in ("check10k", "one", "a", "b")}
        sides = {"now": str(ROOT)}
        if not args.no_baseline:
            sides = {"baseline": str(baseline_tree(args.baseline, folder)), **sides}
        tool = [sys.executable, "-m", "resnet_trace"]
        cases = [
            ("check, 1 document (the floor)", [*tool, "check", str(g["one"])], (0,)),
            ("check, 10,000 documents", [*tool, "check", str(g["check10k"])], (0,)),
            ("diff, 300,000 rows, table", [*tool, "diff", str(g["a"]), str(g["b"])], (1,)),
        ]
        size = {k: p.stat().st_size / 2**20 for k, p in g.items()}
        print(
            f"check10k.json {size['check10k']:.1f} MiB; a.json, b.json {size['a']:.1f} MiB each",
            file=sys.stderr,
        )
        print(f"{'case':34} {'side':9} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9}")
        for label, cmd, codes in cases:
            got: dict[str, list[Sample]] = {side: [] for side in sides}
            for _ in range(args.repeat):
                for side, path in sides.items():
                    got[side].append(measure(cmd, path, codes))
            for side, samples in got.items():
                wall = statistics.median(s.wall for s in samples)
                cpu = statistics.median(s.cpu for s in samples)
                rss = max(s.rss_kib for s in samples) / 1024
                print(f"{label:34} {side:9} {wall:8.2f} {cpu:8.2f} {rss:9.0f}")
            if len(sides) == 2:
                b, n = (statistics.median(s.cpu for s in got[k]) for k in ("baseline", "now"))
                print(f"{'':34} {'ratio':9} {'':8} {b / n:7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
