"""Every way a user can go wrong ends in one line on stderr and a documented exit code.

Exit codes (README): 0 ok; 2 usage error (bad option or shape, missing or unsafe file, too
much memory); 3 the model cannot process the input (the trace stopped at a module, the
partial trace is still printed); 4 internal error (traceback only with --debug); 130 Ctrl-C.

The accepted image sizes and the shapes in the messages are derived here from the seed's
layer arithmetic (``arith.conv_out``), never read from the tool.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from arith import conv_out
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from waiting import wait_until_computing

from resnet_trace.api import build_target, trace_run, trace_shapes
from resnet_trace.errors import OutOfMemory
from resnet_trace.model import ResNet
from resnet_trace.spec import ModelSpec

USAGE, REJECTED, INTERNAL, INTERRUPTED = 2, 3, 4, 130
FORM = "NxCxHxW"
LIMIT_VAR = "RESNET_TRACE_MEMORY_LIMIT"
POSIX = pytest.mark.skipif(os.name != "posix", reason="needs POSIX pipes and signals")


def one_line(result) -> str:
    """The failure's only output: exactly one line on stderr, nothing on stdout, no traceback."""
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("resnet-trace: ")
    return lines[0]


# -- the seed's geometry, from its layers ---------------------------------------------------------
def final_side(size: int) -> int:
    """Side of the map that reaches the head: stem conv 7/2/3, max-pool 3/2/1, three stride-2 1x1s."""
    size = conv_out(size, 7, 2, 3)
    size = conv_out(size, 3, 2, 1)
    for _ in range(3):  # the down block closing layer_2, layer_3 and layer_4
        size = conv_out(size, 1, 2, 0)
    return size


HEAD_KERNEL = 7  # AvgPool2d(7, 1): Linear(base_dim * 32) fits only a 1x1 pooled map, a 7x7 final map
ACCEPTED = [s for s in range(1, 1000) if final_side(s) == HEAD_KERNEL]
LO, HI = ACCEPTED[0], ACCEPTED[-1]


def expected_stop(h: int, w: int) -> str | None:
    fh, fw = final_side(h), final_side(w)
    if min(fh, fw) < HEAD_KERNEL:
        return "avgpool"  # the pool's kernel does not fit
    if max(fh, fw) > HEAD_KERNEL:
        return "fc_layer"  # the pooled map is larger than 1x1: too many features
    return None


def test_the_derived_range_is_contiguous_and_is_the_issues():
    assert ACCEPTED == list(range(LO, HI + 1))
    assert (LO, HI) == (193, 224)


# -- 1. shapes ------------------------------------------------------------------------------------
LONG = "1x3x" + "9" * 5000 + "x224"
MALFORMED = [
    # (value, fragments the message must hold besides the quoted value)
    ("1x3x224", [FORM, "3 dimensions"]),
    ("ax3x224x224", [FORM]),
    ("1x3x-5x224", [FORM, "negative"]),
    ("1x3x0x224", [FORM]),
    ("0x3x224x224", [FORM]),
    ("", [FORM]),
    (" ", [FORM]),
    ("x", [FORM]),
    ("xxx", [FORM]),
    ("1x3x224x224x1", [FORM, "5 dimensions"]),
    ("1x3x224x224x", [FORM]),
    ("1.5x3x224x224", [FORM]),
    ("1x3x224.0x224", [FORM]),
    ("1x3x1e3x224", [FORM]),
    ("+1x3x224x224", [FORM]),
    ("1,3,224,224", [FORM]),
    ("1 3 224 224", [FORM]),
    ("1x3x224x224;", [FORM]),
    ("\uff11x3x224x224", [FORM]),  # a full-width digit one
    ("1x3x\u09e8\u09e8\u09eax224", [FORM]),  # Bengali digits, which int() would accept
    ("1x3x\u09e8\u09e8\u09ea-\u09e8\u09e8\u09eax224", [FORM]),
    ("1x3x99999999999x224", [FORM, "2,147,483,647"]),
    ("1x3x99999999999999999999999x224", [FORM]),
    ("1x3x1073741824x1073741824", ["too large"]),
    ("1x4x224x224", ["3", "stem"]),
    ("1x1x224x224", ["3", "stem"]),
    ("1x3x230-190x224", ["lo-hi"]),
    ("1x3x0-5x224", ["lo-hi"]),
    ("1x3x190-230:0x224", ["lo-hi"]),
    ("1x3x1-20000x224", ["10,000"]),
    ("1x3x190-200x190-210", ["same range"]),
    ("1-2x3x190-200x224", ["one dimension"]),
    ("1x3x190-200xabc", [FORM]),
]


