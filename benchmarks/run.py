"""Time resnet-trace against its baselines, whole commands side by side.

    python benchmarks/run.py               # the targets of docs/performance.md; exit 1 if one is missed
    python benchmarks/run.py --repeat 21   # more repetitions, a narrower interval (default 11)
    python benchmarks/run.py --json        # also print the results as JSON (the table goes to stderr)
    python benchmarks/run.py --only run    # only the rows whose key contains "run"
    python benchmarks/run.py --scaling     # how summary and run grow with base_dim and batch
    python benchmarks/run.py --commands    # the exact commands compared

Exit status: 0 every target met (or skipped), 1 a target missed, 2 a measured command failed.

Every measurement is a fresh child process started from this interpreter
(``sys.executable -m resnet_trace ...``), so Python's start-up and ``import torch``
are included, as a user sees them. The two commands of a pair alternate
(A, B, A, B, ...) after one discarded warm-up of each, so that a slow spell of the
machine hits both; medians are compared. Wall time is measured around the child;
peak memory is the child's own ``ru_maxrss`` from ``os.wait4``. Each ratio comes with a 90%
bootstrap interval (the pairs resampled together): on a shared machine one command's time can
move by a third from one run to the next, and the interval says how far the ratio itself could.

Like with like: the console script ends with ``os._exit`` (no interpreter teardown), so every
baseline that imports torch ends with ``os._exit(0)`` too, torchinfo's included.
``summary --model`` on the transformers ResNet-50 and ViT-B/16 loads a model file written to a
temporary folder (the tool builds the model on ``meta``); torchinfo builds the same model on the
CPU as a user would. Both children import transformers and build the model.

Bytecode like the baselines': torch, Typer and Rich were compiled to ``.pyc`` when pip installed
them, but an editable checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as on our CI machines)
would recompile resnet_trace from source in every child, 50-70 ms here. The script therefore
compiles the package's bytecode (``compileall``, into its ``__pycache__``) before measuring.

Standard library only; installs nothing. A row is skipped when its baseline's imports
(torchinfo, transformers) fail in the child environment.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

PY = sys.executable
TOOL = (PY, "-m", "resnet_trace")

# Children that build a model themselves: the baselines the tool is held to. The console script
# ends with os._exit (no interpreter teardown, 0.35 s after ``import torch``), so every baseline
# that imports torch ends the same way: like with like.
EXIT = "import os; os._exit(0)\n"
FLOOR_SCRIPT = "import torch, os; os._exit(0)"
# The console script turns the cyclic collector off before it imports torch, which makes that import
# about 0.1 s faster here; this floor does the same, so the ratio against it is our own work alone.
FLOOR_NOGC_SCRIPT = "import gc; gc.disable(); import torch, os; os._exit(0)"

TORCHINFO_SCRIPT = (
    """\
import torchinfo
from resnet_trace.model import ResNet
torchinfo.summary(ResNet(64, 2), input_size=(1, 3, 224, 224), verbose=0)
"""
    + EXIT
)

BARE_FORWARD_SCRIPT = (
    """\
import torch
from resnet_trace.model import ResNet
torch.manual_seed(0)
m = ResNet(64, 2).eval()
with torch.no_grad():
    m(torch.randn(8, 3, 224, 224))
"""
    + EXIT
)

#: The transformers models for ``summary --model``: a file the tool loads (it builds them on ``meta``).
HF_MODELS_FILE = """\
from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification


def resnet50():
    return ResNetForImageClassification(ResNetConfig())


def vit_b16():
    return ViTForImageClassification(ViTConfig())
"""

#: torchinfo on the same models, built on the CPU as a user would (default init included).
HF_TORCHINFO_SCRIPT = """\
import torchinfo
import transformers as tf
model = tf.{cls}(tf.{config}())
torchinfo.summary(model, input_size=(1, 3, 224, 224), verbose=0)
"""

HF_DIR = os.path.join(tempfile.gettempdir(), f"resnet-trace-bench-{os.getpid()}")
HF_FILE = os.path.join(HF_DIR, "hf_models.py")

#: Llama-3 at its published sizes (the config values Meta published), as ``config.json`` files.
LLAMA3 = {
    "llama3-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
    },
    "llama3-70b": {
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
    },
}
LLAMA3_COMMON = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128256,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-05,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
}
LLM_TOKENS = 8192

#: The yardstick for an LLM's shape-only trace: import transformers, build the model from the same
#: config on fake tensors and run its forward on 1 x 8192 fake token ids, nothing else.
LLM_BARE_SCRIPT = (
    """import json, torch, transformers
