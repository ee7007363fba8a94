"""check: a golden trace re-traced and compared field by field.

Expected numbers come from tests/arith.py (layer arithmetic typed by hand), never from the tool."""

from __future__ import annotations

import json

import arith
import pytest
from arith import expected_rows, x


# -- 4. check ----------------------------------------------------------------------------------
def _diffs(cli, *args, code):
    result = cli("check", *args, "--format", "json", code=code)
    doc = json.loads(result.stdout)
    assert doc["equal"] is (code == 0)
    return doc["differences"]


@pytest.mark.parametrize(
    "config",
    [
        (),
        ("--base-dim", "8", "--num-classes", "3", "--input", "2x3x200x210"),
        ("--variant", "fixed"),
        ("--input", "1x3x224x224", "--input", "2x3x200x200", "--input", "1x3x190x224"),
        ("--depth", "layer", "--base-dim", "4"),
        ("--collapse",),
    ],
    ids=["default", "base8", "fixed", "multi", "layer", "collapse"],
)
def test_check_passes_on_its_own_saved_output(cli, tmp_path, config):
    golden = tmp_path / "golden.json"
    failing = "1x3x190x224" in config
    cli("summary", *config, "--format", "json", "-o", golden, code=3 if failing else 0)
    result = cli("check", golden)
    assert result.stdout.strip()
    assert _diffs(cli, golden, code=0) == []


def test_check_passes_on_a_jsonl_golden_and_a_run_golden(cli, tmp_path):
    jl = tmp_path / "g.jsonl"
    cli("summary", "-i", "1x3x224x224", "-i", "1x3x200x224", "--format", "jsonl", "-o", jl)
    assert _diffs(cli, jl, code=0) == []
    run = tmp_path / "run.json"
    cli("run", "--base-dim", "4", "--format", "json", "-o", run)
    assert _diffs(cli, run, code=0) == []


def test_check_fails_when_one_recorded_shape_is_edited(cli, tmp_path):
    golden = tmp_path / "golden.json"
    cli("summary", "--format", "json", "-o", golden)
    doc = json.loads(golden.read_text())
    assert doc["rows"][5]["name"] == "layer_3.1"
    doc["rows"][5]["out_shape"] = [1, 999, 28, 28]
    golden.write_text(json.dumps(doc))
    real = expected_rows(64)["layer_3.1"]["out_shape"]
    assert _diffs(cli, golden, code=1) == [
        {"row": "layer_3.1", "field": "out_shape", "expected": [1, 999, 28, 28], "got": list(real)}
    ]
    result = cli("check", golden, code=1)
    assert "layer_3.1" in result.stdout and "out_shape" in result.stdout
    assert "1x999x28x28" in result.stdout and x(real) in result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_names_the_input_of_a_multi_input_golden(cli, tmp_path):
    golden = tmp_path / "golden.json"
    cli("summary", "-i", "1x3x224x224", "-i", "2x3x200x200", "--format", "json", "-o", golden)
    docs = json.loads(golden.read_text())
    docs[1]["rows"][5]["params"] += 1
    golden.write_text(json.dumps(docs))
    (d,) = _diffs(cli, golden, code=1)
    params = arith.blocks(64, 2, 200, 200)[4].params  # layer_3.1
    assert "layer_3.1" in d["row"] and "2x3x200x200" in d["row"]
    assert (d["field"], d["expected"], d["got"]) == ("params", params + 1, params)


def test_check_flags_override_the_recorded_configuration(cli, tmp_path):
    golden = tmp_path / "golden.json"
    cli("summary", "--base-dim", "8", "--num-classes", "3", "-i", "2x3x200x210", "-f", "json", "-o", golden)
    diffs = _diffs(cli, golden, "--base-dim", "16", code=1)
    by = {(d["row"], d["field"]): d for d in diffs}
    b8, b16 = arith.blocks(8, 2, 200, 210), arith.blocks(16, 2, 200, 210)
    for e, g in zip(b8, b16):
        assert (by[(e.name, "params")]["expected"], by[(e.name, "params")]["got"]) == (e.params, g.params)
    t8, t16 = arith.totals(8, 3, 2, 200, 210), arith.totals(16, 3, 2, 200, 210)
    assert by[("(totals)", "params")]["expected"] == t8["params"]
    assert by[("(totals)", "params")]["got"] == t16["params"]
    # The same override with the recorded value changes nothing.
    assert _diffs(cli, golden, "--base-dim", "8", code=0) == []


