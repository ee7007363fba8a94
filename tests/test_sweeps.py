"""Many inputs in one process: sweeps, arrays of documents, exit codes per input.

Expected numbers come from tests/arith.py (layer arithmetic typed by hand), never from the tool."""

from __future__ import annotations

import json

import arith
import pytest
from arith import failing_module, head_accepts, x
from formats import BLOCK_NAMES, DEFAULT_ROWS, csv_rows


# -- 3. many inputs, one process ---------------------------------------------------------------
def test_derived_accepted_range_is_193_to_224_and_the_tool_agrees(cli):
    accepted = [s for s in range(1, 600) if head_accepts(s)]
    assert accepted == list(range(193, 225))
    assert cli.json("summary")["accepted_sizes"] == [accepted[0], accepted[-1]]


def test_two_inputs_json_array_jsonl_lines_table_sections(cli):
    inputs = [(1, 3, 224, 224), (2, 3, 200, 210)]
    args = [a for s in inputs for a in ("--input", x(s))]
    docs = cli.json("summary", *args)
    assert isinstance(docs, list) and [d["input_shape"] for d in docs] == [list(s) for s in inputs]
    for doc, (n, _, h, w) in zip(docs, inputs):
        assert doc["output_shape"] == [n, 2] and doc["error"] is None
        assert doc["totals"]["macs"] == arith.totals(64, 2, n, h, w)["macs"]
        assert [r["name"] for r in doc["rows"]] == DEFAULT_ROWS
    lines = cli("summary", *args, "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line) for line in lines] == docs
    table = cli("summary", *args).stdout
    titles = [line for line in table.splitlines() if line.startswith("summary · ")]
    assert len(titles) == 2
    assert titles[0].endswith(" · input 1x3x224x224 · meta float32")
    assert "input 2x3x200x210" in titles[1]
    assert "2 of 2 inputs ran through" in table
    one = cli.json("summary", "--input", "1x3x224x224")
    assert isinstance(one, dict) and one == docs[0]


#: its tests on one worker under pytest-xdist: the thirty-input sweep (2 s) is run once
SWEEP30 = pytest.mark.xdist_group("sweep30")


@pytest.fixture(scope="module")
def sweep30():
    """One process, thirty inputs 1x3x190..219x224: every format from the same call shape."""
    from typer.testing import CliRunner

    from resnet_trace.cli import app

    runner = CliRunner()
    out = {}
    for fmt in ("json", "jsonl", "csv", "table"):
        r = runner.invoke(
            app, ["summary", "-i", "1x3x190-219x224", "--format", fmt], prog_name="resnet-trace"
        )
        out[fmt] = r
    return out


SWEEP_H = list(range(190, 220))


@SWEEP30
def test_thirty_inputs_json_each_document_consistent(sweep30):
    result = sweep30["json"]
    failing = [h for h in SWEEP_H if failing_module(h, 224)]
    assert failing == [190, 191, 192]
    assert result.exit_code == 3
    docs = json.loads(result.stdout)
    assert [d["input_shape"] for d in docs] == [[1, 3, h, 224] for h in SWEEP_H]
    for doc, h in zip(docs, SWEEP_H):
        module = failing_module(h, 224)
        if module is None:
            assert doc["error"] is None and doc["output_shape"] == [1, 2], h
            assert doc["totals"]["macs"] == arith.totals(64, 2, 1, h, 224)["macs"], h
            assert [r["name"] for r in doc["rows"]] == DEFAULT_ROWS
        else:
            assert doc["output_shape"] is None, h
            assert doc["error"]["module"] == module, h
            names = [r["name"] for r in doc["rows"]]
            assert names == DEFAULT_ROWS[: len(names)] and set(BLOCK_NAMES) <= set(names)
            assert "fc_layer" not in names
    # Failures are reported on stderr, one line each (at most a few, then a count).
    assert result.stderr and "avgpool" in result.stderr


@SWEEP30
def test_thirty_inputs_jsonl_and_csv_and_table(sweep30):
    docs = json.loads(sweep30["json"].stdout)
    assert sweep30["jsonl"].exit_code == 3
    assert [json.loads(line) for line in sweep30["jsonl"].stdout.splitlines()] == docs
    assert sweep30["csv"].exit_code == 3
    rows = csv_rows(sweep30["csv"].stdout)
    assert [r["input"] for r in rows] == [x(d["input_shape"]) for d in docs for _ in d["rows"]]
    for h in SWEEP_H:
        names = {r["name"] for r in rows if r["input"] == f"1x3x{h}x224"}
        assert ("fc_layer" in names) == (failing_module(h, 224) is None)
    table = sweep30["table"]
    assert table.exit_code == 3
    passed = sum(1 for h in SWEEP_H if failing_module(h, 224) is None)
    assert f"{passed} of 30 inputs ran through" in table.stdout
    assert passed == 27
    assert len([ln for ln in table.stdout.splitlines() if ln.startswith("summary · ")]) == 30


@pytest.mark.parametrize(
    ("spec", "sizes"),
    [
        ("1x3x193-224:31x224", [(193, 224), (224, 224)]),
        ("1x3x190-230:10x224", [(h, 224) for h in (190, 200, 210, 220, 230)]),
        ("1x3x224x190-230:20", [(224, w) for w in (190, 210, 230)]),
        ("1x3x192-194x224", [(192, 224), (193, 224), (194, 224)]),
    ],
)
def test_sweeps_with_step_and_exit_code(cli, spec, sizes):
    docs = cli("summary", "-i", spec, "--format", "jsonl", code=None)
    got = [json.loads(line) for line in docs.stdout.splitlines()]
    assert [tuple(d["input_shape"][2:]) for d in got] == sizes
    modules = [failing_module(h, w) for h, w in sizes]
    assert [(d["error"] or {}).get("module") for d in got] == modules
    assert docs.exit_code == (3 if any(modules) else 0)


def test_square_sweep_sweeps_h_and_w_together(cli):
    result = cli("summary", "-i", "1x3x190-195x190-195", "--format", "jsonl", code=None)
    assert result.exit_code == 3, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["input_shape"] for d in got] == [[1, 3, s, s] for s in range(190, 196)]
    assert [(d["error"] or {}).get("module") for d in got] == [failing_module(s, s) for s in range(190, 196)]


def test_square_sweep_with_step(cli):
    result = cli("summary", "-i", "1x3x200-224:12x200-224:12", "--format", "jsonl")
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["input_shape"] for d in got] == [[1, 3, s, s] for s in (200, 212, 224)]


@pytest.mark.parametrize("value", ["1x3x190-200x200-210", "1-2x3x190-200x224", "1x3x200-190x224"])
def test_unsweepable_inputs_are_usage_errors(cli, value):
    result = cli("summary", "-i", value, "--format", "json", code=2)
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and value in result.stderr
