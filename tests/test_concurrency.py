"""Files that change under a running command, and threads tracing at once (issue 24, docs/security.md).

* A checkpoint (``--weights``) or a ``.pt`` input truncated, rewritten or replaced once a ``run``
  has loaded it cannot reach the running forwards: before, the weights were pages of the file
  (``torch.load(mmap=True)``) and truncating it killed the process with SIGBUS (exit -7, nothing
  printed). Each case runs ``python -m resnet_trace`` with a loader wrapped to stop once it has
  returned; the test changes the file, then lets it go on, deterministically.
* A file that changes between its check and the end of its read (here: right after the check
  on the file's map, or while the private copy is read) is exit 2, one line saying it changed.
* Two or eight threads tracing one model, or one model each, shape-only and real: every result
  is the single-threaded one; the second thread on a model waits, never a traceback from a hook.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import resnet_trace
from resnet_trace import loading
from resnet_trace.loading import named_inputs, one_input, torchfiles, weights
from resnet_trace.model import ResNet

ROOT = Path(__file__).resolve().parents[1]
CHANGED = "changed while it was being read"
BASE = ("--base-dim", "16", "--num-classes", "2", "--head", "adaptive")
SMALL = ("-i", "1x3x64x64")  # the built-in model's input where no file gives one

#: ``python -c DRIVER MODULE:FUNCTION[,...] ARGS...``: the CLI with each FUNCTION wrapped to print
#: ``LOADED FUNCTION`` on stderr once it has returned, then wait for a line on stdin (the test
#: changes the file meanwhile).
DRIVER = r"""
import importlib, sys
from resnet_trace.cli import main

def pause_after(owner, name):
    original = getattr(owner, name)

    def paused(*args, **kwargs):
        result = original(*args, **kwargs)
        print("LOADED", name, file=sys.stderr, flush=True)
        sys.stdin.readline()
        return result

    setattr(owner, name, paused)

for where in sys.argv.pop(1).split(","):
    module, name = where.split(":")
    pause_after(importlib.import_module(module), name)
sys.argv[0] = "resnet-trace"
main()
"""

MODEL_FILE = """
from torch import nn

class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 4)
        self.b = nn.Linear(8, 4)

    def forward(self, x, y):
        return self.a(x) + self.b(y)
"""


# -- files ------------------------------------------------------------------------------------------
def checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(ResNet(16, 2).state_dict(), path)
    os.utime(path, ns=(10**18, 10**18))  # an old mtime: a rewrite within one clock tick still shows
    return path


def truncate(path: Path) -> None:
    os.truncate(path, 0)


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def replace_with(other: Path):
    """A careful writer: the new file renamed over the old one (a new inode)."""

    def replace(path: Path) -> None:
        spare = path.with_name(path.name + ".new")
        spare.write_bytes(other.read_bytes())
        os.replace(spare, path)

    return replace


def rewrite_with(other: Path):
    """A naive writer (``torch.save(path)``): the same inode truncated, then written again."""

    def rewrite(path: Path) -> None:
        with open(path, "wb") as fh:
            fh.write(other.read_bytes())

    return rewrite


def comparable(doc: dict) -> dict:
    """A ``--format json`` trace without what a rerun measures anew (times)."""
    doc = dict(doc)
    doc["rows"] = [{k: v for k, v in r.items() if k != "time_ms"} for r in doc["rows"]]
    doc["run"] = {k: v for k, v in (doc.get("run") or {}).items() if not k.endswith("_ms")}
    return doc


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("files")
    torch.manual_seed(3)
    torch.save(torch.randn(1, 3, 64, 64), d / "image.pt")
    torch.save({"x": torch.randn(2, 8), "y": torch.randn(2, 8)}, d / "pair.pt")
    (d / "two.py").write_text(MODEL_FILE)
    return {
        "weights": checkpoint(d / "w.pt", 1),
        "other": checkpoint(d / "other.pt", 2),
        "image": d / "image.pt",
        "pair": d / "pair.pt",
        "model": d / "two.py",
    }


@pytest.fixture(scope="module")
def undisturbed_weights(files) -> dict:
    from conftest import Cli

    return comparable(Cli().json("run", "--weights", files["weights"], *BASE, *SMALL))


def fresh(files: dict[str, Path], key: str, tmp_path: Path) -> Path:
    """A private copy of a module-wide file, for one test to change."""
    path = tmp_path / files[key].name
    path.write_bytes(files[key].read_bytes())
    os.utime(path, ns=(10**18, 10**18))
    return path


# -- changed once loaded: the run goes on, as if nothing happened ------------------------------------
def _start(loaders: list[str], args: list[str]) -> subprocess.Popen:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, ",".join(loaders), *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _undisturbed(cli, args: list[str], renamed: dict[Path, Path]) -> dict:
    """The same command on the module's untouched files, in process."""
    for changed_path, original in renamed.items():
        args = [a.replace(str(changed_path), str(original)) for a in args]
    return comparable(cli.json(*args))


