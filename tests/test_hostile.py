"""Hostile input, run as a user or an attacker would: the tool checks before it reads, allocates or runs.

The corpus is built here from bytes (tests/hostile_corpus.py); nothing is downloaded. For
each case the expected outcome comes from the documented contract (README's exit codes,
docs/security.md), never from the tool's output: the exit code, exactly one stderr line, no
traceback, nothing written or replaced. Most cases run in-process (``cli`` fixture); those
that need a real process (closed descriptors, encodings, signals, peak memory) run the
installed console script.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_corpus import INPUTS, WEIGHTS, device_node, expanded, npy_header, png_bomb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import wait_until_computing

OK, DIFFERENCES, USAGE, REJECTED, INTERNAL, INTERRUPTED = 0, 1, 2, 3, 4, 130
LIMIT_VAR = "RESNET_TRACE_MEMORY_LIMIT"
POSIX = pytest.mark.skipif(os.name != "posix", reason="needs POSIX files, pipes and signals")
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SCHEMA_TEXT = (Path(__file__).parents[1] / "resnet_trace" / "schema.json").read_text(encoding="utf-8")
#: Odd files that are not hostile: Pillow reads the 13 IHDR bytes it needs and ignores the rest.
ACCEPTED_INPUTS = {"png-15-byte-ihdr"}
REFUSED_INPUTS = sorted(set(INPUTS) - ACCEPTED_INPUTS)


# -- what every refusal must look like ------------------------------------------------------------
def refused(result, code: int = USAGE) -> str:
    """Exit ``code``, nothing on stdout, exactly one stderr line of ours, no traceback."""
    out, err = result.stdout, result.stderr
    assert result.exit_code == code, (result.exit_code, out[:500], err[:500])
    assert out == "", out[:500]
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("resnet-trace: ")
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (symlinks not followed): kind, inode, size, mode and content hash."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            st_ = os.lstat(path)
            digest = None
            if stat.S_ISREG(st_.st_mode) and st_.st_mode & stat.S_IRUSR:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            target = os.readlink(path) if stat.S_ISLNK(st_.st_mode) else None
            found[str(path.relative_to(folder))] = (
                stat.S_IFMT(st_.st_mode),
                st_.st_ino,
                st_.st_size,
                stat.S_IMODE(st_.st_mode),
                digest,
                target,
            )
    return found


def tool() -> list[str]:
    script = shutil.which("resnet-trace")
    return [script] if script else [sys.executable, "-m", "resnet_trace"]


# -- 1. input files: refused before they are read -------------------------------------------------
@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
@pytest.mark.parametrize("case", REFUSED_INPUTS)
def test_a_hostile_input_file_is_refused_unread(cli, tmp_path, monkeypatch, case, fmt):
    monkeypatch.setenv(LIMIT_VAR, "2GiB")  # the guard's ceiling, whatever this machine has
    path = INPUTS[case](tmp_path)
    before = snapshot(tmp_path)
    t0 = time.perf_counter()
    line = refused(
        cli("run", "--base-dim", "4", "--input-file", path, "-f", fmt, "-o", tmp_path / "o", code=None)
    )
    assert time.perf_counter() - t0 < 10
    assert "--input-file" in line and repr(str(path)) in line
    assert snapshot(tmp_path) == before  # nothing written, nothing replaced, no temporary file


@pytest.mark.parametrize("case", sorted(WEIGHTS))
def test_a_hostile_weights_file_is_refused_unread(cli, tmp_path, monkeypatch, case):
    monkeypatch.setenv(LIMIT_VAR, "2GiB")
    path = WEIGHTS[case](tmp_path)
    before = snapshot(tmp_path)
    line = refused(cli("run", "--base-dim", "4", "--weights", path, "-o", tmp_path / "o", code=None))
    assert "--weights" in line and repr(str(path)) in line
    assert snapshot(tmp_path) == before


@POSIX
@pytest.mark.skipif(not ROOT, reason="os.mknod of a character device needs root")
@pytest.mark.parametrize(
    "option,suffix", [("--input-file", ".pt"), ("--input-file", ".npy"), ("--weights", ".pt")]
)
def test_a_device_node_is_refused_unread(cli, tmp_path, option, suffix):
    path = device_node(tmp_path, suffix)
    line = refused(cli("run", "--base-dim", "4", option, path, code=None))
    assert "character device" in line


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("quantized", "quantized"),
        ("meta", "meta"),
        ("sparse", "sparse"),
        ("complex", "complex"),
    ],
)
def test_a_refused_tensor_says_why(cli, tmp_path, kind, needle):
    make = {
        "quantized": lambda: torch.quantize_per_tensor(torch.zeros(1, 3, 8, 8), 0.1, 0, torch.quint8),
        "meta": lambda: torch.empty(1, 3, 224, 224, device="meta"),
        "sparse": lambda: torch.zeros(1, 3, 8, 8).to_sparse(),
        "complex": lambda: torch.zeros(1, 3, 8, 8, dtype=torch.complex64),
    }[kind]
    torch.save(make(), tmp_path / "x.pt")
    assert needle in refused(cli("run", "--base-dim", "4", "--input-file", tmp_path / "x.pt", code=None))


def test_a_stride_0_tensor_counts_its_materialised_size(cli, tmp_path, monkeypatch):
    """150 KB on disk, 10000x3x224x224 floats (5.6 GiB) once copied: refused under a 500 MiB limit."""
    torch.save(expanded(), tmp_path / "x.pt")
    assert (tmp_path / "x.pt").stat().st_size < 200_000
    monkeypatch.setenv(LIMIT_VAR, "500MiB")
    line = refused(cli("run", "--base-dim", "4", "--input-file", tmp_path / "x.pt", code=None))
    assert "10000x3x224x224" in line and LIMIT_VAR in line


def test_the_npy_header_is_checked_before_data(cli, tmp_path):
    """A 4 KB file whose header claims 56 GiB: refused on the header, naming both sizes."""
    path = tmp_path / "claims.npy"
    path.write_bytes(npy_header("<f4", (1, 3, 122_880, 40_960)) + b"\0" * 4096)
    line = refused(cli("run", "--input-file", path, code=None))
    assert "56.2 GiB" in line and "4.0 KiB" in line


# -- odd files that are fine ----------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["big-endian", "fortran", "float64", "uint8", "bool", "3-d"])
def test_odd_but_exact_npy_files_read_as_the_same_floats(tmp_path, variant):
    from resnet_trace.loading import load_input

    rng = np.random.default_rng(3)
    x = rng.integers(0, 2 if variant == "bool" else 255, size=(1, 3, 20, 24)).astype(np.float32)
    odd = {
        "big-endian": x.astype(">f4"),
        "fortran": np.asfortranarray(x),
        "float64": x.astype(np.float64),
        "uint8": x.astype(np.uint8),
        "bool": x.astype(bool),
        "3-d": x[0],
    }[variant]
    np.save(tmp_path / "odd.npy", odd)
    got = load_input(tmp_path / "odd.npy")
    assert got.dtype == torch.float32 and got.is_contiguous() and got.shape == (1, 3, 20, 24)
    assert torch.equal(got, torch.from_numpy(x))


def test_a_big_endian_npy_runs_through_the_cli(cli, tmp_path):
    x = np.random.default_rng(4).standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.save(tmp_path / "le.npy", x)
    np.save(tmp_path / "be.npy", x.astype(">f4"))
    a = cli.json("run", "--base-dim", "2", "--input-file", tmp_path / "le.npy")["logits"]
    assert cli.json("run", "--base-dim", "2", "--input-file", tmp_path / "be.npy")["logits"] == a


def test_a_small_stride_0_tensor_is_read_as_its_full_batch(cli, tmp_path):
    torch.save(torch.ones(1, 3, 224, 224).expand(2, 3, 224, 224), tmp_path / "x.pt")
    doc = cli.json("run", "--base-dim", "4", "--input-file", tmp_path / "x.pt")
    assert doc["input_shape"] == [2, 3, 224, 224]
    assert len(doc["logits"]) == 2 and doc["logits"][0] == doc["logits"][1]


def test_a_png_bomb_decodes_only_what_its_header_declares(cli, tmp_path):
    """224x224 declared, 4 GiB of zeros deflated behind it: the image is 224x224 zeros, read at once."""
    path = png_bomb(tmp_path)
    t0 = time.perf_counter()
    doc = cli.json("run", "--base-dim", "4", "--input-file", path)
    assert time.perf_counter() - t0 < 10
    assert doc["input_shape"] == [1, 3, 224, 224]


def test_a_15_byte_ihdr_is_read_by_its_13_bytes(cli, tmp_path):
    path = INPUTS["png-15-byte-ihdr"](tmp_path)
    assert cli.json("run", "--base-dim", "4", "--input-file", path)["input_shape"] == [1, 3, 224, 224]


@pytest.mark.parametrize(
    "fmt,suffix", [("JPEG", ".jpg"), ("WEBP", ".webp"), ("BMP", ".bmp"), ("PNG", ".png")]
)
def test_pillow_formats_are_read_as_rgb_in_0_1(cli, tmp_path, fmt, suffix):
    image = pytest.importorskip("PIL.Image")
    pixels = np.zeros((224, 224, 3), dtype=np.uint8)
    pixels[..., 0] = 255  # pure red survives every codec
    path = tmp_path / f"x{suffix}"
    image.fromarray(pixels).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    from resnet_trace.loading import load_input

    x = load_input(path)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32 and x.is_contiguous()
    assert abs(x[0, 0].mean().item() - 1.0) < 0.02 and x[0, 1:].abs().max().item() < 0.05
    gray = load_input(path, channels=1)
    assert gray.shape == (1, 1, 224, 224)


def test_without_pillow_one_line_says_how_to_install_it(cli, tmp_path, monkeypatch):
    pytest.importorskip("PIL.Image")
    path = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (224, 224)).save(path)
    monkeypatch.setitem(sys.modules, "PIL", None)  # "import PIL" now raises ImportError
    line = refused(cli("run", "--base-dim", "4", "--input-file", path, code=None))
    assert "pip install 'resnet-trace[images]'" in line


# -- 2. golden files: checked before use ----------------------------------------------------------
@pytest.fixture(scope="module")
def good_doc() -> dict:
    from typer.testing import CliRunner

    from resnet_trace.cli import app

    result = CliRunner().invoke(app, ["summary", "--base-dim", "4", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _set(doc: dict, path: tuple, value: object) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def _deep(n: int) -> str:
    return "[" * n + "]" * n


MALFORMED_GOLDEN = {
    "nested-100000-arrays": lambda d: _deep(100_000),
    "nested-100000-objects": lambda d: '{"a":' * 100_000 + "1" + "}" * 100_000,
    "nested-900-in-filter": lambda d: json.dumps(d)[:-1] + ', "filter": ' + _deep(900) + "}",
    "model.skip-a-number": lambda d: _set(d, ("model", "skip"), 5),
    "model.skip-a-list-of-numbers": lambda d: _set(d, ("model", "skip"), [1, 2]),
    "model.block-a-list": lambda d: _set(d, ("model", "block"), []),
    "model.source-a-number": lambda d: _set(d, ("model", "source"), 1),
    "model.base_dim-negative": lambda d: _set(d, ("model", "base_dim"), -1),
    "model.base_dim-true": lambda d: _set(d, ("model", "base_dim"), True),
    "model-a-string": lambda d: _set(d, ("model",), "ResNet"),
    "filter-a-number": lambda d: _set(d, ("filter",), 5),
    "error-a-string": lambda d: _set(d, ("error",), "boom"),
    "error-module-a-number": lambda d: _set(d, ("error",), {"module": 5, "message": "", "hint": ""}),
    "rows-a-string": lambda d: _set(d, ("rows",), "rows"),
    "rows-of-numbers": lambda d: _set(d, ("rows",), [1, 2]),
    "input_shape-short": lambda d: _set(d, ("input_shape",), [1, 3]),
    "input_shape-a-string": lambda d: _set(d, ("input_shape",), "1x3x224x224"),
    "input_shape-floats": lambda d: _set(d, ("input_shape",), [1, 3, 224.5, 224]),
    "output_shape-a-string": lambda d: _set(d, ("output_shape",), "1x2"),
    "schema-other": lambda d: _set(d, ("schema",), "other/9"),
    "depth-a-number": lambda d: _set(d, ("depth",), 7),
    "collapsed-a-string": lambda d: _set(d, ("collapsed",), "yes"),
    "totals-a-list": lambda d: _set(d, ("totals",), []),
    "a-huge-integer": lambda d: json.dumps(d)[:-1] + ', "x": ' + "9" * 5000 + "}",
    "not-json": lambda d: "{this is not json",
    "empty-file": lambda d: "",
    "empty-array": lambda d: "[]",
    "a-bare-number": lambda d: "42",
    "utf-16": lambda d: json.dumps(d).encode("utf-16"),
    "invalid-utf-8": lambda d: b'{"schema": "\xff\xfe"}',
}


def _write_golden(path: Path, value: object) -> Path:
    if isinstance(value, bytes):
        path.write_bytes(value)
    else:
        path.write_text(value if isinstance(value, str) else json.dumps(value), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["check", "diff-a", "diff-b"])
@pytest.mark.parametrize("case", sorted(MALFORMED_GOLDEN))
def test_a_malformed_golden_is_one_usage_line(cli, tmp_path, good_doc, case, command):
    bad = _write_golden(tmp_path / "bad.json", MALFORMED_GOLDEN[case](good_doc))
    good = _write_golden(tmp_path / "good.json", good_doc)
    before = snapshot(tmp_path)
    args = {"check": ["check", bad], "diff-a": ["diff", bad, good], "diff-b": ["diff", good, bad]}[command]
    t0 = time.perf_counter()
    line = refused(cli(*args, "-o", tmp_path / "out", code=None))
    assert time.perf_counter() - t0 < 10
    assert repr(str(bad)) in line
    assert snapshot(tmp_path) == before


@POSIX
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "missing"])
def test_a_golden_that_is_not_a_file_is_refused_unread(cli, tmp_path, kind):
    path = tmp_path / "golden.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    refused(cli("check", path, code=None))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON document a mutation can hit."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            found += _paths(v, (*prefix, i))
    return found


@st.composite
def mutated(draw, doc: dict, exclude: tuple[str, ...] = ()):
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        places = [
            p for p in _paths(doc) if not (p and p[-1] in exclude) and not (len(p) > 1 and p[1] in exclude)
        ]
        path = draw(st.sampled_from(places))
        node = doc
        for key in path[:-1]:
            node = node[key]
        if draw(st.booleans()) and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = draw(JSON)
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_mutated_golden_ends_in_a_documented_way_for_diff(cli, tmp_path, good_doc, data):
    bad = _write_golden(tmp_path / "bad.json", data.draw(mutated(good_doc)))
    good = _write_golden(tmp_path / "good.json", good_doc)
    result = cli("diff", bad, good, code=None)
    assert result.exit_code in (OK, DIFFERENCES, USAGE), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    if result.exit_code == USAGE:
        refused(result)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_mutated_golden_ends_in_a_documented_way_for_check(cli, tmp_path, good_doc, data):
    # model.source is left alone here: a golden naming code is its own test below.
    bad = _write_golden(tmp_path / "bad.json", data.draw(mutated(good_doc, exclude=("source",))))
    result = cli("check", bad, code=None)
    assert result.exit_code in (OK, DIFFERENCES, USAGE, REJECTED), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    if result.exit_code == USAGE:
        refused(result)


def test_check_never_imports_the_code_a_golden_names(cli, tmp_path, good_doc):
    marker = tmp_path / "pwned"
    code = tmp_path / "evil.py"
    code.write_text(
        textwrap.dedent(f"""
        open({str(marker)!r}, "w").close()
        from resnet_trace.model import ResNet as Net
        """)
    )
    golden = _write_golden(tmp_path / "g.json", _set(good_doc, ("model", "source"), f"{code}:Net"))
    line = refused(cli("check", golden, code=None))
    assert not marker.exists()
    assert str(code) in line


# -- 3. -o writes what the user means -------------------------------------------------------------
def test_o_through_a_symlink_replaces_the_target_and_keeps_the_link(cli, tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    cli("schema", "-o", link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text(encoding="utf-8") == SCHEMA_TEXT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]


def test_o_through_a_dangling_symlink_creates_the_target(cli, tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "new.json")
    cli("schema", "-o", link)
    assert link.is_symlink() and (tmp_path / "new.json").read_text(encoding="utf-8") == SCHEMA_TEXT


@POSIX
def test_o_into_a_fifo_writes_into_it_and_keeps_it(cli, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    cli("schema", "-o", fifo)
    reader.join(timeout=30)
    assert got == [SCHEMA_TEXT.encode("utf-8")]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


@POSIX
def test_o_to_dev_null_writes_into_it_and_never_replaces_it(cli):
    before = os.lstat("/dev/null")
    cli("schema", "-o", "/dev/null")
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


@POSIX
@pytest.mark.parametrize("via", ["direct", "symlink"])
def test_o_to_a_write_protected_file_is_refused(cli, tmp_path, via):
    target = tmp_path / "keep.json"
    target.write_text("precious")
    target.chmod(0o444)
    path = target if via == "direct" else tmp_path / "link.json"
    if via == "symlink":
        path.symlink_to(target)
    before = snapshot(tmp_path)
    line = refused(cli("summary", "--base-dim", "4", "-o", path, code=None))
    assert "write-protected" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["directory", "symlink-to-directory", "missing-folder"])
def test_o_that_names_no_file_is_refused(cli, tmp_path, kind):
    (tmp_path / "d").mkdir()
    path = {
        "directory": tmp_path / "d",
        "symlink-to-directory": tmp_path / "ld",
        "missing-folder": tmp_path / "nope" / "x.json",
    }[kind]
    if kind == "symlink-to-directory":
        path.symlink_to(tmp_path / "d")
    before = snapshot(tmp_path)
    refused(cli("summary", "--base-dim", "4", "-o", path, code=None))
    assert snapshot(tmp_path) == before


# -- 4. odd option values -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("--seed", "99999999999999999999999"),
        ("--seed", "-99999999999999999999999"),
        ("--repeat", "2147483647"),
        ("--repeat", "99999999999999999999999"),
        ("--top-k", "99999999999999999999999"),
        ("--base-dim", "99999999999999999999999"),
        ("--num-classes", "99999999999999999999999"),
    ],
)
def test_a_huge_number_is_one_usage_line(cli, args):
    # --device meta: should a bound be missing, the command still ends at once instead of looping.
    refused(cli("run", "--base-dim", "1", "--device", "meta", *args, code=None))


HUGE = st.one_of(
    st.integers(-5, 20), st.integers(-(2**100), 2**100), st.sampled_from([2**31 - 1, 2**63, 2**64])
)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=HUGE, repeat=HUGE, top_k=HUGE)
def test_any_seed_repeat_and_top_k_end_in_a_documented_way(cli, seed, repeat, top_k):
    # --device meta and 1x3x32x32 (stops at the seed's avgpool, exit 3): never a long run.
    result = cli(
        "run",
        "--base-dim",
        "1",
        "--input",
        "1x3x32x32",
        "--device",
        "meta",
        "--seed",
        seed,
        "--repeat",
        repeat,
        "--top-k",
        top_k,
        code=None,
    )
    assert result.exit_code in (OK, USAGE, REJECTED), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    if result.exit_code == USAGE:
        refused(result)
    if max(abs(seed), repeat, top_k) >= 2**63 or min(repeat, top_k) < 1:
        assert result.exit_code == USAGE


# -- 5. user code is named, never silent (the lead's usermodel.py) --------------------------------
USER_MODEL = """
import sys
from resnet_trace.model import ResNet