def test_check_input_override_retraces_another_shape(cli, tmp_path):
    golden = tmp_path / "golden.json"
    cli("summary", "--format", "json", "-o", golden)
    by = {(d["row"], d["field"]): d for d in _diffs(cli, golden, "-i", "1x3x200x200", code=1)}
    assert (by[("(trace)", "input_shape")]["expected"], by[("(trace)", "input_shape")]["got"]) == (
        [1, 3, 224, 224],
        [1, 3, 200, 200],
    )
    macs = (arith.totals(64, 2, 1)["macs"], arith.totals(64, 2, 1, 200, 200)["macs"])
    assert (by[("(totals)", "macs")]["expected"], by[("(totals)", "macs")]["got"]) == macs
    assert ("(totals)", "params") not in by  # the same model


def test_check_variant_override_reports_the_skip_paths(cli, tmp_path):
    golden = tmp_path / "fixed.json"
    cli("summary", "--variant", "fixed", "-f", "json", "-o", golden)
    diffs = _diffs(cli, golden, "--variant", "seed", code=1)
    skips = {d["row"]: (d["expected"], d["got"]) for d in diffs if d["field"] == "skip"}
    fixed, seed = arith.blocks(64, 1, 224, 224, "fixed"), arith.blocks(64, 1, 224, 224)
    assert skips == {f.name: (f.skip, s.skip) for f, s in zip(fixed, seed) if f.skip != s.skip}
    assert skips  # the fixed variant drops equal-shape equalizers


def test_check_rejects_bad_golden_files(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("not json\n")
    for path in (bad, tmp_path / "missing.json"):
        result = cli("check", path, code=2)
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.pop("input_shape"),
        lambda d: d["rows"][0].pop("name"),
        lambda d: d.__setitem__("depth", "deep"),
        lambda d: d["model"].__setitem__("base_dim", "abc"),
        lambda d: d.__setitem__("input_shape", "1x3x224x224"),
        lambda d: d.__setitem__("model", [1]),
        lambda d: d.__setitem__("input_shape", [1, 1, 224, 224]),
    ],
    ids=[
        "no-input",
        "row-without-name",
        "bad-depth",
        "bad-base-dim",
        "shape-as-text",
        "model-list",
        "one-channel",
    ],
)
def test_a_malformed_golden_is_a_usage_error(cli, tmp_path, edit):
    golden = tmp_path / "g.json"
    cli("summary", "-f", "json", "-o", str(golden))
    doc = json.loads(golden.read_text())
    edit(doc)
    golden.write_text(json.dumps(doc))
    result = cli("check", str(golden), code=2)
    assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout


def test_check_rebuilds_a_user_model_with_the_arguments_it_recorded(cli, tmp_path):
    path = tmp_path / "wide.py"
    path.write_text(
        "from torch import nn\n\n"
        "def build(width=2):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.Conv2d(width, width, 3))\n"
    )
    golden = tmp_path / "golden.json"
    ref = f"{path}:build"
    cli("summary", "--model", ref, "--model-arg", "width=5", "-i", "1x3x8x8", "-f", "json", "-o", golden)
    assert json.loads(golden.read_text())["model"]["args"] == {"width": "5"}
    result = cli("check", golden, "--model", ref)
    assert "no differences" in result.stdout
    # Refused without --model: the file names code, and data never decides what runs.
    refused = cli("check", golden, code=2)
    assert ref in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_an_older_golden_saying_bottleneck_still_passes_check_and_diff(cli, tmp_path):
    golden = tmp_path / "golden.json"
    cli("summary", "--format", "json", "-o", golden)
    doc = json.loads(golden.read_text())
    kinds = [r["kind"] for r in doc["rows"]]
    assert kinds.count("block") == 16 and "bottleneck" not in kinds
    for row in doc["rows"]:  # what the tool wrote before a block's kind became "block"
        row["kind"] = "bottleneck" if row["kind"] == "block" else row["kind"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    assert _diffs(cli, old, code=0) == []
    assert json.loads(cli("diff", old, golden, "--format", "json").stdout)["equal"] is True
    # a golden's "bottleneck" reads as "block", also where a row's kind really differs
    doc["rows"][0]["kind"] = "bottleneck"  # layer_1, the stem
    old.write_text(json.dumps(doc))
    assert _diffs(cli, old, code=1) == [
        {"row": "layer_1", "field": "kind", "expected": "block", "got": "stem"}
    ]
