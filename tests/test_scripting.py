"""CI scripting: every format, atomic ``-o``, many inputs in one process, check, diff, --model, schema.

Expected numbers come from ``tests/arith.py`` (the seed's layer arithmetic typed by hand) or from
the layer arithmetic written out below, never from the tool's own output.
"""

from __future__ import annotations

import csv
import errno
import io
import itertools
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import arith
import jsonschema
import pytest

import resnet_trace
import resnet_trace.cli as cli_module

SEED_FILE = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "000_61a18f5c0186fe4d.txt"
FORMATS = ("table", "json", "jsonl", "csv", "markdown")
BLOCK_NAMES = [b.name for b in arith.blocks(64, 1, 224, 224)]
DEFAULT_ROWS = ["layer_1", *BLOCK_NAMES, "avgpool", "fc_layer"]
UNUSED = ["layer_2.2.dim_equalizer", "layer_3.3.dim_equalizer", "layer_4.5.dim_equalizer"]


# -- independent arithmetic ------------------------------------------------------------------
def final_map(size: int) -> int:
    """Spatial size reaching the head: stem conv 7/2/3, maxpool 3/2/1, then three stride-2 1x1 convs."""
    s = arith.conv_out(arith.conv_out(size, 7, 2, 3), 3, 2, 1)
    for _ in range(3):  # the down blocks of layer_2, layer_3, layer_4
        s = arith.conv_out(s, 1, 2, 0)
    return s


def head_accepts(size: int) -> bool:
    """AvgPool2d(7, 1) needs a map >= 7 and fc_layer needs 32*base features, i.e. a 1x1 pool output."""
    return final_map(size) == 7


def failing_module(h: int, w: int) -> str | None:
    if head_accepts(h) and head_accepts(w):
        return None
    if final_map(h) < 7 or final_map(w) < 7:
        return "avgpool"  # kernel larger than the map
    return "fc_layer"  # pooled map larger than 1x1: too many features


def expected_rows(base: int, n: int = 1, h: int = 224, w: int = 224, classes: int = 2) -> dict[str, dict]:
    """name -> in/out shape (tuples), skip, params, params_unused, macs for the default (block) depth."""
    tot = arith.totals(base, classes, n, h, w)
    bl = arith.blocks(base, n, h, w)
    stem_out = (n, base, bl[0].in_shape[2], bl[0].in_shape[3])
    last = bl[-1].out_shape
    rows = {
        "layer_1": dict(
            in_shape=(n, 3, h, w),
            out_shape=stem_out,
            skip=None,
            params=tot["stem_params"],
            params_unused=0,
            macs=tot["stem_macs"],
        ),
    }
    for b in bl:
        rows[b.name] = dict(
            in_shape=b.in_shape,
            out_shape=b.out_shape,
            skip=b.skip,
            params=b.params,
            params_unused=b.unused,
            macs=b.macs,
        )
    pooled = (last[0], last[1], last[2] - 7 + 1, last[3] - 7 + 1)
    rows["avgpool"] = dict(in_shape=last, out_shape=pooled, skip=None, params=0, params_unused=0, macs=0)
    rows["fc_layer"] = dict(
        in_shape=(n, base * 32),
        out_shape=(n, classes),
        skip=None,
        params=tot["fc_params"],
        params_unused=0,
        macs=tot["fc_macs"],
    )
    return rows


def x(shape) -> str:
    return "x".join(str(d) for d in shape)


# -- parsers for each format ------------------------------------------------------------------
def md_cells(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), line
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line[1:-1])]


def md_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table: header, separator of ---/---: cells, rows all as wide as the header."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            current.append(md_cells(line))
        else:
            current = None
    for table in tables:
        assert len(table) >= 2, table
        header, sep = table[0], table[1]
        assert all(re.fullmatch(r":?-{3,}:?", c) for c in sep), sep
        assert all(len(row) == len(header) for row in table), [len(r) for r in table]
    return tables