@pytest.mark.parametrize("command", ["summary", "run"])
@pytest.mark.parametrize("value,fragments", MALFORMED, ids=[repr(v)[:40] for v, _ in MALFORMED])
def test_a_malformed_shape_is_one_usage_line_quoting_it(cli, command, value, fragments):
    line = one_line(cli(command, f"--input={value}", code=USAGE))
    assert "--input" in line
    assert value in line  # quoted as given (repr-quoted, or bare where it is a plain shape)
    for fragment in fragments:
        assert fragment in line


def test_an_absurdly_long_number_is_quoted_short(cli):
    line = one_line(cli("summary", f"--input={LONG}", code=USAGE))
    assert LONG[:40] in line and FORM in line
    assert len(line) < 400


def test_one_bad_input_among_good_ones_prints_nothing_to_stdout(cli):
    one_line(cli("summary", "--input", "1x3x224x224", "--input=1x3x224", "--format", "json", code=USAGE))


@pytest.mark.parametrize("value", ["1x3x224x224", " 1x3x224x224 ", "1X3X224X224", "1 x 3 x 224 x 224"])
def test_well_formed_spellings_are_accepted(cli, value):
    doc = cli.json("summary", f"--input={value}")
    assert doc["input_shape"] == [1, 3, 224, 224]


def test_a_square_sweep_sweeps_h_and_w_together(cli):
    docs = cli.json("summary", f"--input=1x3x{LO - 1}-{LO + 1}x{LO - 1}-{LO + 1}", code=REJECTED)
    assert [d["input_shape"] for d in docs] == [[1, 3, s, s] for s in (LO - 1, LO, LO + 1)]
    assert [(d["error"] or {}).get("module") for d in docs] == ["avgpool", None, None]


@pytest.mark.parametrize(
    "args,name",
    [
        (("summary", "--base-dim", "0"), "--base-dim"),
        (("summary", "--num-classes", "0"), "--num-classes"),
        (("summary", "--base-dim", "-3"), "--base-dim"),
        (("summary", "--num-classes", "-1"), "--num-classes"),
        (("summary", "--base-dim", "20000"), "--base-dim"),  # its activations would overflow int64
        (("summary", "--num-classes", "2000000"), "--num-classes"),
        (("run", "--base-dim", "0"), "--base-dim"),
        (("run", "--repeat", "0"), "--repeat"),
        (("run", "--top-k", "0"), "--top-k"),
    ],
)
def test_counts_must_be_positive_and_sane(cli, args, name):
    line = one_line(cli(*args, code=USAGE))
    assert name in line and args[-1].lstrip("-") in line.replace(",", "")


@pytest.mark.parametrize(
    "args,name",
    [
        pytest.param(("summary", "--base-dim", "abc"), "--base-dim", id="base-dim-abc"),
        pytest.param(("summary", "--num-classes", "1.5"), "--num-classes", id="num-classes-float"),
        pytest.param(("summary", "--format", "nope"), "--format", id="unknown-format"),
        pytest.param(("summary", "--bogus"), "--bogus", id="unknown-option"),
        pytest.param(("nocommand",), "nocommand", id="unknown-command"),
    ],
)
def test_option_values_click_rejects_are_usage_errors(cli, args, name):
    line = one_line(cli(*args, code=USAGE))
    assert name in line