from torch._subclasses.fake_tensor import FakeTensorMode
raw = json.load(open({path!r}))
config = transformers.AutoConfig.for_model(raw.pop("model_type"), **{{k: v for k, v in raw.items() if k != "architectures"}})
mode = FakeTensorMode(allow_non_fake_inputs=True)
with mode:
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        model(input_ids=torch.zeros(1, {tokens}, dtype=torch.long))
"""
    + EXIT
)


def _llm_pair(key: str) -> Pair:
    path = os.path.join(HF_DIR, key, "config.json")
    return Pair(
        key,
        (*TOOL, "summary", "--model", path, "--input", f"input_ids=1x{LLM_TOKENS}:int64", "--format", "json"),
        (PY, "-c", LLM_BARE_SCRIPT.format(path=path, tokens=LLM_TOKENS)),
        needs="transformers",
    )


def _hf_pair(key: str, factory: str, cls: str, config: str) -> Pair:
    return Pair(
        key,
        (*TOOL, "summary", "--model", f"{HF_FILE}:{factory}", "--input", "1x3x224x224", "--format", "json"),
        (PY, "-c", HF_TORCHINFO_SCRIPT.format(cls=cls, config=config) + EXIT),
        needs="torchinfo, transformers",
    )


#: 32 input sizes the seed's AvgPool2d(7, 1) head accepts (193 to 224).
MANY_INPUTS = tuple(arg for side in range(193, 225) for arg in ("--input", f"1x3x{side}x{side}"))

RUN = (*TOOL, "run", "--input", "8x3x224x224", "--format", "json")


@dataclass(frozen=True)
class Pair:
    """Two commands measured alternately; ``needs``: modules (comma-separated) both children import."""

    key: str
    a: tuple[str, ...]
    b: tuple[str, ...]
    needs: str | None = None


@dataclass(frozen=True)
class Target:
    """One row of the table: median(A) / median(B) of ``metric`` must be at most ``limit``.

    With ``judged`` False the row is shown for information: it never fails the run.
    """

    key: str
    name: str
    pair: str
    metric: str  # "wall_s" or "peak_kib"
    limit: float
    judged: bool = True


PAIRS: tuple[Pair, ...] = (
    Pair("help", (*TOOL, "--help"), (PY, "-c", "import typer, rich")),
    Pair("summary-vs-floor", (*TOOL, "summary", "--format", "json"), (PY, "-c", FLOOR_SCRIPT)),
    Pair("summary-vs-floor-nogc", (*TOOL, "summary", "--format", "json"), (PY, "-c", FLOOR_NOGC_SCRIPT)),
    Pair(
        "summary-vs-torchinfo",
        (*TOOL, "summary", "--format", "json"),
        (PY, "-c", TORCHINFO_SCRIPT),
        needs="torchinfo",
    ),
    Pair(
        "summary-big",
        (*TOOL, "summary", "--base-dim", "512", "--input", "1024x3x224x224", "--format", "json"),
        (*TOOL, "summary", "--format", "json"),
    ),
    Pair(
        "summary-32-inputs",
        (*TOOL, "summary", "--format", "json", *MANY_INPUTS),
        (*TOOL, "summary", "--format", "json"),
    ),
    _hf_pair("hf-resnet50", "resnet50", "ResNetForImageClassification", "ResNetConfig"),
    _hf_pair("hf-vit-b16", "vit_b16", "ViTForImageClassification", "ViTConfig"),
    Pair("run-vs-bare", RUN, (PY, "-c", BARE_FORWARD_SCRIPT)),
    Pair("run-layer", (*RUN, "--depth", "layer"), RUN),
    _llm_pair("llama3-8b"),
    _llm_pair("llama3-70b"),
)

TARGETS: tuple[Target, ...] = (
    Target("help", "--help / import typer, rich", "help", "wall_s", 2.0),
    Target("summary-vs-floor", "summary / import torch + os._exit", "summary-vs-floor", "wall_s", 1.05),
    Target(
        "summary-vs-floor-nogc",
        "summary / gc off, import torch + os._exit",
        "summary-vs-floor-nogc",
        "wall_s",
        1.05,
        judged=False,
    ),
    Target("summary-vs-torchinfo", "summary / torchinfo.summary", "summary-vs-torchinfo", "wall_s", 0.9),
    Target("summary-big-wall", "summary 512 x 1024 / default, wall", "summary-big", "wall_s", 1.2),
    Target("summary-big-memory", "summary 512 x 1024 / default, peak RSS", "summary-big", "peak_kib", 1.2),
    Target("summary-32-inputs", "summary 32 inputs / 1 input", "summary-32-inputs", "wall_s", 1.5),
    Target("hf-resnet50", "summary --model HF ResNet-50 / torchinfo", "hf-resnet50", "wall_s", 0.8),
    Target("hf-vit-b16", "summary --model HF ViT-B/16 / torchinfo", "hf-vit-b16", "wall_s", 0.8),
    Target("run-vs-bare", "run 8x3x224x224 / bare forward + os._exit", "run-vs-bare", "wall_s", 1.05),
    Target("run-layer", "run --depth layer / run", "run-layer", "wall_s", 1.15),
    Target(
        "llama3-8b",
        "summary Llama-3-8B config, 1x8192 / bare FakeTensorMode forward",
        "llama3-8b",
        "wall_s",
        1.5,
    ),
    Target(
        "llama3-70b",
        "summary Llama-3-70B config, 1x8192 / bare FakeTensorMode forward",
        "llama3-70b",
        "wall_s",
        1.5,
    ),
    Target(
        "llama3-70b-memory",
        "summary Llama-3-70B config, peak RSS / bare (and below 1.5 GiB: median A)",
        "llama3-70b",
        "peak_kib",
        2.5,
        judged=False,
    ),
)

#: ``--scaling``: (base_dim, batch) for summary, and the smaller grid a real forward can afford here.
SUMMARY_GRID: tuple[tuple[int, int], ...] = (
    (64, 1),
    (64, 1024),
    (256, 1),
    (256, 1024),
    (512, 1),
    (512, 1024),
)
RUN_GRID: tuple[tuple[int, int], ...] = ((16, 1), (16, 8), (64, 1), (64, 8), (256, 1), (256, 8))


@dataclass(frozen=True)
class Sample:
    """One child process: wall seconds, CPU seconds (user + system) and peak resident set size in KiB."""

    wall_s: float
    cpu_s: float
    peak_kib: int


class CommandFailed(Exception):
    """A measured command exited non-zero: its numbers would mean nothing."""


def _peak_kib(ru_maxrss: int) -> int:
    # Linux reports KiB; macOS reports bytes.
    return ru_maxrss // 1024 if sys.platform == "darwin" else ru_maxrss


def measure(cmd: Sequence[str]) -> Sample:
    """Run ``cmd`` once with stdout discarded; its wall time and peak RSS (from ``os.wait4``)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # the child is reaped: tell Popen
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            raise CommandFailed(f"exit {proc.returncode}: {_show(cmd)}\n  " + "\n  ".join(tail))
    return Sample(wall, usage.ru_utime + usage.ru_stime, _peak_kib(usage.ru_maxrss))


