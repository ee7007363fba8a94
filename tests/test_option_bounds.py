"""Every bounded number a command reads is bounded by Typer's ``min``/``max`` (issue 21), the same
bounds on every command that takes the flag; a value outside is one usage line naming the flag
and the range, exit 2, before any work. The groups of flags (the model's, the output's, the
rows') are the same on every command that takes them.

The bounds are the documented ones (docs/api.md, spec.LIMITS), typed here by hand."""

from __future__ import annotations

import pytest

USAGE = 2
BOUNDS = {  # flag: (lowest, highest)
    "--base-dim": (1, 2**14),
    "--num-classes": (1, 2**20),
    "--seed": (0, 2**63 - 1),
    "--repeat": (1, 10_000),
    "--top-k": (1, 2**20),
    "--target": (0, 2**20 - 1),
    "--gpus": (1, 2**20),
}
TAKES = {  # command: the bounded flags it takes (check's base-dim/num-classes override the golden's)
    "summary": ("--base-dim", "--num-classes", "--gpus"),
    "run": ("--base-dim", "--num-classes", "--seed", "--repeat", "--top-k", "--target", "--gpus"),
    "compare": ("--base-dim", "--num-classes", "--seed", "--target"),
    "graph": ("--base-dim", "--num-classes"),
    "tree": ("--base-dim", "--num-classes"),
    "check": ("--base-dim", "--num-classes"),
}
CASES = [
    (command, flag, value)
    for command, flags in TAKES.items()
    for flag in flags
    for value in (BOUNDS[flag][0] - 1, BOUNDS[flag][1] + 1)
]


@pytest.mark.parametrize(("command", "flag", "value"), CASES, ids=[f"{c}{f}={v}" for c, f, v in CASES])
def test_a_number_out_of_its_range_is_one_usage_line(cli, tmp_path, command, flag, value):
    golden = tmp_path / "missing.json"  # never read: the bound is checked first
    args = [command, *([golden] if command == "check" else []), flag, str(value)]
    result = cli(*args, code=USAGE)
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    low, high = BOUNDS[flag]
    assert line.startswith("resnet-trace: error: ") and f"'{flag}'" in line and str(value) in line
    assert f"{low}<=x<={high}" in line


@pytest.mark.parametrize("flag", ["--base-dim", "--top-k", "--seed"])
def test_the_bounds_themselves_are_accepted(cli, flag):
    low = BOUNDS[flag][0]
    # the lowest value of each (base 1 when the flag is not --base-dim itself): a real forward at
    # base 1 of the seed, 1 class per sample shown
    args = ["run", "--base-dim", "1", flag, str(low), "--format", "json"]
    result = cli(*args, code=0)
    assert result.stderr == "" or "note:" in result.stderr


def test_the_model_flags_are_one_group_on_every_command_that_chooses_a_model(cli):
    model_flags = [
        "--base-dim",
        "--num-classes",
        "--variant",
        "--head",
        "--model",
        "--model-arg",
        "--block",
        "--skip",
    ]
    for command in ("summary", "run", "graph", "tree"):
        lines = [ln.split()[0] for ln in cli(command, "--help").stdout.splitlines() if ln.startswith("  --")]
        at = lines.index("--base-dim")
        assert lines[at : at + len(model_flags)] == model_flags, command  # together, in one order


def test_tree_refuses_skip_which_it_cannot_honour():
    """``--skip`` names what summary and run report as a block's skip path; a tree has none, so the
    flag is refused (exit 2, one line), never accepted and ignored."""
    from typer.testing import CliRunner

    from resnet_trace.cli import app

    result = CliRunner().invoke(
        app, ["tree", "--base-dim", "4", "--skip", "downsample"], prog_name="resnet-trace"
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "resnet-trace: error: --skip names the skip path summary and run report; the tree has none"
    ]
    plain = CliRunner().invoke(app, ["tree", "--base-dim", "4"], prog_name="resnet-trace")
    assert plain.exit_code == 0 and "layer_1" in plain.stdout