_TOKENS = st.one_of(
    st.integers(-3, 300).map(str),
    st.sampled_from(["", "3", "224", "200", "0", "a", "1.5", "-", "220-226", " 7 ", "9" * 25, "1e3", "x"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.text(max_size=30), st.lists(_TOKENS, max_size=6).map("x".join)))
def test_any_input_string_ends_in_a_documented_way(cli, value):
    result = cli("summary", f"--input={value}", "--format", "json", code=None)  # asserts no traceback
    assert result.exit_code in (0, USAGE, REJECTED), (value, result.stderr)
    if result.exit_code == USAGE:
        one_line(result)
        return
    doc = json.loads(result.stdout)
    docs = doc if isinstance(doc, list) else [doc]
    assert (result.exit_code == REJECTED) == any(d["error"] for d in docs)


# -- 2. sizes the head cannot take ----------------------------------------------------------------
def _boundary_cases() -> list[tuple[int, int]]:
    cases = []
    for s in (LO - 1, LO, HI, HI + 1):
        cases += [(s, 224), (224, s), (s, s)]
    cases += [(LO - 1, HI + 1), (HI + 1, LO - 1)]
    return list(dict.fromkeys(cases))


@pytest.mark.parametrize("h,w", _boundary_cases())
def test_the_size_boundary_in_each_dimension(cli, h, w):
    base = 64
    result = cli("summary", f"--input=1x3x{h}x{w}", "--format", "json", code=None)
    stop = expected_stop(h, w)
    assert result.exit_code == (REJECTED if stop else 0), result.stderr
    doc = json.loads(result.stdout)
    fh, fw = final_side(h), final_side(w)
    blocks = [r for r in doc["rows"] if r["kind"] == "block"]
    assert len(blocks) == 16
    assert blocks[-1]["out_shape"] == [1, base * 32, fh, fw]
    if stop is None:
        assert doc["error"] is None and doc["output_shape"] == [1, 2]
        assert result.stderr == ""
        return
    error = doc["error"]
    assert doc["output_shape"] is None
    assert error["module"] == stop
    assert str(LO) in error["hint"] and str(HI) in error["hint"]
    assert f"{fh}x{fw}" in error["message"]
    if stop == "fc_layer":
        ph, pw = fh - HEAD_KERNEL + 1, fw - HEAD_KERNEL + 1
        (pool,) = [r for r in doc["rows"] if r["name"] == "avgpool"]
        assert pool["out_shape"] == [1, base * 32, ph, pw]
        assert f"{ph}x{pw}" in error["message"]
        assert re.search(rf"\b{base * 32 * ph * pw:,}\b|\b{base * 32 * ph * pw}\b", error["message"])
    else:
        assert not [r for r in doc["rows"] if r["name"] in ("avgpool", "fc_layer")]
    (line,) = result.stderr.splitlines()
    assert stop in line and f"{h}x{w}" in line


def test_256_names_the_map_the_pooled_map_and_both_feature_counts(cli):
    base, side = 64, 256
    fs = final_side(side)
    pooled = fs - HEAD_KERNEL + 1
    features, takes = base * 32 * pooled * pooled, base * 32
    assert (fs, pooled, features, takes) == (8, 2, 8192, 2048)  # the issue's numbers
    result = cli("summary", f"--input=1x3x{side}x{side}", "--format", "json", code=REJECTED)
    doc = json.loads(result.stdout)
    message = doc["error"]["message"]
    assert doc["error"]["module"] == "fc_layer"
    assert f"{fs}x{fs}" in message and f"{pooled}x{pooled}" in message
    assert f"{features:,}" in message or str(features) in message
    assert f"{takes:,}" in message or str(takes) in message
    assert message in result.stderr


def test_run_shows_the_partial_trace_in_json(cli):
    base, side = 4, 256
    result = cli("run", "--base-dim", base, f"--input=1x3x{side}x{side}", "--format", "json", code=REJECTED)
    doc = json.loads(result.stdout)
    fs = final_side(side)
    assert doc["error"]["module"] == "fc_layer" and doc["output_shape"] is None
    blocks = [r for r in doc["rows"] if r["kind"] == "block"]
    assert len(blocks) == 16 and blocks[-1]["out_shape"] == [1, base * 32, fs, fs]
    assert doc["logits"] is None
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("command", ["summary", "run"])
def test_the_table_still_shows_the_rows_before_the_failure(cli, command):
    side = LO - 40
    assert expected_stop(side, side) == "avgpool"
    result = cli(command, "--base-dim", "4", f"--input=1x3x{side}x{side}", code=REJECTED)
    for stage, count in (("layer_2", 3), ("layer_3", 4), ("layer_4", 6), ("layer_5", 3)):
        for i in range(count):
            assert f"{stage}.{i}" in result.stdout
    (line,) = result.stderr.splitlines()
    assert "avgpool" in line and f"{LO}-{HI}" in line


# -- 3. files -------------------------------------------------------------------------------------
class WritesAFile:
    """Unpickling this opens ``path`` for writing: code a checkpoint must never run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


class RunsAShell:
    """Unpickling this runs a shell command."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.path))}",))