def alternate(a: Sequence[str], b: Sequence[str], repeat: int) -> tuple[list[Sample], list[Sample]]:
    """One discarded warm-up of each, then A, B, A, B, ... ``repeat`` times."""
    measure(a)
    measure(b)
    samples_a: list[Sample] = []
    samples_b: list[Sample] = []
    for _ in range(repeat):
        samples_a.append(measure(a))
        samples_b.append(measure(b))
    return samples_a, samples_b


def compile_package() -> bool:
    """Write the package's ``.pyc`` files, as pip does when it installs a wheel (see the docstring)."""
    where = child_output("import os, resnet_trace; print(os.path.dirname(resnet_trace.__file__))")
    return where is not None and bool(compileall.compile_dir(where, quiet=1))


def child_output(code: str) -> str | None:
    """What ``python -c code`` prints, or None when it fails (e.g. a module that is not installed)."""
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


@dataclass(frozen=True)
class Machine:
    """The header: CPUs, OS, Python, the versions the children import, and how busy the machine was."""

    cpu_count: int | None
    cpus_usable: int | None
    platform: str
    processor: str
    python: str
    executable: str
    torch: str | None
    resnet_trace: str | None
    revision: str | None
    torchinfo: str | None
    load_at_start: float | None
    load_at_end: float | None = None

    @property
    def busy(self) -> bool:
        """Other work was running: more than half the CPUs' worth of load at either end."""
        cpus = self.cpus_usable or self.cpu_count or 1
        loads = [v for v in (self.load_at_start, self.load_at_end) if v is not None]
        return bool(loads) and max(loads) > 0.5 * cpus


