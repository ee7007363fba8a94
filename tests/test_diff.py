"""diff: two saved traces compared field by field.

Expected numbers come from tests/arith.py (layer arithmetic typed by hand), never from the tool."""

from __future__ import annotations

import csv
import io
import json

import arith
import pytest
from formats import SHARED_RELU_MODEL, md_tables


# -- 5. diff -----------------------------------------------------------------------------------
@pytest.fixture
def seed_and_fixed(cli, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    cli("summary", "-f", "json", "-o", a)
    cli("summary", "--variant", "fixed", "-f", "json", "-o", b)
    return a, b


def test_diff_same_file_and_equal_files_exit_0(cli, tmp_path, seed_and_fixed):
    a, _ = seed_and_fixed
    copy = tmp_path / "copy.jsonl"
    cli("summary", "-f", "jsonl", "-o", copy)
    for pair in ((a, a), (a, copy), (copy, a)):
        doc = json.loads(cli("diff", *pair, "--format", "json").stdout)
        assert doc["equal"] is True and doc["differences"] == []


def test_diff_different_files_exit_1_both_ways(cli, seed_and_fixed):
    a, b = seed_and_fixed
    ab = json.loads(cli("diff", a, b, "--format", "json", code=1).stdout)
    ba = json.loads(cli("diff", b, a, "--format", "json", code=1).stdout)
    assert (ab["expected"], ab["got"]) == (str(a), str(b))
    assert (ba["expected"], ba["got"]) == (str(b), str(a))
    swap = [{**d, "expected": d["got"], "got": d["expected"]} for d in ab["differences"]]

    def key(d):
        return (d["row"], d["field"])

    assert sorted(swap, key=key) == sorted(ba["differences"], key=key)
    seed, fixed = arith.blocks(64, 1, 224, 224), arith.blocks(64, 1, 224, 224, "fixed")
    by = {key(d): d for d in ab["differences"]}
    for s, f in zip(seed, fixed):
        if s.params != f.params:
            assert (by[(s.name, "params")]["expected"], by[(s.name, "params")]["got"]) == (s.params, f.params)
        else:
            assert (s.name, "params") not in by
    ts, tf = arith.totals(64, 2, 1), arith.totals(64, 2, 1, variant="fixed")
    assert (by[("(totals)", "params")]["expected"], by[("(totals)", "params")]["got"]) == (
        ts["params"],
        tf["params"],
    )
    assert cli("diff", a, b, code=1).stdout.strip()


def test_diff_csv_and_markdown_list_every_difference(cli, seed_and_fixed):
    a, b = seed_and_fixed
    diffs = json.loads(cli("diff", a, b, "--format", "json", code=1).stdout)["differences"]
    text = cli("diff", a, b, "--format", "csv", code=1).stdout
    assert "\r" not in text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["row", "field", "expected", "got"]
    assert [r[:2] for r in rows[1:]] == [[d["row"], d["field"]] for d in diffs]
    (table,) = md_tables(cli("diff", a, b, "--format", "markdown", code=1).stdout)
    assert table[0] == ["row", "field", "expected", "got"]
    assert [r[:2] for r in table[2:]] == [[d["row"], d["field"]] for d in diffs]
    # jsonl means one thing in every command: each document compact on its own line
    (line,) = cli("diff", a, b, "--format", "jsonl", code=1).stdout.splitlines()
    assert json.loads(line)["differences"] == diffs


def test_diff_csv_counts_are_plain_integers(cli, seed_and_fixed):
    a, b = seed_and_fixed
    text = cli("diff", a, b, "--format", "csv", code=1).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    seed = {blk.name: blk for blk in arith.blocks(64, 1, 224, 224)}
    fixed = {blk.name: blk for blk in arith.blocks(64, 1, 224, 224, "fixed")}
    counted = [r for r in rows if r["field"] in ("params", "macs") and r["row"] in seed]
    assert counted
    for r in counted:
        f = r["field"]
        assert (int(r["expected"]), int(r["got"])) == (
            getattr(seed[r["row"]], f),
            getattr(fixed[r["row"]], f),
        ), r


@pytest.mark.parametrize("which", ["first", "second"])
@pytest.mark.parametrize("problem", ["not-json", "missing", "not-a-trace", "empty"])
def test_diff_unreadable_input_is_exit_2(cli, tmp_path, seed_and_fixed, which, problem):
    a, _ = seed_and_fixed
    bad = tmp_path / "bad.json"
    if problem == "not-json":
        bad.write_text("summary,of,something\n1,2,3\n")
    elif problem == "not-a-trace":
        bad.write_text('{"hello": "world"}\n')
    elif problem == "empty":
        bad.write_text("")
    pair = (bad, a) if which == "first" else (a, bad)
    result = cli("diff", *pair, code=2)
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "bad.json" in result.stderr


def test_diff_tells_repeated_calls_apart_and_compares_conv_geometry(cli, tmp_path):
    (tmp_path / "shared.py").write_text(SHARED_RELU_MODEL)
    a = tmp_path / "a.json"
    cli(
        "summary",
        "--model",
        f"{tmp_path / 'shared.py'}:Net",
        "--depth",
        "layer",
        "--input",
        "1x3x8x8",
        "-f",
        "json",
        "-o",
        str(a),
    )
    doc = json.loads(a.read_text())
    relu_rows = [i for i, r in enumerate(doc["rows"]) if r["name"].startswith("body.0.relu")]
    # one row per call of the same module, numbered apart
    assert [doc["rows"][i]["name"] for i in relu_rows] == [f"body.0.relu (call {k}/3)" for k in (1, 2, 3)]
    edited = json.loads(a.read_text())
    edited["rows"][relu_rows[1]]["out_shape"] = [1, 4, 9, 9]
    conv_row = next(i for i, r in enumerate(doc["rows"]) if r.get("conv"))
    edited["rows"][conv_row]["conv"]["kernel"] = [3, 3]
    b = tmp_path / "b.json"
    b.write_text(json.dumps(edited))
    diffs = cli("diff", str(a), str(b), "-f", "json", code=1)
    found = {(d["row"], d["field"]) for d in json.loads(diffs.stdout)["differences"]}
    assert ("body.0.relu (call 2/3)", "out_shape") in found
    assert (doc["rows"][conv_row]["name"], "conv") in found
    assert len(found) == 2


def test_markdown_escapes_pipes_as_every_markdown_table_does(cli, tmp_path):
    a = tmp_path / "a.json"
    cli("summary", "--base-dim", "4", "-f", "json", "-o", a)
    doc = json.loads(a.read_text())
    doc["rows"][0]["name"] = "stem|odd"
    b = tmp_path / "b.json"
    b.write_text(json.dumps(doc))
    text = cli("diff", a, b, "--format", "markdown", code=1).stdout
    assert "stem\\|odd" in text and "| stem|odd |" not in text