def _plain_pickle(protocol):
    def save(obj, path):
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=protocol)

    return save


def _torch_save(obj, path):
    torch.save({"weight": obj}, path)


SAVERS = {
    "pickle-2": _plain_pickle(2),
    "pickle-default": _plain_pickle(pickle.DEFAULT_PROTOCOL),
    "torch-save": _torch_save,
}


def _unsafe_load(path: Path, saver: str):
    if saver == "torch-save":
        return torch.load(path, weights_only=False)
    with open(path, "rb") as fh:
        return pickle.load(fh)


@pytest.mark.parametrize("payload", [WritesAFile, RunsAShell])
@pytest.mark.parametrize("saver", sorted(SAVERS))
@pytest.mark.parametrize("option", ["--weights", "--input-file"])
def test_a_pickle_that_runs_code_is_refused_unrun(cli, tmp_path, payload, saver, option):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    SAVERS[saver](payload(marker), path)
    _unsafe_load(path, saver)  # the file really is malicious: a plain load runs it
    assert marker.exists()
    marker.unlink()
    line = one_line(cli("run", "--base-dim", "4", option, path, code=USAGE))
    assert not marker.exists()
    assert option in line and "refused" in line and repr(str(path)) in line


def test_an_object_npy_is_refused_unrun(cli, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "x.npy"
    np.save(path, np.array([WritesAFile(marker), 1], dtype=object), allow_pickle=True)
    np.load(path, allow_pickle=True)  # the file really runs code when pickles are allowed
    assert marker.exists()
    marker.unlink()
    line = one_line(cli("run", "--base-dim", "4", "--input-file", path, code=USAGE))
    assert not marker.exists()
    assert "--input-file" in line and repr(str(path)) in line


@POSIX
def test_a_refused_pickle_is_one_line_from_the_real_process(tmp_path):
    """PyTorch warns about pickle protocols on stderr; the tool must still print one line only."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    _plain_pickle(pickle.DEFAULT_PROTOCOL)(WritesAFile(marker), path)
    proc = subprocess.run(
        [*_tool(), "run", "--base-dim", "4", "--weights", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == USAGE, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not marker.exists()


@pytest.fixture(scope="module")
def other_width(tmp_path_factory):
    """A seed model of base_dim 8 and 3 classes with its own weights, and an input for it."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(1234)
    model = ResNet(8, 3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    torch.save(model.state_dict(), folder / "sd.pt")
    torch.save(x, folder / "x.pt")
    with torch.no_grad():
        logits = model.eval()(x)
    return folder, model, x, logits


def test_a_checkpoint_of_another_width_names_what_it_holds_and_the_flags(cli, other_width):
    folder, *_ = other_width
    line = one_line(cli("run", "--weights", folder / "sd.pt", code=USAGE))
    assert "base_dim 8" in line and "num_classes 3" in line
    assert "--base-dim 8 --num-classes 3" in line
    line = one_line(cli("run", "--base-dim", "8", "--weights", folder / "sd.pt", code=USAGE))
    assert "num_classes 3" in line and "--num-classes 3" in line


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "module-prefix"])
def test_the_checkpoint_loads_with_its_flags_and_gives_the_models_logits(cli, other_width, tmp_path, wrap):
    folder, model, x, want = other_width
    sd = model.state_dict()
    obj = {
        "bare": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd},
        "module-prefix": {f"module.{k}": v for k, v in sd.items()},
    }[wrap]
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    flags = ("run", "--base-dim", "8", "--num-classes", "3", "--input-file", folder / "x.pt")
    doc = cli.json(*flags, "--weights", path)
    got = torch.tensor(doc["logits"], dtype=torch.float32)
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if wrap != "bare":
        return
    # Without the weights the same input gives other logits: the comparison above can fail.
    fresh = torch.tensor(cli.json(*flags)["logits"], dtype=torch.float32)
    assert not torch.allclose(fresh, want, atol=1e-3)