class ExitsInForward(ResNet):
    def forward(self, x):
        sys.exit(0)


class NoMemory(ResNet):
    def forward(self, x):
        raise MemoryError


def factory_exits():
    raise SystemExit(3)
"""


@pytest.mark.parametrize(
    "name,code", [("ExitsInForward", REJECTED), ("NoMemory", USAGE), ("factory_exits", USAGE)]
)
def test_user_code_that_exits_or_runs_out_of_memory_is_named(cli, tmp_path, name, code):
    path = tmp_path / "user_model.py"
    path.write_text(USER_MODEL)
    result = cli("run", "--model", f"{path}:{name}", "--block", "BottleNeck", "--base-dim", "4", code=None)
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    err = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("resnet-trace: ")
    assert name in err[0] or "user_model" in err[0]


def test_non_finite_values_are_written_as_null(cli, tmp_path):
    x = torch.full((1, 3, 224, 224), float("nan"))
    torch.save(x, tmp_path / "nan.pt")
    result = cli("run", "--base-dim", "4", "--input-file", tmp_path / "nan.pt", "--format", "json", code=None)

    def refuse(token: str) -> float:
        raise AssertionError(f"non-standard JSON token {token}")

    doc = json.loads(result.stdout, parse_constant=refuse)
    assert doc["logits"][0][0] is None


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"base_dim": 20000}, ValueError),
        ({"base_dim": True}, TypeError),
        ({"num_classes": 2.5}, TypeError),
        ({"input_shape": (1, 3, 224.7, 224)}, (TypeError, ValueError)),
    ],
)
def test_the_api_checks_like_the_cli(kwargs, error):
    from resnet_trace import trace

    with pytest.raises(error) as info:
        trace(**kwargs)
    assert "--" not in str(info.value)  # flag names are for the CLI alone


# -- 6. real processes: descriptors, encodings, signals, memory -----------------------------------
def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*tool(), *args], capture_output=True, text=True, timeout=120, **kwargs)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@POSIX
def test_closed_stdout_is_one_line_and_exit_2():
    proc = subprocess.run(
        [*tool(), "summary", "--base-dim", "4"],
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(1),
    )
    assert proc.returncode == USAGE, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "stdout" in lines[0] and "Traceback" not in proc.stderr


@POSIX
def test_closed_stdout_does_not_matter_when_writing_to_a_file(tmp_path):
    out = tmp_path / "schema.json"
    proc = subprocess.run(
        [*tool(), "schema", "-o", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(1),
    )
    assert proc.returncode == OK, proc.stderr
    assert out.read_text(encoding="utf-8") == SCHEMA_TEXT


@POSIX
def test_closed_stderr_still_gives_the_documented_codes():
    proc = subprocess.run(
        [*tool(), "summary", "--base-dim", "0"],
        stdout=subprocess.PIPE,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(2),
    )
    assert proc.returncode == USAGE and proc.stdout == ""
    proc = subprocess.run(
        [*tool(), "schema"], stdout=subprocess.PIPE, text=True, timeout=120, preexec_fn=lambda: os.close(2)
    )
    assert proc.returncode == OK and proc.stdout == SCHEMA_TEXT


@POSIX
@pytest.mark.parametrize(
    "env",
    [
        {"PYTHONIOENCODING": "ascii"},
        {"PYTHONIOENCODING": "latin-1"},
        {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": ""},
    ],
    ids=["ascii", "latin-1", "C-locale"],
)
def test_a_non_utf8_terminal_gets_an_ascii_table(env):
    proc = subprocess.run(
        [*tool(), "summary", "--base-dim", "4"],
        capture_output=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert proc.returncode == OK, proc.stderr
    text = proc.stdout.decode(env.get("PYTHONIOENCODING") or "ascii")  # raises on a byte it cannot hold
    assert "Traceback" not in text and "?" not in text
    assert not any("\u2500" <= ch <= "\u257f" for ch in text)  # no box drawing left
    assert "downsample v" in text and "---" in text  # the arrow and the rule, transliterated
    proc = subprocess.run(
        [*tool(), "summary", "--base-dim", "0"], capture_output=True, timeout=120, env={**os.environ, **env}
    )
    assert proc.returncode == USAGE and len(proc.stderr.splitlines()) == 1


@POSIX
def test_an_empty_npy_is_a_usage_error_not_an_interrupt(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"")
    proc = _run(["run", "--input-file", str(tmp_path / "x.npy")])
    assert proc.returncode == USAGE
    assert "interrupted" not in _one_line(proc)


@POSIX
def test_ctrl_c_says_interrupted():
    proc = subprocess.Popen(
        [*tool(), "run", "--input", "16x3x224x224", "--repeat", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_until_computing(proc)  # torch imported and the forward running, not a fixed sleep
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == INTERRUPTED
    assert err == "resnet-trace: interrupted\n"


_SIGNAL_DURING_WRITE = """
import os, signal, sys
from pathlib import Path
from resnet_trace.cli.files import write_output

