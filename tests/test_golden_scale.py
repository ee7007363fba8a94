"""Goldens at scale (issue 25): a golden's document count is bounded, ``check`` traces each distinct
input once however many documents record it, and ``diff``'s table shows a bounded number of rows.

The goldens here are written from tests/arith.py (layer arithmetic typed by hand), never from the
tool's output; no test is timed (benchmarks/goldens.py measures the time and memory).
"""

from __future__ import annotations

import csv
import io
import json
import re

import arith
import pytest

from resnet_trace.goldenfile import MAX_DOCUMENTS
from resnet_trace.render.diffs import MAX_TABLE_ROWS

HEIGHTS = range(193, 225)  # every size the seed's AvgPool2d(7, 1) head takes: 32 distinct inputs


def small_doc(h: int, w: int = 224, n: int = 1) -> dict:
    """A document of the seed at base 4 (fixed variant) whose filter shows no row: its totals and
    output shape from the layer arithmetic alone."""
    t = arith.totals(4, 2, n, h, w, "fixed")
    return {
        "schema": "resnet-trace/1",
        "command": "summary",
        "model": {
            "base_dim": 4,
            "num_classes": 2,
            "variant": "fixed",
            "head": "avgpool7",
            "source": "builtin",
        },
        "device": "meta",
        "dtype": "float32",
        "input_shape": [n, 3, h, w],
        "output_shape": [n, 2],
        "depth": "block",
        "filter": "^$",
        "rows": [],
        "totals": {
            "params": t["params"],
            "params_unused": t["unused"],
            "macs": t["macs"],
            "unused_modules": [],
        },
        "error": None,
    }


def write(path, docs, *, lines: bool = False):
    if lines:
        path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    else:
        path.write_text(json.dumps(docs, separators=(",", ":")), encoding="utf-8")
    return path


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- the count limit ------------------------------------------------------------------------------
@pytest.mark.parametrize("lines", [False, True], ids=["array", "jsonl"])
@pytest.mark.parametrize("command", ["check", "diff"])
def test_a_golden_of_more_documents_than_the_limit_is_exit_2_in_one_line(cli, tmp_path, command, lines):
    """Refused as read, before any document is validated or traced: its documents need not even be
    valid (here they are empty objects)."""
    golden = write(tmp_path / "many.json", [{}] * (MAX_DOCUMENTS + 1), lines=lines)
    other = write(tmp_path / "one.json", small_doc(224))
    args = [golden] if command == "check" else [golden, other]
    line = one_line(cli(command, *args, code=2))
    assert f"more than {MAX_DOCUMENTS:,} documents" in line and repr(str(golden)) in line


def test_the_limit_is_the_one_docs_cli_md_states():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    assert f"at most {MAX_DOCUMENTS:,} documents" in text
    assert f"first {MAX_TABLE_ROWS:,} differences" in text


# -- check: each distinct input traced once -------------------------------------------------------
def test_check_of_10000_documents_traces_each_distinct_input_once(cli, tmp_path, monkeypatch):
    """10,000 documents over 32 inputs (the limit, exactly): no differences, and the route is asked
    for 32 traces, not 10,000."""
    import resnet_trace.pipeline as pipeline

    asked: list[int] = []
    original = pipeline.trace_inputs

    def counting(choice, inputs, options, **kwargs):
        asked.append(len(inputs))
        return original(choice, inputs, options, **kwargs)

    monkeypatch.setattr(pipeline, "trace_inputs", counting)
    docs = [small_doc(HEIGHTS[i % len(HEIGHTS)]) for i in range(MAX_DOCUMENTS)]
    golden = write(tmp_path / "g.json", docs)
    doc = json.loads(cli("check", golden, "--format", "json").stdout)
    assert doc["equal"] is True and doc["differences"] == []
    assert asked == [len(HEIGHTS)]


def test_check_of_many_documents_reports_each_edited_one_at_its_input(cli, tmp_path):
    """Documents that share one input share its trace, yet each is compared on its own: the two
    edited among 3,200 are the two differences, each under its own input shape."""
    docs = [small_doc(HEIGHTS[i % len(HEIGHTS)]) for i in range(3_200)]
    docs[7] = json.loads(json.dumps(docs[7]))  # a copy of its own, then edited
    docs[7]["totals"]["macs"] += 1
    docs[3_199] = {**docs[3_199], "output_shape": [1, 3]}
    golden = write(tmp_path / "g.jsonl", docs, lines=True)
    got = json.loads(cli("check", golden, "--format", "json", code=1).stdout)["differences"]
    h7, hlast = HEIGHTS[7], HEIGHTS[3_199 % len(HEIGHTS)]
    macs7 = arith.totals(4, 2, 1, h7, 224, "fixed")["macs"]
    assert got == [
        {"row": f"1x3x{h7}x224 (totals)", "field": "macs", "expected": macs7 + 1, "got": macs7},
        {"row": f"1x3x{hlast}x224 (trace)", "field": "output_shape", "expected": [1, 3], "got": [1, 2]},
    ]