def test_a_fixed_variant_checkpoint_names_the_variant_flag(cli, tmp_path):
    path = tmp_path / "fixed.pt"
    torch.save(ResNet(4, 2, variant="fixed").state_dict(), path)
    line = one_line(cli("run", "--base-dim", "4", "--weights", path, code=USAGE))
    assert "--variant fixed" in line


def test_a_checkpoint_missing_a_key_names_it(cli, tmp_path):
    sd = ResNet(4, 2).state_dict()
    del sd["layer_3.1.dim_equalizer.bias"]
    path = tmp_path / "partial.pt"
    torch.save(sd, path)
    line = one_line(cli("run", "--base-dim", "4", "--weights", path, code=USAGE))
    assert "layer_3.1.dim_equalizer.bias" in line


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("this is not a checkpoint\n" * 40)
    (tmp_path / "fakezip.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pt")
    return {
        "missing": tmp_path / "nope.pt",
        "directory": tmp_path / "folder",
        "empty": tmp_path / "empty.pt",
        "text": tmp_path / "text.pt",
        "fake-zip": tmp_path / "fakezip.pt",
        "a-bare-tensor": tmp_path / "tensor.pt",
        "no-tensors": tmp_path / "list.pt",
    }


@pytest.mark.parametrize(
    "kind", ["missing", "directory", "empty", "text", "fake-zip", "a-bare-tensor", "no-tensors"]
)
def test_an_unusable_weights_file_is_one_usage_line(cli, tmp_path, kind):
    path = _bad_files(tmp_path)[kind]
    line = one_line(cli("run", "--base-dim", "4", "--weights", path, code=USAGE))
    assert "--weights" in line and repr(str(path)) in line


@pytest.mark.parametrize(
    "kind", ["missing", "directory", "empty", "text", "wrong-suffix", "4-channels", "empty-batch"]
)
def test_an_unusable_input_file_is_one_usage_line(cli, tmp_path, kind):
    files = _bad_files(tmp_path)
    files["wrong-suffix"] = tmp_path / "cat.png"
    files["wrong-suffix"].write_bytes(b"\x89PNG\r\n")
    files["4-channels"] = tmp_path / "four.pt"
    torch.save(torch.zeros(1, 4, 224, 224), files["4-channels"])
    files["empty-batch"] = tmp_path / "none.pt"
    torch.save(torch.zeros(0, 3, 224, 224), files["empty-batch"])
    path = files[kind]
    line = one_line(cli("run", "--base-dim", "4", "--input-file", path, code=USAGE))
    assert "--input-file" in line and repr(str(path)) in line


# -- 4. the memory guard --------------------------------------------------------------------------
UNIT = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50}


def _sizes(line: str) -> list[float]:
    return [
        float(n.replace(",", "")) * UNIT[u]
        for n, u in re.findall(r"([\d,]+(?:\.\d+)?) (PiB|TiB|GiB|MiB|KiB|B)\b", line)
    ]


def test_a_batch_far_beyond_the_limit_is_refused_quickly(cli, monkeypatch):
    limit = 24 * 2**30
    monkeypatch.setenv(LIMIT_VAR, str(limit))
    n = 100_000
    t0 = time.perf_counter()
    line = one_line(cli("run", f"--input={n}x3x224x224", code=USAGE))
    assert time.perf_counter() - t0 < 20
    assert "summary" in line
    # At least the input and layer_2's 4*64 x 56x56 float32 output must be held at once.
    floor = 4 * (n * 3 * 224 * 224 + n * 256 * 56 * 56)
    need, *rest = _sizes(line)
    assert need >= floor
    assert any(abs(s - limit) <= 0.001 * limit for s in rest), line  # the limit is stated


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="the guard reads /proc/meminfo")
def test_a_batch_far_beyond_this_machine_is_refused(cli, monkeypatch):
    monkeypatch.delenv(LIMIT_VAR, raising=False)
    line = one_line(cli("run", "--input=100000x3x224x224", code=USAGE))
    assert "summary" in line


def test_a_tiny_limit_refuses_even_the_default_input_and_a_large_one_allows_it(cli, monkeypatch):
    monkeypatch.setenv(LIMIT_VAR, "1000")
    line = one_line(cli("run", "--base-dim", "4", code=USAGE))
    assert LIMIT_VAR in line and "summary" in line
    monkeypatch.setenv(LIMIT_VAR, str(2**40))
    cli("run", "--base-dim", "4", "--format", "json")