def _same_trace(got: dict, want: dict) -> None:
    want["run"]["weights"], want["run"]["input_file"] = got["run"]["weights"], got["run"]["input_file"]
    assert got == want


def test_files_truncated_once_run_has_read_them_never_reach_the_forward(files, tmp_path, cli):
    """``python -m resnet_trace run --repeat 2``, stopped right after each loader returns, its file
    truncated to nothing, then let go: the weights and a ``.pt`` image in one process, a ``.pt``
    dict of named inputs (``--model``) in another. Both end 0 with the trace of untouched files.
    Before: SIGBUS (exit -7, nothing printed) at the first forward after the weights' truncation."""
    weights, image, pair = (fresh(files, key, tmp_path) for key in ("weights", "image", "pair"))
    cases = [
        (
            {"load_weights": weights, "load_input": image},
            ["--weights", str(weights), "--input-file", str(image), *BASE],
        ),
        ({"load_inputs": pair}, ["--model", f"{files['model']}:Two", "--input-file", str(pair)]),
    ]
    running = []
    for paths, own in cases:
        args = ["run", *own, "--repeat", "2"]
        loaders = [f"resnet_trace.loading:{name}" for name in paths]
        running.append((_start(loaders, [*args, "--format", "json"]), paths, args))
    for proc, paths, _ in running:
        assert proc.stderr is not None and proc.stdin is not None
        for _ in paths:
            line = proc.stderr.readline().split()
            assert line[:1] == ["LOADED"], (line, proc.stderr.read())
            truncate(paths[line[1]])
            proc.stdin.write("\n")
            proc.stdin.flush()
    for proc, paths, args in running:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"exit {proc.returncode} (negative: killed by that signal)\n{err}"
        assert all(p.stat().st_size == 0 for p in paths.values())
        renamed = {
            p: files[k]
            for k in ("weights", "image", "pair")
            for p in paths.values()
            if p.name == files[k].name
        }
        _same_trace(comparable(json.loads(out)), _undisturbed(cli, args, renamed))


@pytest.mark.parametrize("change", ["truncated", "rewritten", "replaced"])
def test_weights_changed_once_loaded_leave_the_run_as_it_was(
    files, tmp_path, cli, monkeypatch, change, undisturbed_weights
):
    """In process: right after ``load_weights`` returns, the checkpoint is truncated, rewritten in
    place with another checkpoint (``torch.save(path)``), or replaced by one (a rename). The run
    uses the weights it read: before, a rewrite in place swapped the model's values under it."""
    path = fresh(files, "weights", tmp_path)
    how = {
        "truncated": truncate,
        "rewritten": rewrite_with(files["other"]),
        "replaced": replace_with(files["other"]),
    }
    original = loading.load_weights

    def load_weights(*args, **kwargs):
        original(*args, **kwargs)
        how[change](path)

    monkeypatch.setattr(loading, "load_weights", load_weights)
    got = comparable(cli.json("run", "--weights", path, *BASE, *SMALL))
    _same_trace(got, undisturbed_weights)


def test_check_reads_its_golden_whole_so_a_change_after_the_read_is_harmless(tmp_path, cli, monkeypatch):
    """``check`` reads no ``.pt``: its golden is read into memory once; truncating it then changes nothing."""
    import resnet_trace.goldens as goldens

    golden = tmp_path / "golden.json"
    cli("summary", *BASE, *SMALL, "--format", "json", "-o", golden)
    original = goldens.load_documents

    def load_documents(path):
        docs = original(path)
        truncate(golden)
        return docs

    monkeypatch.setattr(goldens, "load_documents", load_documents)
    cli("check", golden)
    assert golden.stat().st_size == 0


