"""-o/--output: written atomically, refused before any work when it cannot be.

Expected numbers come from tests/arith.py (layer arithmetic typed by hand), never from the tool."""

from __future__ import annotations

import errno
import json
import os
import stat

import arith
import pytest
from arith import failing_module
from formats import FORMATS


# -- 2. -o/--output ----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_output_file_equals_stdout(cli, tmp_path, fmt):
    stdout = cli("summary", "--format", fmt).stdout
    target = tmp_path / f"out.{fmt}"
    result = cli("summary", "--format", fmt, "-o", target)
    assert result.stdout == ""
    assert target.read_bytes() == stdout.encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_output_replaces_an_existing_file(cli, tmp_path):
    target = tmp_path / "g.json"
    target.write_text("old content\n")
    cli("summary", "--format", "json", "--output", target)
    assert json.loads(target.read_text())["totals"]["params"] == arith.totals(64, 2, 1)["params"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json"]


def test_output_of_a_rejected_input_is_still_written_with_exit_3(cli, tmp_path):
    target = tmp_path / "f.json"
    result = cli("summary", "-i", "1x3x256x256", "--format", "json", "-o", target, code=3)
    assert result.stdout == ""
    doc = json.loads(target.read_text())
    assert doc["output_shape"] is None
    assert doc["error"]["module"] == failing_module(256, 256) == "fc_layer"


class _HalfWriter:
    """A file object that writes half of the text, then fails as a full disk does."""

    def __init__(self, fh):
        self.fh = fh

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def write(self, text):
        self.fh.write(text[: len(text) // 2])
        self.fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        self.fh.flush()

    def fileno(self):
        return self.fh.fileno()


def _interrupt(monkeypatch, where: str) -> None:
    os_mod = os
    if where == "write":
        real_fdopen = os_mod.fdopen
        monkeypatch.setattr(os_mod, "fdopen", lambda fd, *a, **k: _HalfWriter(real_fdopen(fd, *a, **k)))
    elif where == "fsync":

        def fsync(fd):
            raise KeyboardInterrupt

        monkeypatch.setattr(os_mod, "fsync", fsync)
    else:

        def replace(src, dst):
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os_mod, "replace", replace)


@pytest.mark.parametrize("existed", [False, True], ids=["new", "existing"])
@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_interrupted_output_leaves_no_partial_file(cli, tmp_path, monkeypatch, where, existed):
    target = tmp_path / "golden.json"
    if existed:
        target.write_text("previous\n")
    _interrupt(monkeypatch, where)
    result = cli("summary", "--format", "json", "-o", target, code=None)
    monkeypatch.undo()
    if where == "fsync":
        assert result.exit_code == 130
        assert len(result.stderr.strip().splitlines()) <= 1, result.stderr
    else:
        assert result.exit_code not in (0, 1, 3)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    if existed:
        assert target.read_text() == "previous\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["golden.json"]
    else:
        assert not target.exists()
        assert list(tmp_path.iterdir()) == []


def test_output_into_a_missing_folder_is_a_usage_error(cli, tmp_path):
    result = cli("summary", "-o", tmp_path / "nope" / "g.json", code=2)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nope").exists()


def test_output_naming_a_directory_is_a_usage_error(cli, tmp_path):
    folder = tmp_path / "dir"
    folder.mkdir()
    result = cli("summary", "-o", folder, code=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]
    assert list(folder.iterdir()) == []
    assert result.exit_code == 2, result.stderr


def test_output_file_gets_the_same_mode_as_a_plain_write(cli, tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    target = tmp_path / "g.csv"
    cli("summary", "--format", "csv", "-o", target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


# -- -o never replaces what the command reads (issue: hostile input, round 3) ---------------------
def _run_refused(cli, tmp_path, args, victim):
    before = victim.read_bytes()
    result = cli(*args, code=2)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "would replace" in result.stderr
    assert victim.read_bytes() == before  # untouched, byte for byte
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_output_naming_an_input_file_or_weights_is_refused(cli, tmp_path):
    import numpy as np
    import torch

    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 224, 224), dtype=np.float32))
    _run_refused(cli, tmp_path, ("run", "--input-file", x, "-o", x), x)
    w = tmp_path / "w.pt"
    from resnet_trace.model import ResNet

    torch.save(ResNet(4, 2).state_dict(), w)
    _run_refused(cli, tmp_path, ("run", "--base-dim", "4", "--weights", w, "-o", w), w)
    _run_refused(cli, tmp_path, ("run", "--base-dim", "4", "--weights", w, "--svg", w), w)


def test_output_naming_a_golden_a_diff_side_or_the_model_file_is_refused(cli, tmp_path):
    golden = tmp_path / "g.json"
    cli("summary", "--base-dim", "4", "--format", "json", "-o", golden)
    _run_refused(cli, tmp_path, ("check", golden, "-o", golden), golden)
    other = tmp_path / "b.json"
    other.write_bytes(golden.read_bytes())
    _run_refused(cli, tmp_path, ("diff", golden, other, "-o", golden), golden)
    _run_refused(cli, tmp_path, ("diff", golden, other, "-o", other), other)
    um = tmp_path / "um.py"
    um.write_text("from torch import nn\n\ndef Net():\n    return nn.Sequential(nn.Conv2d(3, 4, 3))\n")
    for command in ("summary", "graph", "tree"):
        _run_refused(cli, tmp_path, (command, "--model", f"{um}:Net", "-o", um), um)


def test_output_naming_an_input_through_a_symlink_or_a_hard_link_is_refused(cli, tmp_path):
    golden = tmp_path / "g.json"
    cli("summary", "--base-dim", "4", "--format", "json", "-o", golden)
    (tmp_path / "soft.json").symlink_to(golden)
    os.link(golden, tmp_path / "hard.json")
    _run_refused(cli, tmp_path, ("check", golden, "-o", tmp_path / "soft.json"), golden)
    _run_refused(cli, tmp_path, ("check", golden, "-o", tmp_path / "hard.json"), golden)
    _run_refused(cli, tmp_path, ("check", tmp_path / "hard.json", "-o", golden), golden)


def test_svg_and_output_naming_one_file_is_refused_before_any_work(cli, tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("keep me\n")
    _run_refused(cli, tmp_path, ("summary", "-o", target, "--svg", target), target)
    _run_refused(cli, tmp_path, ("compare", "-o", target, "--svg", target), target)
    # a device is written into, never replaced: naming it twice is fine
    cli("summary", "--base-dim", "4", "-o", os.devnull, "--svg", os.devnull)


def test_output_with_a_trailing_slash_names_a_folder(cli, tmp_path):
    result = cli("summary", "--base-dim", "4", "-o", f"{tmp_path}/newdir/", code=2)
    assert "names a folder" in result.stderr and result.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_dev_stdout_and_dev_stderr_write_to_the_streams_even_into_a_pipe():
    import subprocess
    import sys

    args = [sys.executable, "-m", "resnet_trace", "summary", "--base-dim", "4", "-f", "json"]
    out = subprocess.run([*args, "-o", "/dev/stdout"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model"]["base_dim"] == 4
    err = subprocess.run([*args, "-o", "/dev/stderr"], capture_output=True, text=True, timeout=120)
    assert err.returncode == 0 and err.stdout == ""
    assert json.loads(err.stderr)["model"]["base_dim"] == 4