def test_the_limit_variable_also_overrides_an_accelerators_measured_memory(monkeypatch):
    from resnet_trace.errors import UsageError
    from resnet_trace.memory import guard

    monkeypatch.delenv(LIMIT_VAR, raising=False)
    need = guard(10**9, "run 1x3x224x224", available=2**40, where="cuda memory")
    assert need == 10**9
    with pytest.raises(UsageError, match="run 1x3x224x224 needs about 953.7 MiB.*cuda memory"):
        guard(need, "run 1x3x224x224", available=need, where="cuda memory")  # more than 80% of it
    monkeypatch.setenv(LIMIT_VAR, "1000")
    with pytest.raises(UsageError, match=LIMIT_VAR):
        guard(need, "run 1x3x224x224", available=2**40, where="cuda memory")


def _largest_module_output(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """The truth for the guard: every module's output in a plain forward on meta, seen by torch's
    global forward hook (no recorder of ours); a head that refuses the map ends the forward."""
    sizes = [0]

    def hook(module, args, out):
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel())

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.no_grad():
            model(torch.empty(shape, device="meta"))
    except RuntimeError:
        pass
    finally:
        handle.remove()
    return max(sizes)


# 25 draws of the 3,780 combinations a run (each a meta build and a trace): over a few runs every
# height, width, head and variant is met; the database replays any failure found.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base_dim=st.sampled_from([1, 3, 16]),
    num_classes=st.sampled_from([1, 2, 10**6]),
    n=st.integers(1, 3),
    h=st.sampled_from([1, 31, 193, 224, 225, 256, 321]),
    w=st.sampled_from([1, 64, 197, 224, 230]),
    variant=st.sampled_from(["seed", "fixed"]),
    head=st.sampled_from(["avgpool7", "adaptive"]),
)
def test_the_guards_arithmetic_for_the_seed_matches_every_modules_output(
    base_dim, num_classes, n, h, w, variant, head
):
    """``layout.largest_output`` (the guard's term for the built-in model, instead of a trace) is
    the largest output of any module: of a real forward on meta, and of the tool's own trace."""
    from resnet_trace.layout import largest_output
    from resnet_trace.memory import largest_traced

    shape = (n, 3, h, w)
    with torch.device("meta"):
        model = ResNet(base_dim, num_classes, variant=variant, head=head)
    got = largest_output(shape, base_dim, num_classes, adaptive=head == "adaptive")
    assert got == _largest_module_output(model, shape)
    spec = ModelSpec(base_dim=base_dim, num_classes=num_classes, variant=variant, head=head)
    assert got == largest_traced(trace_shapes(build_target(spec), shape))


@pytest.mark.parametrize("value", ["lots", "-5", "1e400", "nan", "inf", "12 parsecs"])
def test_a_malformed_memory_limit_is_a_usage_error(cli, monkeypatch, value):
    monkeypatch.setenv(LIMIT_VAR, value)
    line = one_line(cli("run", "--base-dim", "4", code=USAGE))
    assert LIMIT_VAR in line and repr(value) in line


# -- 5. pipes and signals -------------------------------------------------------------------------
def _tool() -> list[str]:
    """The installed console script when there is one, else the module."""
    script = shutil.which("resnet-trace")
    return [script] if script else [sys.executable, "-m", "resnet_trace"]