# -- changed between the check and the end of the read: exit 2, one line -----------------------------
def _change_after_check(monkeypatch, path: Path, change) -> None:
    """Change ``path`` right after the memory guard's check of its tensors (the second check
    naming it): the tensors were checked on the file's map and are not read yet."""
    seen = []
    original = torchfiles.check_read

    def check_read(nbytes: int, what: str, *args, **kwargs):
        result = original(nbytes, what, *args, **kwargs)
        if str(path) in what:
            seen.append(what)
            if len(seen) == 2:
                change(path)
        return result

    for module in (torchfiles, weights, one_input, named_inputs):  # each reads through its own name
        monkeypatch.setattr(module, "check_read", check_read)


def _change_during_private_read(monkeypatch, path: Path, change) -> None:
    """Change ``path`` as the private copy (torch.load without mmap) starts reading it."""
    original = torchfiles._torch_load

    def torch_load(source, name, *, mmap):
        if not mmap:
            change(path)
        return original(source, name, mmap=mmap)

    monkeypatch.setattr(torchfiles, "_torch_load", torch_load)


def one_changed_line(result, path: Path) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and CHANGED in lines[0] and repr(str(path)) in lines[0], result.stderr
    return lines[0]


@pytest.mark.parametrize("when", [_change_after_check, _change_during_private_read])
@pytest.mark.parametrize(
    ("key", "own"),
    [
        ("weights", ("--weights", "{}", *BASE, *SMALL)),
        ("image", ("--input-file", "{}", *BASE)),
        ("pair", ("--model", "{model}:Two", "--input-file", "{}")),
    ],
    ids=["weights", "input-pt", "model-inputs-pt"],
)
def test_a_pt_file_truncated_before_its_read_ends_is_exit_2_saying_it_changed(
    files, tmp_path, cli, monkeypatch, when, key, own
):
    path = fresh(files, key, tmp_path)
    when(monkeypatch, path, truncate_half)
    result = cli("run", *(a.format(path, model=files["model"]) for a in own), code=2)
    assert "size went from" in one_changed_line(result, path)


@pytest.mark.parametrize(
    ("change", "says"),
    [("replace", "another file replaced it"), ("rewrite", "it was written to")],
    ids=["replaced", "rewritten"],
)
def test_weights_replaced_or_rewritten_before_the_read_ends_is_exit_2(
    files, tmp_path, cli, monkeypatch, change, says
):
    """Replaced by a rename, or written again byte for byte (the same size and tensors): the
    inode, or the modification time, tells."""
    path = fresh(files, "weights", tmp_path)
    same = tmp_path / "same.pt"
    same.write_bytes(path.read_bytes())
    how = replace_with(files["other"]) if change == "replace" else rewrite_with(same)
    _change_during_private_read(monkeypatch, path, how)
    result = cli("run", "--weights", path, *BASE, *SMALL, code=2)
    assert says in one_changed_line(result, path)


def _not_mapped(path: Path) -> None:
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(path.resolve()) not in maps.read_text(), "the file is still mapped"


@pytest.mark.parametrize("suffix", [".pt", ".npy", ".npz"])
def test_inputs_are_private_memory_never_pages_of_the_file(tmp_path, suffix):
    """Once read, an input file is neither open nor mapped: truncating it changes no value."""
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / f"in{suffix}"
    if suffix == ".pt":
        torch.save({"x": torch.from_numpy(x)}, path)
    elif suffix == ".npy":
        np.save(path, x)
    else:
        np.savez(path, x=x)
    got = loading.load_inputs(path)
    _not_mapped(path)
    truncate(path)
    assert torch.equal(got[0][1], torch.from_numpy(x))