real_fsync = os.fsync
def fsync(fd):
    real_fsync(fd)
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
os.fsync = fsync
write_output("x" * 100000, Path(sys.argv[2]))
print("survived")
"""


@POSIX
@pytest.mark.parametrize(
    "name,code", [("SIGTERM", -signal.SIGTERM), ("SIGHUP", -signal.SIGHUP), ("SIGINT", None)]
)
def test_a_signal_during_o_leaves_no_temporary_file(tmp_path, name, code):
    out = tmp_path / "out.json"
    out.write_text("old")
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNAL_DURING_WRITE, name, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    if code is not None:
        assert proc.returncode == code, proc.stderr
    else:  # SIGINT is Python's KeyboardInterrupt: raised out of write_output
        assert "KeyboardInterrupt" in proc.stderr
    assert "survived" not in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert out.read_text() == "old"


_PEAK = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"code": p.returncode, "err": p.stderr, "peak": peak, "s": time.perf_counter() - t0}))
"""


def _peak(args: list[str], env: dict | None = None) -> dict:
    """Exit code, stderr, peak RSS (bytes) and wall time of one fresh CLI process."""
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, *tool(), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def baseline_peak() -> int:
    got = _peak(["summary"])
    assert got["code"] == OK
    return got["peak"]


BOMBS = {
    "png-bomb-4GiB": (lambda d: png_bomb(d), OK, {}),
    "symlink-to-dev-zero": (INPUTS["symlink-to-dev-zero.npy"], USAGE, {}),
    "stride-0-6GB": (
        lambda d: (torch.save(expanded(), d / "e.pt"), d / "e.pt")[1],
        USAGE,
        {LIMIT_VAR: "500MiB"},
    ),
    "deflated-zip": (INPUTS["pt-deflated-entries"], USAGE, {LIMIT_VAR: "500MiB"}),
}


@POSIX
@pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs getrusage of children")
@pytest.mark.xdist_group("memory")  # one worker under pytest-xdist: the baseline once, no other peak beside
@pytest.mark.parametrize("case", sorted(BOMBS))
def test_a_bomb_costs_at_most_300_mb_more_than_a_summary(tmp_path, baseline_peak, case):
    build, code, env = BOMBS[case]
    path = build(tmp_path)
    got = _peak(["run", "--base-dim", "4", "--input-file", str(path)], env)
    assert got["code"] == code, got["err"]
    assert "Traceback" not in got["err"]
    assert got["peak"] - baseline_peak <= 300 * 2**20, (got["peak"] / 2**20, baseline_peak / 2**20)
    assert got["s"] < 10
    assert math.isfinite(got["peak"])