def csv_rows(text: str) -> list[dict[str, str]]:
    assert "\r" not in text
    assert text.endswith("\n")
    reader = csv.DictReader(io.StringIO(text))
    assert {"name", "kind", "in_shape", "out_shape", "skip", "params", "macs"} <= set(reader.fieldnames or ())
    rows = list(reader)
    for row in rows:
        assert None not in row, row  # no line wider than the header
        for cell in row.values():
            assert cell is not None, row  # no line narrower than the header
            for repr_bit in ("(", ")", "None", "True", "False", "[", "]"):
                assert repr_bit not in cell, (repr_bit, row)
    return rows


def parse(fmt: str, text: str) -> dict:
    """One traced input's rows and totals, whatever the format: {rows: {name: {...}}, order, totals}."""
    if fmt in ("json", "jsonl"):
        if fmt == "jsonl":
            lines = text.splitlines()
            assert len(lines) == 1
            doc = json.loads(lines[0])
        else:
            doc = json.loads(text)
        assert isinstance(doc, dict)
        rows = {
            r["name"]: dict(
                in_shape=x(r["in_shape"]),
                out_shape=x(r["out_shape"]),
                skip=r["skip"],
                params=r["params"],
                params_unused=r["params_unused"],
                macs=r["macs"],
            )
            for r in doc["rows"]
        }
        order = [r["name"] for r in doc["rows"]]
        return {"rows": rows, "order": order, "totals": (doc["totals"]["params"], doc["totals"]["macs"])}
    if fmt == "csv":
        parsed = csv_rows(text)
        rows = {
            r["name"]: dict(
                in_shape=r["in_shape"],
                out_shape=r["out_shape"],
                skip=r["skip"] or None,
                params=int(r["params"]),
                params_unused=int(r["params_unused"]),
                macs=int(r["macs"]),
            )
            for r in parsed
        }
        order = [r["name"] for r in parsed]
        # The seed's rows partition the model (the shared ReLU holds nothing): sums are the totals.
        totals = (sum(v["params"] for v in rows.values()), sum(v["macs"] for v in rows.values()))
        return {"rows": rows, "order": order, "totals": totals}
    if fmt == "markdown":
        (table,) = md_tables(text)
        header = table[0]
        col = {h: i for i, h in enumerate(header)}
        rows, order = {}, []
        for cells in table[2:]:
            name = cells[col["name"]]
            order.append(name)
            rows[name] = dict(
                in_shape=cells[col["input"]],
                out_shape=cells[col["output"]],
                skip=cells[col["skip"]] or None,
                params=int(cells[col["params"]].replace(",", "")),
                macs=int(cells[col["MACs"]].replace(",", "")),
            )
        m = re.search(r"\*\*Totals[^*]*:\*\* ([\d,]+) params, ([\d,]+) MACs", text)
        assert m, text
        return {
            "rows": rows,
            "order": order,
            "totals": (int(m[1].replace(",", "")), int(m[2].replace(",", ""))),
        }
    assert fmt == "table"
    lines = text.splitlines()
    rows, order = {}, []
    for line in lines:
        tokens = line.split()
        names = [t for t in tokens if t in DEFAULT_ROWS]
        if names:
            order.append(names[0])
            rows[names[0]] = {"tokens": tokens}
    (total,) = [line.split() for line in lines if line.split()[:1] == ["total"]]
    return {"rows": rows, "order": order, "totals": total}


