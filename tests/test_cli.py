"""The CLI's own contract: the table a person reads, the JSON keys, the console script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import arith
import pytest

ANSI = re.compile(r"\x1b\[")


def test_summary_table_has_sixteen_numbered_blocks_and_reference_totals(cli):
    out = cli("summary", "--base-dim", "64").stdout
    numbered = [line for line in out.splitlines() if re.match(r"^\s*\d+\s+layer_\d\.\d", line)]
    assert len(numbered) == 16
    tot = arith.totals(64, 2, 1)
    total_line = next(line for line in out.splitlines() if line.strip().startswith("total"))
    assert f"{tot['params']:,}" in total_line and f"{tot['macs']:,}" in total_line
    assert f"{tot['unused']:,}" in out
    for name in ("layer_2.2.dim_equalizer", "layer_3.3.dim_equalizer", "layer_4.5.dim_equalizer"):
        assert name in out
    assert not ANSI.search(out)  # not a terminal: plain text


@pytest.mark.parametrize(("base", "classes", "n"), [(64, 2, 1), (16, 10, 4), (1, 1, 2)])
def test_json_contract(cli, base, classes, n):
    doc = cli.json(
        "summary", "--base-dim", str(base), "--num-classes", str(classes), "--input", f"{n}x3x224x224"
    )
    assert doc["schema"] == "resnet-trace/1" and doc["command"] == "summary"
    assert doc["model"]["base_dim"] == base and doc["model"]["num_classes"] == classes
    assert doc["device"] == "meta" and doc["input_shape"] == [n, 3, 224, 224]
    assert doc["output_shape"] == [n, classes] and doc["error"] is None
    names = [r["name"] for r in doc["rows"]]
    assert names[0] == "layer_1" and names[-2:] == ["avgpool", "fc_layer"] and len(names) == 19
    assert [r["kind"] for r in doc["rows"]][:2] == ["stem", "block"]
    expected = arith.blocks(base, n, 224, 224)
    blocks = [r for r in doc["rows"] if r["kind"] == "block"]
    for row, b in zip(blocks, expected, strict=True):
        assert row["name"] == b.name and row["stage"] == b.stage and row["down"] == b.down
        assert row["in_shape"] == list(b.in_shape) and row["out_shape"] == list(b.out_shape)
        assert (row["skip"], row["params"], row["params_unused"], row["macs"]) == (
            b.skip,
            b.params,
            b.unused,
            b.macs,
        )
    tot = arith.totals(base, classes, n)
    assert doc["totals"]["params"] == tot["params"] and doc["totals"]["macs"] == tot["macs"]
    assert doc["totals"]["params_unused"] == tot["unused"]
    assert doc["totals"]["unused_modules"] == [
        "layer_2.2.dim_equalizer",
        "layer_3.3.dim_equalizer",
        "layer_4.5.dim_equalizer",
    ]


def test_run_and_summary_agree_on_shapes_and_skips(cli):
    s = cli.json("summary", "--base-dim", "4", "--input", "2x3x200x224")
    r = cli.json("run", "--base-dim", "4", "--input", "2x3x200x224")

    def keys(d):
        return [(x["name"], x["in_shape"], x["out_shape"], x["skip"], x["macs"]) for x in d["rows"]]

    assert keys(s) == keys(r) and r["device"] == "cpu"


def test_messages_go_to_stderr_and_data_to_stdout(cli):
    result = cli("summary", "--input", "1x3x256x256", "--format", "json", code=3)
    doc = json.loads(result.stdout)
    assert doc["error"]["module"] == "fc_layer"
    assert "fc_layer" in result.stderr


def test_help_lists_commands_and_exit_codes(cli):
    out = cli("--help").stdout
    for word in ("summary", "run", "check", "diff", "schema", "compare", "graph", "tree", "Exit codes"):
        assert word in out
    assert "Exit codes" in cli("summary", "--help").stdout


def test_console_script_in_a_real_subprocess():
    exe = shutil.which("resnet-trace")
    cmd = [exe] if exe else [sys.executable, "-m", "resnet_trace"]
    env = {**os.environ, "NO_COLOR": "1"}
    out = subprocess.run(
        [*cmd, "summary", "--format", "json"], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["totals"]["macs"] == arith.totals(64, 2, 1)["macs"]
    mod = subprocess.run(
        [sys.executable, "-m", "resnet_trace", "--version"], capture_output=True, text=True, timeout=60
    )
    assert mod.returncode == 0 and mod.stdout.startswith("resnet-trace ")


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--device", "meta", "--weights", "nothing.pt"),
        ("summary", "--model", "x.py:Net", "--variant", "fixed"),
        ("compare", "--input", "1x3x200-201x224"),
        ("graph", "--input", "1x3x200-201x224"),
        ("tree", "--format", "csv"),
        ("summary", "-f", "json", "--svg", "no/such/folder/t.svg"),
    ],
)
def test_options_that_cannot_apply_are_refused_before_any_output(cli, args):
    result = cli(*args, code=2)
    assert not result.stdout and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "code", "stdout_has", "stderr_has"),
    [
        (["--debug", "summary", "--base-dim", "8", "--format", "json"], 0, '"base_dim": 8', None),
        (["tree", "--base-dim", "8"], 0, "621,810 params", None),
        (["--help"], 0, "compare", None),
        (["--help", "summary"], 0, "compare", None),
        (["--debug", "-h", "run"], 0, "compare", None),
        (["nosuch"], 2, None, "No such command 'nosuch'"),
        (["summary", "--help"], 0, "--base-dim", None),
    ],
)
def test_console_script_registers_the_named_command_and_still_knows_the_others(
    argv, code, stdout_has, stderr_has
):
    # main() registers only the command named on the line; the rest of the CLI must not notice
    out = subprocess.run(
        [sys.executable, "-m", "resnet_trace", *argv], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == code, out.stderr
    if stdout_has:
        assert stdout_has in out.stdout
    if stderr_has:
        assert stderr_has in out.stderr and len(out.stderr.strip().splitlines()) == 1
    if stdout_has == "compare":  # the group's help lists every command
        for word in ("summary", "run", "check", "diff", "schema", "graph", "tree"):
            assert word in out.stdout