def test_check_with_distinct_batches_and_a_repeated_document(cli, tmp_path):
    """Batches 1 to 3 of one size, each repeated: every one compared against its own batch's trace."""
    docs = [small_doc(224, n=n) for n in (1, 2, 3, 3, 2, 1)]
    golden = write(tmp_path / "g.json", docs)
    assert json.loads(cli("check", golden, "--format", "json").stdout)["differences"] == []


# -- diff: the table is bounded, the other formats complete --------------------------------------
def _rows(n: int, macs: int) -> list[dict]:
    row = {
        "kind": "block",
        "depth": "block",
        "parent": None,
        "stage": None,
        "down": None,
        "in_shape": [1],
        "out_shape": [1],
        "skip": None,
        "params": 0,
        "params_unused": 0,
    }
    return [{"name": f"r{i}", **row, "macs": macs} for i in range(n)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two goldens of 20,000 rows that differ in every row's MACs."""
    folder = tmp_path_factory.mktemp("pair")
    a = write(folder / "a.json", {**small_doc(224), "filter": None, "rows": _rows(20_000, 0)})
    b = write(folder / "b.json", {**small_doc(224), "filter": None, "rows": _rows(20_000, 1)})
    return a, b


def test_diff_table_shows_the_first_rows_and_says_how_many_more(cli, pair):
    a, b = pair
    out = cli("diff", a, b, code=1).stdout
    shown = [line.split() for line in out.splitlines() if re.match(r"^\s*r\d+\s+macs\s", line)]
    assert [r[0] for r in shown] == [f"r{i}" for i in range(MAX_TABLE_ROWS)]
    assert all(r[2:] == ["0", "1"] for r in shown)
    assert out.startswith("20000 difference(s)")
    more = 20_000 - MAX_TABLE_ROWS
    assert f"... and {more:,} more difference(s), not shown" in out
    assert "--format json, jsonl or csv lists every one" in out


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "markdown"])
def test_diff_data_formats_list_every_difference(cli, pair, fmt):
    a, b = pair
    out = cli("diff", a, b, "--format", fmt, code=1).stdout
    if fmt in ("json", "jsonl"):
        diffs = json.loads(out)["differences"]
        assert [(d["row"], d["expected"], d["got"]) for d in diffs] == [
            (f"r{i}", 0, 1) for i in range(20_000)
        ]
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert rows[0] == ["row", "field", "expected", "got"]
        assert rows[1:] == [[f"r{i}", "macs", "0", "1"] for i in range(20_000)]
    else:
        assert (
            sum(1 for line in out.splitlines() if re.match(r"\| r\d+ \| macs \| 0 \| 1 \|", line)) == 20_000
        )
    assert "more difference(s)" not in out


def test_a_table_within_the_bound_is_as_it_always_was(cli, tmp_path):
    a = write(tmp_path / "a.json", {**small_doc(224), "filter": None, "rows": _rows(3, 0)})
    b = write(tmp_path / "b.json", {**small_doc(224), "filter": None, "rows": _rows(3, 1)})
    out = cli("diff", a, b, code=1).stdout
    assert out.startswith("3 difference(s)") and "more difference(s)" not in out
    assert len([line for line in out.splitlines() if re.match(r"^\s*r\d+\s+macs\s", line)]) == 3


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[{DOC},]", "is not JSON"),
        ("[{DOC} {DOC}]", "is not JSON"),
        ("[{DOC}]]", "is not JSON"),
        ("[{DOC}, NaN]", "holds NaN"),
        ("[]", "holds no trace"),
    ],
    ids=["trailing-comma", "no-comma", "extra-bracket", "nan", "empty"],
)
def test_an_array_read_one_document_at_a_time_refuses_what_json_refuses(cli, tmp_path, text, says):
    doc = json.dumps(small_doc(224))[1:-1]
    golden = tmp_path / "g.json"
    golden.write_text(text.replace("{DOC}", "{" + doc + "}"), encoding="utf-8")
    assert says in one_line(cli("check", golden, code=2))


def test_an_array_with_spaces_and_repeats_reads_as_json_does(cli, tmp_path):
    text = " [\n " + ",\n\t".join(json.dumps(small_doc(h)) for h in (200, 224, 200)) + " \r\n] \n"
    golden = tmp_path / "g.json"
    golden.write_text(text, encoding="utf-8")
    assert json.loads(cli("check", golden, "--format", "json").stdout)["differences"] == []