def assert_numbers(fmt: str, parsed: dict, base: int, classes: int = 2) -> None:
    exp = expected_rows(base, classes=classes)
    tot = arith.totals(base, classes, 1)
    assert parsed["order"] == DEFAULT_ROWS
    for name in ("layer_1", "layer_2.0", "layer_2.2", "layer_4.5", "fc_layer"):
        e, got = exp[name], parsed["rows"][name]
        if fmt == "table":
            tokens = got["tokens"]
            for want in (x(e["in_shape"]), x(e["out_shape"]), f"{e['params']:,}", f"{e['macs']:,}"):
                assert want in tokens, (name, want, tokens)
            if e["skip"]:
                assert e["skip"] in tokens
            continue
        assert got["in_shape"] == x(e["in_shape"]), name
        assert got["out_shape"] == x(e["out_shape"]), name
        assert got["skip"] == e["skip"], name
        assert got["params"] == e["params"], name
        assert got["macs"] == e["macs"], name
        if "params_unused" in got:
            assert got["params_unused"] == e["params_unused"], name
    if fmt == "table":
        assert f"{tot['params']:,}" in parsed["totals"]
        assert f"{tot['macs']:,}" in parsed["totals"]
    else:
        assert parsed["totals"] == (tot["params"], tot["macs"])


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
    assert {r["kind"] for r in rows if r["name"] in BLOCK_NAMES} == {"bottleneck"}
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
    blocks = [r for r in folded if r["kind"] == "bottleneck"]
    assert [int(r["count"]) for r in blocks] == runs
    assert [r["name"] for r in folded if r["kind"] != "bottleneck"] == ["layer_1", "avgpool", "fc_layer"]


def test_markdown_is_a_pipe_table_with_one_row_per_traced_row(cli):
    text = cli("summary", "--format", "markdown").stdout
    (table,) = md_tables(text)
    assert len(table) == 2 + len(DEFAULT_ROWS)
    text = cli("summary", "--depth", "layer", "--format", "markdown").stdout
    (table,) = md_tables(text)
    assert len(table) > 2 + len(DEFAULT_ROWS)


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
    os_mod = cli_module.os
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
    lines = cli("diff", a, b, "--format", "jsonl", code=1).stdout.splitlines()
    assert [json.loads(line) for line in lines] == diffs


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


# -- 6. --model ----------------------------------------------------------------------------------
def seed_code() -> str:
    if not SEED_FILE.exists():
        pytest.skip(f"seed file not found at {SEED_FILE}")
    text = SEED_FILE.read_text(encoding="utf-8")
    code = text[text.index("from torch import nn") : text.index("[reference]")]
    return code.replace("import torchsummary\n", "")


ROW_KEYS = ("name", "kind", "in_shape", "out_shape", "skip", "params", "params_unused", "macs")


def _rows(doc):
    return [{k: r[k] for k in ROW_KEYS} for r in doc["rows"]]


@pytest.mark.parametrize(
    "config", [("--base-dim", "64"), ("--base-dim", "8", "--num-classes", "3", "-i", "2x3x200x210")]
)
def test_model_file_copy_of_the_seed_gives_the_builtin_rows(cli, tmp_path, config):
    path = tmp_path / "seedcopy.py"
    path.write_text(seed_code(), encoding="utf-8")
    ref = f"{path}:ResNet"
    mine = cli.json("summary", "--model", ref, *config)
    builtin = cli.json("summary", *config)
    assert _rows(mine) == _rows(builtin)
    assert mine["totals"] == builtin["totals"]
    assert mine["output_shape"] == builtin["output_shape"]
    assert mine["model"]["source"] == ref
    base, classes, n, h, w = (8, 3, 2, 200, 210) if len(config) > 2 else (64, 2, 1, 224, 224)
    tot = arith.totals(base, classes, n, h, w)
    assert (mine["totals"]["params"], mine["totals"]["macs"]) == (tot["params"], tot["macs"])
    assert mine["totals"]["unused_modules"] == UNUSED
    exp = expected_rows(base, n, h, w, classes)
    assert {r["name"]: (r["params"], r["macs"]) for r in mine["rows"]} == {
        k: (v["params"], v["macs"]) for k, v in exp.items()
    }


def test_model_package_module_form(cli, tmp_path, monkeypatch):
    pkg = tmp_path / "rt_scripting_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "seednet.py").write_text(seed_code(), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        mine = cli.json("summary", "--model", "rt_scripting_pkg.seednet:ResNet", "--base-dim", "64")
        missing = cli("summary", "--model", "rt_scripting_pkg.nothere:ResNet", code=2)
    finally:
        for name in [m for m in sys.modules if m.startswith("rt_scripting_pkg")]:
            del sys.modules[name]
    assert _rows(mine) == _rows(cli.json("summary"))
    assert mine["totals"]["params"] == arith.totals(64, 2, 1)["params"]
    assert len(missing.stderr.strip().splitlines()) == 1