def load_average() -> float | None:
    """The 1-minute load average: other work on the machine stretches every wall time."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def git_revision() -> str | None:
    """The checkout these numbers belong to (``git describe --always --dirty``), when there is one."""
    try:
        proc = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def machine() -> Machine:
    return Machine(
        cpu_count=os.cpu_count(),
        cpus_usable=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        platform=platform.platform(),
        processor=platform.processor() or platform.machine(),
        python=platform.python_version(),
        executable=PY,
        torch=child_output("import torch; print(torch.__version__)"),
        resnet_trace=child_output("import resnet_trace; print(resnet_trace.__version__)"),
        revision=git_revision(),
        torchinfo=child_output("import importlib.metadata as m; print(m.version('torchinfo'))"),
        load_at_start=load_average(),
    )


@dataclass(frozen=True)
class Result:
    """A row of the report; ``status`` is PASS, FAIL or SKIP."""

    key: str
    name: str
    metric: str
    median_a: float | None
    median_b: float | None
    ratio: float | None
    limit: float
    status: str
    note: str = ""
    cpu_ratio: float | None = None  # the same ratio in CPU seconds: less sensitive to other work
    interval: tuple[float, float] | None = None  # 90% bootstrap interval of ``ratio``


def median_of(samples: Sequence[Sample], metric: str) -> float:
    return statistics.median(getattr(s, metric) for s in samples)


#: Resamples for the interval of a ratio; seeded, so the same samples always give the same interval.
BOOTSTRAP = 2000


def ratio_interval(a: Sequence[float], b: Sequence[float], level: float = 0.9) -> tuple[float, float]:
    """A percentile-bootstrap interval for median(a) / median(b).

    The runs were alternated, so A's i-th and B's i-th ran side by side: pairs are resampled
    together, keeping what a slow spell of the machine did to both. The interval says how far
    the ratio could move if the same number of runs were taken again on this machine.
    """
    rng = random.Random(0)
    n = len(a)
    ratios = []
    for _ in range(BOOTSTRAP):
        picks = [rng.randrange(n) for _ in range(n)]
        ratios.append(statistics.median(a[i] for i in picks) / statistics.median(b[i] for i in picks))
    ratios.sort()
    tail = (1 - level) / 2
    return ratios[int(tail * (BOOTSTRAP - 1))], ratios[int((1 - tail) * (BOOTSTRAP - 1))]


def judge(target: Target, samples: tuple[list[Sample], list[Sample]] | None, note: str) -> Result:
    """PASS when the ratio of medians is within the limit. The interval is shown, not judged: where it
    straddles the limit, the result could flip on a rerun, and the row says so."""
    if samples is None:
        return Result(target.key, target.name, target.metric, None, None, None, target.limit, "SKIP", note)
    a, b = median_of(samples[0], target.metric), median_of(samples[1], target.metric)
    ratio = a / b
    status = "PASS" if ratio <= target.limit else "FAIL"
    if not target.judged:
        status = "info (" + ("within" if ratio <= target.limit else "over") + ")"
    interval = ratio_interval(
        [getattr(x, target.metric) for x in samples[0]], [getattr(x, target.metric) for x in samples[1]]
    )
    if interval[0] <= target.limit < interval[1]:
        note = "; ".join(filter(None, (note, "within noise")))
    cpu_ratio = None
    if target.metric == "wall_s":
        cpu_ratio = median_of(samples[0], "cpu_s") / median_of(samples[1], "cpu_s")
    return Result(
        target.key, target.name, target.metric, a, b, ratio, target.limit, status, note, cpu_ratio, interval
    )


def run_targets(
    repeat: int, only: Sequence[str], log: Callable[[str], None]
) -> tuple[list[Result], dict[str, dict[str, list[dict[str, float]]]]]:
    """Measure every pair a selected target needs, once, and judge the targets."""
    chosen = [t for t in TARGETS if not only or any(o in t.key for o in only)]
    pairs = {p.key: p for p in PAIRS}
    measured: dict[str, tuple[list[Sample], list[Sample]] | None] = {}
    notes: dict[str, str] = {}
    for key in dict.fromkeys(t.pair for t in chosen):
        pair = pairs[key]
        if pair.needs and child_output(f"import {pair.needs}") is None:
            measured[key], notes[key] = None, f"{pair.needs} is not installed: skipped"
            log(f"{key}: {notes[key]}")
            continue
        log(f"{key}: {repeat} x 2 commands ...")
        measured[key] = alternate(pair.a, pair.b, repeat)
    results = [judge(t, measured[t.pair], notes.get(t.pair, "")) for t in chosen]
    raw = {
        key: {"a": [asdict(s) for s in got[0]], "b": [asdict(s) for s in got[1]]}
        for key, got in measured.items()
        if got is not None
    }
    return results, raw


@dataclass(frozen=True)
class Scale:
    """One ``--scaling`` row: medians for one command at one size."""

    command: str
    base_dim: int
    batch: int
    wall_s: float
    peak_kib: int


def run_scaling(repeat: int, log: Callable[[str], None]) -> list[Scale]:
    """summary and run at several base_dim x batch sizes, each ``repeat`` times after a warm-up."""
    rows: list[Scale] = []
    grids = (("summary", SUMMARY_GRID), ("run", RUN_GRID))
    for command, grid in grids:
        for base_dim, batch in grid:
            cmd = (
                *TOOL,
                command,
                "--base-dim",
                str(base_dim),
                "--input",
                f"{batch}x3x224x224",
                "--format",
                "json",
            )
            log(f"{command} base_dim {base_dim} batch {batch}: {repeat} runs ...")
            measure(cmd)
            samples = [measure(cmd) for _ in range(repeat)]
            rows.append(
                Scale(
                    command,
                    base_dim,
                    batch,
                    median_of(samples, "wall_s"),
                    int(median_of(samples, "peak_kib")),
                )
            )
    return rows


# -- rendering ---------------------------------------------------------------------------------------


def _show(cmd: Sequence[str]) -> str:
    words = ["python" if w == PY else w for w in cmd]
    return " ".join(w if " " not in w and "\n" not in w else repr(w) for w in words)


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} s" if metric == "wall_s" else f"{value / 1024:.1f} MiB"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def render_machine(info: Machine, method: str) -> str:
    usable = f" ({info.cpus_usable} usable)" if info.cpus_usable else ""
    text = (
        f"machine: {info.cpu_count} CPUs{usable}, {info.processor}, {info.platform}\n"
        f"python {info.python}, torch {info.torch}, resnet-trace {info.resnet_trace} ({info.revision}), "
        f"torchinfo {info.torchinfo or 'not installed'}\n"
        f"{method}\n"
        f"1-minute load average: {info.load_at_start} at start, {info.load_at_end} at end"
    )
    if info.busy:
        text += "\nwarning: other work was running on this machine; wall times and ratios are noisier"
    return text


def render_results(results: Sequence[Result]) -> str:
    rows = [
        (
            r.name,
            _value(r.metric, r.median_a),
            _value(r.metric, r.median_b),
            "-" if r.ratio is None else f"{r.ratio:.2f}",
            "-" if r.interval is None else f"{r.interval[0]:.2f}-{r.interval[1]:.2f}",
            f"<= {r.limit:g}",
            r.status + (f" ({r.note})" if r.note else ""),
            "-" if r.cpu_ratio is None else f"{r.cpu_ratio:.2f}",
        )
        for r in results
    ]
    table = _table(
        ("row", "median A", "median B", "ratio", "90% interval", "target", "result", "cpu ratio"), rows
    )
    return table + (
        "\n\n90% interval: where the ratio would fall in 9 of 10 repeats of this measurement on this machine"
        " (bootstrap over the alternated pairs); 'within noise': the interval holds the target, so a"
        " rerun could flip the result, and more runs (--repeat) narrow it."
        "\ncpu ratio: the same medians in CPU seconds (user + system, all threads); not judged."
    )


def render_scaling(rows: Sequence[Scale]) -> str:
    body = [
        (
            r.command,
            str(r.base_dim),
            f"{r.batch}x3x224x224",
            _value("wall_s", r.wall_s),
            _value("peak_kib", r.peak_kib),
        )
        for r in rows
    ]
    return _table(("command", "base_dim", "input", "wall (median)", "peak RSS (median)"), body)


def render_commands(only: Sequence[str]) -> str:
    keys = {t.pair for t in TARGETS if not only or any(o in t.key for o in only)}
    lines = []
    for p in PAIRS:
        if p.key in keys:
            lines.append(f"{p.key}:\n  A: {_show(p.a)}\n  B: {_show(p.b)}")
    return "\n".join(lines)


# -- entry point -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=11, metavar="N", help="runs per command (default 11)")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout (the table goes to stderr)")
    parser.add_argument(
        "--only", action="append", default=[], metavar="KEY", help="rows whose key contains KEY"
    )
    parser.add_argument(
        "--scaling", action="store_true", help="time summary and run at several sizes instead"
    )
    parser.add_argument("--commands", action="store_true", help="list the measured commands and exit")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    known = [t.key for t in TARGETS]
    for o in args.only:
        if not any(o in k for k in known):
            parser.error(f"--only {o!r} matches no row; rows: {', '.join(known)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.commands:
        print(render_commands(args.only))
        return 0
    os.makedirs(HF_DIR, exist_ok=True)
    with open(HF_FILE, "w", encoding="utf-8") as f:
        f.write(HF_MODELS_FILE)
    for key, sizes in LLAMA3.items():
        os.makedirs(os.path.join(HF_DIR, key), exist_ok=True)
        with open(os.path.join(HF_DIR, key, "config.json"), "w", encoding="utf-8") as f:
            json.dump({**LLAMA3_COMMON, **sizes}, f)
    try:
        return _main(args)
    finally:
        shutil.rmtree(HF_DIR, ignore_errors=True)


def _main(args: argparse.Namespace) -> int:
    text = sys.stderr if args.json else sys.stdout

    def log(message: str) -> None:
        print(f"... {message}", file=sys.stderr, flush=True)

    info = machine()
    if info.torch is None:
        print(
            "error: 'import torch' fails in this Python; install the project first (see README)",
            file=sys.stderr,
        )
        return 2
    if not compile_package():
        log("could not write resnet_trace's bytecode: each child compiles it from source")
    document: dict[str, object] = {"repeat": args.repeat}
    failed = False
    try:
        if args.scaling:
            scaling = run_scaling(args.repeat, log)
            body = render_scaling(scaling)
            method = f"medians of {args.repeat} runs per command, after one warm-up"
            document["scaling"] = [asdict(r) for r in scaling]
        else:
            results, raw = run_targets(args.repeat, args.only, log)
            body = render_results(results)
            method = (
                f"medians of {args.repeat} alternated runs per command (A, B, A, B, ...), one warm-up each"
            )
            document["results"] = [asdict(r) for r in results]
            document["samples"] = raw
            failed = any(r.status == "FAIL" for r in results)
    except CommandFailed as exc:
        print(f"error: a measured command failed, {exc}", file=sys.stderr)
        return 2
    info = replace(info, load_at_end=load_average())
    document = {"machine": asdict(info), **document}
    print(render_machine(info, method) + "\n\n" + body, file=text)
    if args.json:
        print(json.dumps(document, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