def test_weights_are_private_memory_never_pages_of_the_file(files, tmp_path):
    from resnet_trace.spec import ModelSpec

    path = fresh(files, "weights", tmp_path)
    with torch.device("meta"):
        model = ResNet(16, 2)
    loading.load_weights(path, model, ModelSpec(base_dim=16, num_classes=2))
    _not_mapped(path)
    truncate(path)
    want = torch.load(files["weights"], weights_only=True)
    assert all(torch.equal(p, want[k]) for k, p in model.state_dict().items())


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_an_array_truncated_while_it_is_read_is_exit_2_saying_it_changed(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"in{suffix}"
    x = np.ones((4, 1000), dtype=np.float32)
    np.save(path, x) if suffix == ".npy" else np.savez(path, x=x)
    original = named_inputs.npy_data

    def npy_data(*args, **kwargs):
        truncate_half(path)
        return original(*args, **kwargs)

    monkeypatch.setattr(named_inputs, "npy_data", npy_data)
    with pytest.raises(resnet_trace.errors.UsageError) as info:
        loading.load_inputs(path)
    assert CHANGED in str(info.value) and "\n" not in str(info.value)


# -- threads ------------------------------------------------------------------------------------------
class Net(nn.Module):
    """Batch norm in train mode at rest: a trace that ran it in the wrong mode, or flipped another's
    flags, would show in the statistics and the logits (and in the running statistics)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(x + self.body(x))


def _models(n: int) -> list[nn.Module]:
    torch.manual_seed(0)
    models = [Net(4 + 2 * i) for i in range(n)]
    for m in models:
        for bn in (m.stem[1], m.body[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
    return models


def _result(report) -> tuple:
    t = report.trace
    rows = tuple(dataclasses.replace(r, time_ms=None) for r in t.rows)
    logits = None if t.run is None else t.run.logits
    return t.totals, rows, t.output_shape, logits


def _in_threads(n: int, work) -> list:
    """``work(i)`` in ``n`` threads started together; each result, or the exception it raised."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread never finished (a deadlock?)"
    return results


@pytest.mark.parametrize("threads", [2, 8])
@pytest.mark.parametrize("shared", [True, False], ids=["one-model", "a-model-each"])
@pytest.mark.parametrize("real", [False, True], ids=["shape-only", "real"])
def test_threads_tracing_models_get_the_single_threaded_results(threads, shared, real):
    models = _models(1 if shared else threads)
    state = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    options = dict(input_shape=(2, 3, 12, 12), real=real)

    def trace(model: nn.Module):
        return resnet_trace.trace(model=model, **options)

    want = [_result(trace(m)) for m in models]
    rounds = 3

    def work(i: int) -> list:
        m = i % len(models)
        return [(m, _result(trace(models[m]))) for _ in range(rounds)]

    results = _in_threads(threads, work)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, repr(failures[0])
    for per_thread in results:
        for m, got in per_thread:
            assert got == want[m]
    for m, before in zip(models, state, strict=True):
        assert all(mod.training for mod in m.modules()), "a trace left a flag flipped"
        assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items()), "a buffer changed"


@pytest.mark.parametrize("threads", [2, 8])
def test_threads_tracing_the_builtin_model_get_the_single_threaded_result(threads):
    want = _result(resnet_trace.trace(base_dim=8))
    results = _in_threads(threads, lambda i: [_result(resnet_trace.trace(base_dim=8)) for _ in range(2)])
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, repr(failures[0])
    assert all(got == want for per_thread in results for got in per_thread)


def test_shape_only_and_real_traces_of_one_model_mixed_in_threads():
    """A fake twin copied while another thread has the module hooked copies inert hooks."""
    (model,) = _models(1)

    def trace(real: bool) -> tuple:
        return _result(resnet_trace.trace(model=model, input_shape=(2, 3, 12, 12), real=real))

    want = {real: trace(real) for real in (False, True)}

    def work(i: int) -> list:
        real = bool(i % 2)
        return [(real, trace(real)) for _ in range(3)]

    results = _in_threads(8, work)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, repr(failures[0])
    assert all(got == want[real] for per_thread in results for real, got in per_thread)


def test_a_thread_running_the_traced_model_itself_is_not_recorded():
    """The caller's own forwards in another thread, while a real trace hooks the module, are
    neither recorded by the trace nor disturbed by it."""
    (model,) = _models(1)
    model.eval()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        expected = model(x)
    want = _result(resnet_trace.trace(model=model, input_shape=(2, 3, 12, 12), real=True))
    stop = threading.Event()
    outputs: list = []

    def serve() -> None:
        with torch.no_grad():
            while not stop.is_set():
                outputs.append(model(x))

    server = threading.Thread(target=serve)
    server.start()
    try:
        got = [
            _result(resnet_trace.trace(model=model, input_shape=(2, 3, 12, 12), real=True)) for _ in range(5)
        ]
    finally:
        stop.set()
        server.join()
    assert all(g == want for g in got)
    assert outputs and all(torch.equal(o, expected) for o in outputs)
