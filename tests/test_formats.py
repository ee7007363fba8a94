"""Every output format: one document per input, CSV and Markdown cells, the table.

Expected numbers come from tests/arith.py (layer arithmetic typed by hand), never from the tool."""

from __future__ import annotations

import csv
import io
import itertools

import arith
import pytest
from formats import BLOCK_NAMES, DEFAULT_ROWS, FORMATS, assert_numbers, csv_rows, md_tables, parse

from resnet_trace.api import trace
from resnet_trace.records import Report
from resnet_trace.render.table import render_table
from resnet_trace.views import view


# -- 1. formats --------------------------------------------------------------------------------
def test_arith_reference_numbers_are_the_readmes():
    """The independent arithmetic reproduces the seed's well-known totals (sanity of the oracle)."""
    tot = arith.totals(64, 2, 1)
    assert (tot["params"], tot["unused"], tot["macs"]) == (39_423_874, 1_378_048, 5_368_434_688)
    assert len(BLOCK_NAMES) == 16 and len(DEFAULT_ROWS) == 19


@pytest.mark.parametrize("fmt", FORMATS)
def test_summary_formats_carry_the_seeds_numbers(cli, fmt):
    result = cli("summary", "--format", fmt)
    assert result.stderr == ""
    assert_numbers(fmt, parse(fmt, result.stdout), base=64)


@pytest.mark.parametrize("fmt", FORMATS)
def test_run_formats_carry_the_seeds_numbers(cli, fmt):
    result = cli("run", "--base-dim", "4", "--format", fmt)
    assert_numbers(fmt, parse(fmt, result.stdout), base=4)


def test_csv_has_one_line_per_row_and_shapes_as_nxcxhxw(cli):
    text = cli("summary", "--format", "csv").stdout
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 1 + len(DEFAULT_ROWS)
    rows = csv_rows(text)
    assert [r["name"] for r in rows] == DEFAULT_ROWS
    by = {r["name"]: r for r in rows}
    assert by["layer_2.1"]["out_shape"] == "1x256x56x56"
    assert by["layer_2.2"]["skip"] == "downsample"
    assert {r["kind"] for r in rows if r["name"] in BLOCK_NAMES} == {"block"}
    assert by["avgpool"]["skip"] == "" and by["layer_1"]["skip"] == ""


def test_csv_of_layer_depth_and_collapse_has_no_python_reprs(cli):
    layer = csv_rows(cli("summary", "--depth", "layer", "--format", "csv").stdout)
    conv = next(r for r in layer if r["name"] == "layer_1.0")  # the stem's Conv2d(3, 64, 7, 2, 3)
    assert (conv["kernel"], conv["stride"], conv["padding"], conv["weight_shape"]) == (
        "7x7",
        "2x2",
        "3x3",
        "64x3x7x7",
    )
    assert conv["bias"] == "true"
    folded = csv_rows(cli("summary", "--collapse", "--format", "csv").stdout)
    # Consecutive blocks identical apart from their names fold into one row each.
    sig = [
        (b.stage, b.down, b.in_shape, b.out_shape, b.skip, b.params, b.macs)
        for b in arith.blocks(64, 1, 224, 224)
    ]
    runs = [len(list(g)) for _, g in itertools.groupby(sig)]
    assert runs == [1, 1, 1, 1, 2, 1, 1, 4, 1, 1, 2]  # layer_3.1-3.2, layer_4.1-4.4, layer_5.1-5.2
    blocks = [r for r in folded if r["kind"] == "block"]
    assert [int(r["count"]) for r in blocks] == runs
    assert [r["name"] for r in folded if r["kind"] != "block"] == ["layer_1", "avgpool", "fc_layer"]


def test_markdown_is_a_pipe_table_with_one_row_per_traced_row(cli):
    text = cli("summary", "--format", "markdown").stdout
    (table,) = md_tables(text)
    assert len(table) == 2 + len(DEFAULT_ROWS)
    text = cli("summary", "--depth", "layer", "--format", "markdown").stdout
    (table,) = md_tables(text)
    assert len(table) > 2 + len(DEFAULT_ROWS)


def test_a_narrow_terminal_never_cuts_numbers():
    t = trace().trace
    out = render_table([Report(t, tuple(view(t.rows)))], width=60)
    tot = arith.totals(64, 2, 1)
    for text in (f"{tot['stem_macs']:,}", "1x3x224x224", f"{tot['params']:,}", f"{tot['macs']:,}"):
        assert text in out
    assert "…" not in out


def test_csv_marks_the_inputs_that_failed(cli):
    out = cli("summary", "-i", "1x3x192-193x224", "-f", "csv", code=3).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    by_input = {(r["input"], r["error"]) for r in rows}
    assert by_input == {("1x3x192x224", "avgpool"), ("1x3x193x224", "")}