def _write_to_a_closed_pipe(*args: str) -> subprocess.CompletedProcess:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the tool writes a byte
    try:
        return subprocess.run(
            [*_tool(), *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120
        )
    finally:
        os.close(write_end)


QUIET = ("Traceback", "BrokenPipeError", "Exception ignored")


@POSIX
def test_a_closed_pipe_ends_quietly():
    proc = _write_to_a_closed_pipe("summary", "--format", "json", "--depth", "layer")
    assert not any(word in proc.stderr for word in QUIET), proc.stderr


@POSIX
@pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("head") is None, reason="needs bash and head"
)
def test_head_dash_one_ends_quietly():
    # --depth layer makes the document (~80 kB) larger than a pipe's buffer.
    command = " ".join(shlex.quote(a) for a in [*_tool(), "summary", "--format", "json", "--depth", "layer"])
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | head -1"], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout == "{\n"
    assert not any(word in proc.stderr for word in QUIET), proc.stderr


@POSIX
def test_a_closed_pipe_does_not_report_differences():
    proc = _write_to_a_closed_pipe("summary", "--format", "json", "--depth", "layer")
    assert proc.returncode == 0


@POSIX
def test_ctrl_c_exits_130_without_a_traceback():
    proc = subprocess.Popen(
        [sys.executable, "-m", "resnet_trace", "run", "--input", "64x3x224x224", "--repeat", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job starts with SIGINT ignored; give the tool the default a terminal gives.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_until_computing(proc)  # torch imported and the forward running; fails if the run ended
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == INTERRUPTED, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_an_interrupt_inside_a_command_exits_130(cli, monkeypatch):
    import resnet_trace.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(resnet_trace.pipeline, "shape_only", interrupted)
    result = cli("summary", code=INTERRUPTED)
    assert result.stdout == ""


# -- internal errors ------------------------------------------------------------------------------
@pytest.fixture
def broken(monkeypatch):
    """Make tracing raise a plain exception, as a bug of ours would."""
    import resnet_trace.pipeline

    def boom(*args, **kwargs):
        raise ValueError("boom from a test\nsecond line")

    monkeypatch.setattr(resnet_trace.pipeline, "shape_only", boom)


def test_an_internal_error_is_one_line_and_exit_4(cli, broken):
    line = one_line(cli("summary", code=INTERNAL))
    assert "internal error" in line and "ValueError" in line and "boom from a test" in line
    assert "--debug" in line


@pytest.mark.parametrize("args", [("--debug", "summary"), ("summary", "--debug")])
def test_debug_shows_the_traceback(broken, args):
    from resnet_trace.cli import app

    result = CliRunner().invoke(app, list(args), prog_name="resnet-trace")
    assert result.exit_code == INTERNAL
    assert "Traceback" in result.stderr and "boom from a test" in result.stderr
    assert "Traceback" not in result.stdout


def test_a_value_spelled_debug_does_not_turn_debug_on(cli, broken, monkeypatch):
    """``--filter --debug`` filters by the regex "--debug": the parsed options decide, not argv's words."""
    monkeypatch.delenv("RESNET_TRACE_DEBUG", raising=False)
    line = one_line(cli("summary", "--filter", "--debug", code=INTERNAL))
    assert "internal error" in line and "boom from a test" in line


def test_the_debug_environment_variable_shows_the_traceback(broken, monkeypatch):
    from resnet_trace.cli import app

    monkeypatch.setenv("RESNET_TRACE_DEBUG", "1")
    result = CliRunner().invoke(app, ["summary"], prog_name="resnet-trace")
    assert result.exit_code == INTERNAL and "Traceback" in result.stderr


# -- 6. a forward stopped by an exception that is not the model's ---------------------------------
def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("stop", [KeyboardInterrupt, MemoryError])
@pytest.mark.parametrize("shape_only", [False, True])
def test_an_interrupted_trace_leaves_the_model_as_it_was(stop, shape_only):
    target = build_target(ModelSpec(base_dim=4), device="meta" if shape_only else "cpu", init_seed=0)
    model = target.model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    block = model.layer_3[1]

    def forward(x):
        raise stop()

    block.forward = forward  # an instance attribute shadows the method
    # Ctrl-C propagates; a MemoryError in a forward may instead end the trace as the model's failure.
    try:
        if shape_only:
            got = trace_shapes(target, (1, 3, 224, 224))
        else:
            got = trace_run(target, torch.randn(1, 3, 224, 224))
    except stop:
        pass
    except OutOfMemory as exc:  # a real forward's allocation failure is ours to say (exit 2)
        assert stop is MemoryError and not shape_only and "MemoryError in layer_3.1" in str(exc)
    else:
        assert stop is MemoryError and got.error is not None and "MemoryError" in got.error.message
    del block.forward
    assert _hooks(model) == 0
    assert model.training is True
    after = model.state_dict()
    assert list(after) == list(before)
    if not shape_only:
        assert all(torch.equal(before[k], after[k]) for k in before)