BAD_MODELS = {
    "import-fails": ("import torch\nraise RuntimeError('no GPU here')\n", "Net", "no GPU here"),
    "syntax-error": ("def broken(:\n", "Net", "SyntaxError"),
    "missing-name": ("from torch import nn\nNet = nn.Identity\n", "Nope", "Nope"),
    "not-a-module": ("def Net():\n    return 42\n", "Net", "Module"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_is_exit_2_with_one_line(cli, tmp_path, case):
    code, name, needle = BAD_MODELS[case]
    path = tmp_path / f"bad_{case.replace('-', '_')}.py"
    path.write_text(code)
    result = cli("summary", "--model", f"{path}:{name}", code=2)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnet-trace: error:"), result.stderr
    assert needle in lines[0]


def test_model_missing_file_is_exit_2(cli, tmp_path):
    result = cli("summary", "--model", f"{tmp_path / 'nothere.py'}:ResNet", code=2)
    assert len(result.stderr.strip().splitlines()) == 1


TINY = textwrap.dedent(
    """
    from torch import nn

    class Res(nn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.body = nn.Conv2d(cin, cout, 3, stride, 1)
            self.shortcut = nn.Conv2d(cin, cout, 1, stride) if (cin != cout or stride != 1) else None

        def forward(self, x):
            skip = x if self.shortcut is None else self.shortcut(x)
            return self.body(x) + skip

    class Tiny(nn.Module):
        def __init__(self, base_dim=4, num_classes=2):
            super().__init__()
            self.stem = nn.Conv2d(3, base_dim, 3, 1, 1)
            self.blocks = nn.Sequential(Res(base_dim, base_dim), Res(base_dim, 2 * base_dim, 2))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2 * base_dim, num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))
    """
)


def test_custom_block_and_skip_names(cli, tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    ref = f"{path}:Tiny"
    args = (
        "summary",
        "--model",
        ref,
        "--base-dim",
        "4",
        "--block",
        "Res",
        "--skip",
        "shortcut",
        "-i",
        "1x3x16x16",
    )
    doc = cli.json(*args)
    # Layer arithmetic for base_dim 4 on 1x3x16x16.
    half = arith.conv_out(16, 1, 2, 0)
    b0 = dict(
        in_shape=[1, 4, 16, 16],
        out_shape=[1, 4, 16, 16],
        skip="identity",
        params=arith.conv_params(4, 4, 3),
        macs=16 * 16 * 4 * 4 * 9,
    )
    b1 = dict(
        in_shape=[1, 4, 16, 16],
        out_shape=[1, 8, half, half],
        skip="shortcut",
        params=arith.conv_params(4, 8, 3) + arith.conv_params(4, 8, 1),
        macs=half * half * 8 * (4 * 9 + 4),
    )
    blocks = {r["name"]: r for r in doc["rows"] if r["kind"] == "bottleneck"}
    assert sorted(blocks) == ["blocks.0", "blocks.1"]
    for name, exp in (("blocks.0", b0), ("blocks.1", b1)):
        assert {k: blocks[name][k] for k in exp} == exp, name
    stem, fc = arith.conv_params(3, 4, 3), 8 * 2 + 2
    assert doc["totals"]["params"] == stem + b0["params"] + b1["params"] + fc
    assert doc["totals"]["macs"] == 16 * 16 * 4 * 27 + b0["macs"] + b1["macs"] + 2 * 8
    assert doc["output_shape"] == [1, 2]
    csv_by = {r["name"]: r for r in csv_rows(cli(*args, "-f", "csv").stdout)}
    assert (csv_by["blocks.0"]["skip"], csv_by["blocks.1"]["skip"]) == ("identity", "shortcut")
    # Without --block and --skip, the blocks (the modules adding onto their input) and their
    # skip paths come from the dataflow: the same rows, and the class named in the document.
    found = cli.json("summary", "--model", ref, "--base-dim", "4", "-i", "1x3x16x16")
    assert found["rows"] == doc["rows"]
    assert (found["model"]["block"], found["model"]["block_found"]) == ("Res", True)
    assert [r["skips"] for r in found["rows"] if r["kind"] == "bottleneck"] == [["identity"], ["shortcut"]]
    # A --block class the model does not have is a usage error naming it.
    missing = cli("summary", "--model", ref, "--block", "BottleNeck", "-i", "1x3x16x16", code=2)
    assert "BottleNeck" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


# -- 7. schema, help, version --------------------------------------------------------------------
@pytest.fixture(scope="module")
def validator():
    from typer.testing import CliRunner

    from resnet_trace.cli import app

    result = CliRunner().invoke(app, ["schema"], prog_name="resnet-trace")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ((), 0),
        (("-i", "1x3x256x256"), 3),
        (("-i", "1x3x190x224"), 3),
        (("--base-dim", "4", "--depth", "layer"), 0),
        (("--depth", "stage"), 0),
        (("--collapse",), 0),
        (("--filter", r"layer_3\."), 0),
        (("--variant", "fixed", "--head", "adaptive", "-i", "2x3x100x300"), 0),
    ],
    ids=["good", "fails-at-fc", "fails-at-avgpool", "layer", "stage", "collapse", "filter", "fixed"],
)
def test_summary_documents_validate_against_the_schema(cli, validator, args, code):
    doc = cli.json("summary", *args, code=code)
    validator.validate(doc)
    assert (doc["error"] is None) == (code == 0)


def test_run_and_multi_input_and_custom_documents_validate(cli, validator, tmp_path):
    validator.validate(cli.json("run", "--base-dim", "4"))
    validator.validate(cli.json("run", "--base-dim", "4", "--depth", "layer", "--collapse"))
    docs = cli.json("summary", "-i", "1x3x191-194:3x224", code=3)
    assert len(docs) == 2
    for doc in docs:
        validator.validate(doc)
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    validator.validate(
        cli.json(
            "summary", "--model", f"{path}:Tiny", "--block", "Res", "--skip", "shortcut", "-i", "1x3x8x8"
        )
    )


def test_schema_rejects_a_broken_document(cli, validator):
    doc = cli.json("summary")
    validator.validate(doc)
    for breaks in (
        lambda d: d["rows"][0].__setitem__("params", "9472"),
        lambda d: d.pop("totals"),
        lambda d: d.__setitem__("schema", "resnet-trace/2"),
    ):
        broken = json.loads(json.dumps(doc))
        breaks(broken)
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(broken)


def test_schema_to_a_file_equals_stdout(cli, tmp_path):
    target = tmp_path / "schema.json"
    cli("schema", "-o", target)
    assert target.read_text() == cli("schema").stdout


def test_help_and_version(cli):
    result = cli("--help")
    for command in ("summary", "run", "check", "diff", "schema"):
        assert command in result.stdout
    result = cli("--version")
    assert result.stdout.strip() == f"resnet-trace {resnet_trace.__version__}"
    for command in ("summary", "run", "check", "diff", "schema"):
        sub = cli(command, "--help")
        assert sub.stdout.startswith("Usage: resnet-trace " + command) and sub.stderr == ""
    assert "--format" in cli("summary", "--help").stdout


@pytest.mark.parametrize("args", [["--help"], ["schema"], ["--version"], ["summary", "--help"]])
def test_help_and_schema_do_not_import_torch(args):
    code = textwrap.dedent(
        f"""
        import sys
        from typer.testing import CliRunner
        from resnet_trace.cli import app
        result = CliRunner().invoke(app, {args!r}, prog_name="resnet-trace")
        assert result.exit_code == 0, result.output
        print('torch' in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
