"""Depth: --depth stage/block/layer, --collapse, --filter, depth/parent in every format, and tree.

Expected numbers come from tests/arith.py, from the seed's own code (the ``seed_module``
fixture) or from the convolution arithmetic; none is copied from the tool's output.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter, defaultdict

import arith
import pytest
import torch
from torch import nn

DEPTHS = ("stage", "block", "layer")
DOWN_BLOCKS = [b.name for b in arith.blocks(1, 1, 224, 224) if b.down]
DEAD = [f"{name}.dim_equalizer" for name in DOWN_BLOCKS]


def convs(doc: dict) -> list[dict]:
    return [r for r in doc["rows"] if r["module_type"] == "Conv2d"]


def test_the_seeds_layout_gives_68_registered_and_65_running_convolutions(seed_module):
    blocks = sum(count for _, count, _, _ in arith.STAGE_PLAN)
    downs = sum(1 for *_, down in arith.STAGE_PLAN if down)
    registered = 1 + 3 * blocks + blocks + downs  # stem, body, dim_equalizer per block, downsample
    assert (blocks, downs, registered, registered - downs) == (16, 3, 68, 65)
    with torch.device("meta"):
        model = seed_module["ResNet"](64)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(names) == registered
    assert set(DEAD) <= set(names)


def test_layer_depth_has_one_row_per_convolution_that_runs(cli, seed_module):
    doc = cli.json("summary", "--depth", "layer")
    with torch.device("meta"):
        model = seed_module["ResNet"](64)
    registered = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    rows = convs(doc)
    assert len(rows) == len(registered) - len(DEAD) == 65
    assert {r["name"] for r in rows} == registered - set(DEAD)


def test_layer_depth_fixed_variant_skips_identity_blocks(cli):
    doc = cli.json("summary", "--depth", "layer", "--variant", "fixed")
    fixed = arith.blocks(64, 1, 224, 224, variant="fixed")
    identity = sum(1 for b in fixed if b.skip == "identity")
    assert identity == 9
    assert len(convs(doc)) == 65 - identity
    assert not any(r["name"].endswith("dim_equalizer") for r in convs(doc) if r["parent"] in DOWN_BLOCKS)


@pytest.mark.parametrize(("base", "shape"), [(64, "1x3x224x224"), (5, "2x3x193x211")])
def test_every_conv_row_follows_from_its_kernel_stride_padding(cli, base, shape):
    doc = cli.json("summary", "--depth", "layer", "--base-dim", str(base), "--input", shape)
    n = int(shape.split("x")[0])
    for r in convs(doc):
        c = r["conv"]
        (kh, kw), (sh, sw), (ph, pw) = c["kernel"], c["stride"], c["padding"]
        rn, rc, h, w = r["in_shape"]
        out_c, in_c, wkh, wkw = c["weight_shape"]
        assert (rn, in_c, wkh, wkw) == (n, rc, kh, kw), r["name"]
        out_h, out_w = arith.conv_out(h, kh, sh, ph), arith.conv_out(w, kw, sw, pw)
        assert r["out_shape"] == [n, out_c, out_h, out_w], r["name"]
        assert c["bias"] is True  # the seed's convs keep their default bias
        assert kh == kw and r["params"] == arith.conv_params(in_c, out_c, kh), r["name"]
        assert r["macs"] == n * out_c * r["out_shape"][2] * r["out_shape"][3] * in_c * kh * kw, r["name"]
    stem = next(r for r in convs(doc) if r["parent"] == "layer_1")
    geometry = [stem["conv"][k] for k in ("kernel", "stride", "padding")]
    assert geometry == [[7, 7], [2, 2], [3, 3]]


# The seed's forward, in order: a down block computes its downsample first.
BODY = ["Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d", "ReLU"]
ORDER_DOWN = ["Conv2d", *BODY]
ORDER_OTHER = [*BODY, "Conv2d"]


def test_shared_relu_appears_once_per_call_under_the_block_that_called_it(cli):
    doc = cli.json("summary", "--depth", "layer")
    relus = [r for r in doc["rows"] if r["module_type"] == "ReLU"]
    blocks = sum(count for _, count, _, _ in arith.STAGE_PLAN)
    assert len(relus) == 1 + 3 * blocks == 49
    assert all(r["params"] == 0 and r["macs"] == 0 and r["in_shape"] == r["out_shape"] for r in relus)
    per_parent = Counter(r["parent"] for r in relus)
    assert per_parent == {"layer_1": 1, **{b.name: 3 for b in arith.blocks(1, 1, 224, 224)}}

    children: dict[str, list[dict]] = defaultdict(list)
    for r in doc["rows"]:
        if r["depth"] == "layer":
            children[r["parent"]].append(r)
    for b in arith.blocks(64, 1, 224, 224):
        kids = children[b.name]
        names = [k["name"] for k in kids]
        assert len(names) == len(set(names)), f"duplicate row names in {b.name}: {names}"
        assert all(name.startswith(b.name + ".") for name in names)
        assert [k["module_type"] for k in kids] == (ORDER_DOWN if b.down else ORDER_OTHER), b.name
        # Each ReLU acts on the conv output just before it.
        for prev, row in zip(kids, kids[1:]):
            if row["module_type"] == "ReLU":
                assert prev["module_type"] == "Conv2d" and row["in_shape"] == prev["out_shape"]
        # The block's params: what ran below it plus its dead equalizer.
        assert sum(k["params"] for k in kids) + b.unused == b.params, b.name
        assert sum(k["macs"] for k in kids) == b.macs, b.name


def test_run_layer_rows_equal_summary_layer_rows(cli):
    args = ("--base-dim", "2", "--depth", "layer", "--head", "adaptive", "--input", "2x3x64x48")
    real, meta = cli.json("run", *args), cli.json("summary", *args)

    def key(doc):
        fields = ("name", "kind", "depth", "parent", "in_shape", "out_shape", "params", "macs", "conv")
        return [tuple(str(r.get(f)) for f in fields) for r in doc["rows"]]

    assert key(real) == key(meta)
    assert real["totals"] == meta["totals"]
    assert real["device"] == "cpu" and meta["device"] == "meta"


def _table_totals(text: str) -> tuple[int, int]:
    line = next(ln for ln in text.splitlines() if re.match(r"\s*total\b", ln))
    params, macs = re.findall(r"[\d,]{2,}", line)[-2:]
    return int(params.replace(",", "")), int(macs.replace(",", ""))


def _markdown_totals(text: str) -> tuple[int, int]:
    m = re.search(r"\*\*Totals[^*]*:\*\* ([\d,]+) params, ([\d,]+) MACs", text)
    assert m, text[-400:]
    return int(m[1].replace(",", "")), int(m[2].replace(",", ""))


@pytest.mark.parametrize("depth", DEPTHS)
def test_totals_identical_at_every_depth_and_format(cli, depth):
    tot = arith.totals(64, 2, 1)
    expected = {
        "params": tot["params"],
        "params_unused": tot["unused"],
        "unused_modules": DEAD,
        "macs": tot["macs"],
    }
    doc = cli.json("summary", "--depth", depth)
    assert doc["depth"] == depth
    assert doc["totals"] == expected

    (line,) = cli("summary", "--depth", depth, "--format", "jsonl").stdout.splitlines()
    assert json.loads(line)["totals"] == expected
    assert _table_totals(cli("summary", "--depth", depth).stdout) == (tot["params"], tot["macs"])
    md = cli("summary", "--depth", depth, "--format", "markdown").stdout
    assert _markdown_totals(md) == (tot["params"], tot["macs"])


@pytest.mark.parametrize("variant", ["seed", "fixed"])
def test_stage_depth_rows_shapes_block_counts_and_sums(cli, variant):
    doc = cli.json("summary", "--depth", "stage", "--variant", variant)
    stages = [s for s, *_ in arith.STAGE_PLAN]
    assert [r["name"] for r in doc["rows"]] == ["layer_1", *stages, "avgpool", "fc_layer"]
    blocks = arith.blocks(64, 1, 224, 224, variant=variant)
    tot = arith.totals(64, 2, 1, variant=variant)
    by = {r["name"]: r for r in doc["rows"]}
    for stage, count, _, _ in arith.STAGE_PLAN:
        mine = [b for b in blocks if b.stage == stage]
        r = by[stage]
        assert r["depth"] == "stage" and r["parent"] is None
        assert r["blocks"] == count == len(mine)
        assert tuple(r["in_shape"]) == mine[0].in_shape and tuple(r["out_shape"]) == mine[-1].out_shape
        assert r["params"] == sum(b.params for b in mine), stage
        assert r["params_unused"] == sum(b.unused for b in mine), stage
        assert r["macs"] == sum(b.macs for b in mine), stage
    assert [by[s]["blocks"] for s in stages] == [3, 4, 6, 3]
    assert (by["layer_1"]["params"], by["layer_1"]["macs"]) == (tot["stem_params"], tot["stem_macs"])
    assert (by["fc_layer"]["params"], by["fc_layer"]["macs"]) == (tot["fc_params"], tot["fc_macs"])
    assert by["avgpool"]["in_shape"] == list(blocks[-1].out_shape)
    assert sum(r["params"] for r in doc["rows"]) == tot["params"]  # the shared ReLU has none


def _expected_folds(base: int) -> list[tuple[str, str, int]]:
    """Runs of consecutive blocks equal in everything but the name, from the arithmetic."""
    runs: list[list] = []
    for b in arith.blocks(base, 1, 224, 224):
        sig = (b.stage, b.in_shape, b.out_shape, b.params, b.unused, b.macs, b.skip, b.down)
        if runs and runs[-1][0] == sig:
            runs[-1][1].append(b.name)
        else:
            runs.append([sig, [b.name]])
    return [(names[0], names[-1], len(names)) for _, names in runs if len(names) > 1]


def test_collapse_folds_identical_blocks_and_keeps_totals(cli):
    folds = _expected_folds(64)
    assert ("layer_4.1", "layer_4.4", 4) in folds
    doc = cli.json("summary", "--collapse")
    assert doc["collapsed"] is True
    folded = [r for r in doc["rows"] if r.get("count", 1) > 1]
    assert len(folded) == len(folds)
    for r, (first, last, count) in zip(folded, folds):
        assert first in r["name"] and last.split("_")[1] in r["name"] and r["count"] == count, r["name"]
    names = {r["name"] for r in doc["rows"]}
    assert not names & {"layer_4.2", "layer_4.3", "layer_4.1", "layer_4.4"}
    assert {"layer_4.0", "layer_4.5"} <= names
    tot = arith.totals(64, 2, 1)
    assert (doc["totals"]["params"], doc["totals"]["macs"]) == (tot["params"], tot["macs"])
    # A folded row carries one block's numbers; times its count they give the whole again.
    assert sum(r["params"] * r.get("count", 1) for r in doc["rows"]) == tot["params"]
    assert sum(r["macs"] * r.get("count", 1) for r in doc["rows"]) == tot["macs"]


def test_collapse_at_layer_depth_keeps_one_set_of_children(cli):
    doc = cli.json("summary", "--collapse", "--depth", "layer")
    (four,) = [r for r in doc["rows"] if r.get("count") == 4]
    assert "layer_4.1" in four["name"] and "4.4" in four["name"]
    kids = [r for r in doc["rows"] if r["parent"] == four["name"]]
    assert [k["module_type"] for k in kids] == ORDER_OTHER
    assert not any(r["name"].startswith(("layer_4.2", "layer_4.3", "layer_4.4")) for r in doc["rows"])
    tot = arith.totals(64, 2, 1)
    assert (doc["totals"]["params"], doc["totals"]["macs"]) == (tot["params"], tot["macs"])
    table = cli("summary", "--collapse", "--depth", "layer").stdout
    assert _table_totals(table) == (tot["params"], tot["macs"])


@pytest.mark.parametrize("depth", DEPTHS)
def test_filter_keeps_matching_rows_and_whole_model_totals(cli, depth):
    doc = cli.json("summary", "--depth", depth, "--filter", "layer_3")
    assert doc["rows"], depth
    assert all("layer_3" in r["name"] for r in doc["rows"])
    unfiltered = cli.json("summary", "--depth", depth)
    assert [r for r in unfiltered["rows"] if "layer_3" in r["name"]] == doc["rows"]
    tot = arith.totals(64, 2, 1)
    assert (doc["totals"]["params"], doc["totals"]["macs"]) == (tot["params"], tot["macs"])
    assert doc["filter"] == "layer_3"
    if depth == "block":
        assert [r["name"] for r in doc["rows"]] == [
            b.name for b in arith.blocks(1, 1, 224, 224) if b.stage == "layer_3"
        ]
    table = cli("summary", "--depth", depth, "--filter", "layer_3").stdout
    assert _table_totals(table) == (tot["params"], tot["macs"])
    assert "whole model" in table


def test_bad_filter_is_a_usage_error(cli):
    cli("summary", "--filter", "layer_(", code=2)


@pytest.mark.parametrize("depth", DEPTHS)
def test_json_rows_carry_depth_and_parent(cli, depth):
    doc = cli.json("summary", "--depth", depth)
    names = [r["name"] for r in doc["rows"]]
    stages = {s for s, *_ in arith.STAGE_PLAN}
    for r in doc["rows"]:
        assert r["depth"] in DEPTHS and "parent" in r
        if r["depth"] == "stage":
            assert r["parent"] is None
        elif r["depth"] == "block":
            assert r["parent"] in stages and r["parent"] == r["stage"]
        else:
            assert r["parent"] in names[: names.index(r["name"])], r["name"]
    assert {r["depth"] for r in doc["rows"]} == set(DEPTHS[: DEPTHS.index(depth) + 1])


def test_csv_has_depth_and_parent_columns_matching_json(cli):
    doc = cli.json("summary", "--depth", "layer")
    rows = list(csv.DictReader(io.StringIO(cli("summary", "--depth", "layer", "--format", "csv").stdout)))
    assert {"depth", "parent"} <= set(rows[0])
    assert [(r["name"], r["depth"], r["parent"]) for r in rows] == [
        (r["name"], r["depth"], r["parent"] or "") for r in doc["rows"]
    ]


def test_markdown_nests_layer_rows_under_their_block(cli):
    md = cli("summary", "--depth", "layer", "--format", "markdown").stdout
    lines = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| #")]
    header = next(ln for ln in md.splitlines() if ln.startswith("| #"))
    cols = [c.strip() for c in header.strip().strip("|").split("|")]
    assert "kind" in cols and "name" in cols
    container = None
    layer_rows = 0
    for ln in lines:
        cells = dict(zip(cols, (c.strip() for c in ln.strip().strip("|").split("|"))))
        if cells["kind"] == "layer":
            assert container is not None and cells["name"].startswith(container + "."), cells["name"]
            layer_rows += 1
        else:
            container = cells["name"]
    assert layer_rows == 65 + 49 + 1  # convolutions, ReLU calls, the stem's max-pool


def test_tree_names_the_three_dead_equalizers_and_the_total(cli):
    text = cli("tree").stdout
    tot = arith.totals(64, 2, 1)
    assert f"{tot['params']:,}" in text
    for name in DEAD:
        assert name in text
    dead_params = sum(b.unused for b in arith.blocks(64, 1, 224, 224))
    assert f"{dead_params:,}" in text
    assert text.count("never ran") == len(DEAD) + 1  # one mark per module, and the footer


def _walk(node: dict):
    yield node
    for child in node["children"]:
        yield from _walk(child)


def test_tree_json_marks_exactly_the_dead_modules_as_not_run(cli):
    root = cli.json("tree")
    tot = arith.totals(64, 2, 1)
    assert root["params"] == tot["params"]
    owners = [n for n in _walk(root) if n["own_params"] and n["alias_of"] is None]
    assert sorted(n["name"] for n in owners if not n["ran"]) == sorted(DEAD)
    unused = {b.name + ".dim_equalizer": b.unused for b in arith.blocks(64, 1, 224, 224) if b.unused}
    assert {n["name"]: n["own_params"] for n in owners if not n["ran"]} == unused
    # Every parameter is owned exactly once in the tree (the shared ReLU has none to double).
    assert sum(n["own_params"] for n in owners) == tot["params"]


def test_tree_of_a_rejected_input_exits_3_like_every_tracing_command(cli):
    result = cli("tree", "--input", "1x3x32x32", code=None)
    assert result.exit_code == 3
    assert "avgpool" in result.stderr


def test_tree_json_fixed_variant_has_no_dead_module(cli):
    root = cli.json("tree", "--variant", "fixed")
    assert all(n["ran"] for n in _walk(root) if n["own_params"])
    assert root["params"] == arith.totals(64, 2, 1, variant="fixed")["params"]


def test_collapse_at_layer_depth_renames_children_under_the_folded_row(cli):
    doc = cli.json("summary", "--base-dim", "8", "--depth", "layer", "--collapse")
    folded = [r for r in doc["rows"] if r.get("count", 1) > 1]
    assert [r["name"] for r in folded] == ["layer_3.1–3.2", "layer_4.1–4.4", "layer_5.1–5.2"]
    for block in folded:
        children = [r for r in doc["rows"] if r["parent"] == block["name"]]
        assert children and all(c["name"].startswith(block["name"] + ".") for c in children)
    table = cli("summary", "--base-dim", "8", "--depth", "layer", "--collapse").stdout
    # Before the fix the children's names were sliced at the folded name's length.
    assert not re.search(r"\sr\.0\.0\s", table) and not re.search(r"\s(?<!dim_)equalizer\s", table)
    assert re.search(r"^\s+layer\.0\.0\s+Conv2d", table, re.M)


def test_run_never_folds_blocks_whose_measurements_differ(cli):
    doc = cli.json("run", "--base-dim", "4", "--collapse")
    assert sum(1 for r in doc["rows"] if r["kind"] == "block") == 16
    assert all(r.get("count", 1) == 1 for r in doc["rows"])


def test_filter_applies_to_real_names_before_folding(cli):
    doc = cli.json("summary", "--base-dim", "8", "--collapse", "--filter", r"layer_4\.3")
    assert [r["name"] for r in doc["rows"]] == ["layer_4.3"]
    table = cli("summary", "--filter", r"layer_5\.0").stdout
    line = next(ln for ln in table.splitlines() if "layer_5.0" in ln)
    assert line.split()[0] == "14"  # its ordinal among the 16 blocks: 3 + 4 + 6 + 1
