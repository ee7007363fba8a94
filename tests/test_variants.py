"""The seed beside what it meant: --variant fixed, --head adaptive, compare, graph and --svg.

Expected numbers come from tests/arith.py (hand arithmetic, no resnet_trace import) or from
the seed's layout as typed there; nothing is copied from the tool's output.
"""

from __future__ import annotations

import io
import json
import re

import arith
import pytest
import torch

from resnet_trace.model import ResNet

DEFAULT = ("64", "2", "1x3x224x224")
SECOND = ("8", "5", "3x3x200x216")


def shape_args(base: str, classes: str, shape: str) -> list[str]:
    return ["--base-dim", base, "--num-classes", classes, "--input", shape]


def dims(shape: str) -> tuple[int, int, int, int]:
    n, c, h, w = (int(d) for d in shape.split("x"))
    return n, c, h, w


def blocks_of(doc: dict) -> list[dict]:
    return [r for r in doc["rows"] if r["kind"] == "block"]


def shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


# -- --variant fixed --------------------------------------------------------------------------


def test_fixed_totals_at_the_seeds_defaults_match_the_issue_and_the_arithmetic(cli):
    fixed = arith.totals(64, 2, 1, variant="fixed")
    seed = arith.totals(64, 2, 1)
    # The numbers stated in the issue, checked against the hand arithmetic first.
    assert (fixed["params"], fixed["macs"]) == (24_863_618, 3_518_746_624)
    assert (seed["params"], seed["macs"]) == (39_423_874, 5_368_434_688)
    doc = cli.json("summary", "--variant", "fixed")
    assert doc["model"]["variant"] == "fixed"
    assert (doc["totals"]["params"], doc["totals"]["macs"]) == (fixed["params"], fixed["macs"])
    assert doc["output_shape"] == [1, 2]


def test_fixed_skip_paths_per_block(cli):
    doc = cli.json("summary", "--variant", "fixed")
    got = {r["name"]: r["skip"] for r in blocks_of(doc)}
    # As the issue states them, by hand ...
    identity = {"layer_2.1", "layer_3.1", "layer_3.2", "layer_4.1", "layer_4.2", "layer_4.3", "layer_4.4"}
    identity |= {"layer_5.1", "layer_5.2"}
    equalizer = {"layer_2.0", "layer_3.0", "layer_4.0", "layer_5.0"}
    downsample = {"layer_2.2", "layer_3.3", "layer_4.5"}
    assert {n for n, s in got.items() if s == "identity"} == identity
    assert {n for n, s in got.items() if s == "dim_equalizer"} == equalizer
    assert {n for n, s in got.items() if s == "downsample"} == downsample
    assert len(got) == 16
    # ... and as the arithmetic derives them from the stage plan.
    assert got == {b.name: b.skip for b in arith.blocks(64, 1, 224, 224, variant="fixed")}


def test_the_seed_never_takes_the_identity_path(cli):
    doc = cli.json("summary")
    skips = {r["skip"] for r in blocks_of(doc)}
    assert skips == {"dim_equalizer", "downsample"}


@pytest.mark.parametrize("config", [DEFAULT, SECOND], ids=["64-2-224", "8-5-3x200x216"])
def test_fixed_every_block_matches_the_arithmetic_and_nothing_is_unused(cli, config):
    base, classes, shape = config
    n, _, h, w = dims(shape)
    doc = cli.json("summary", "--variant", "fixed", *shape_args(*config))
    expected = arith.blocks(int(base), n, h, w, variant="fixed")
    got = blocks_of(doc)
    assert [r["name"] for r in got] == [b.name for b in expected]
    for r, b in zip(got, expected):
        assert (
            tuple(r["in_shape"]),
            tuple(r["out_shape"]),
            r["params"],
            r["params_unused"],
            r["macs"],
            r["skip"],
            r["down"],
        ) == (b.in_shape, b.out_shape, b.params, 0, b.macs, b.skip, b.down), r["name"]
    tot = arith.totals(int(base), int(classes), n, h, w, variant="fixed")
    assert tot["unused"] == 0
    assert doc["totals"] == {
        "params": tot["params"],
        "params_unused": 0,
        "unused_modules": [],
        "macs": tot["macs"],
    }
    assert all(r["params_unused"] == 0 for r in doc["rows"])
    assert doc["output_shape"] == [n, int(classes)]


def test_fixed_state_dict_drops_exactly_the_needless_equalizers():
    seed = ResNet(8, 3).state_dict()
    fixed = ResNet(8, 3, variant="fixed").state_dict()
    # Needless: every block but the first of its stage (same shapes, or a dead module in a down block).
    needless = {b.name for b in arith.blocks(8, 1, 224, 224) if not b.name.endswith(".0")}
    assert len(needless) == 12
    dropped = {f"{name}.dim_equalizer.{p}" for name in needless for p in ("weight", "bias")}
    assert set(seed) - set(fixed) == dropped
    assert set(fixed) < set(seed)
    assert [k for k in seed if k not in dropped] == list(fixed)  # same order for the rest
    assert all(seed[k].shape == fixed[k].shape for k in fixed)


# -- --head adaptive --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["1x3x32x32", "2x3x256x256", "1x3x500x300", "1x3x1x1"])
def test_adaptive_head_takes_sizes_the_seed_rejects(cli, shape):
    n = dims(shape)[0]
    doc = cli.json("summary", "--head", "adaptive", "--num-classes", "7", "--input", shape)
    assert doc["error"] is None
    assert doc["model"]["head"] == "adaptive"
    assert doc["output_shape"] == [n, 7]
    assert doc["accepted_sizes"] is None  # no size limit to report


def test_adaptive_head_smallest_input_runs_for_real(cli):
    doc = cli.json("run", "--base-dim", "2", "--head", "adaptive", "--input", "1x3x1x1")
    assert doc["error"] is None and doc["output_shape"] == [1, 2]
    assert len(doc["logits"][0]) == 2


def test_default_head_rejects_32(cli):
    result = cli("summary", "--input", "1x3x32x32", code=3)
    assert "avgpool" in result.stderr
    doc = cli.json("summary", "--input", "1x3x32x32", code=3)
    assert doc["error"]["module"] == "avgpool"
    assert doc["output_shape"] is None


def _smallest_and_largest_accepted() -> tuple[int, int]:
    """Sides whose final map is exactly 7 (the AvgPool2d(7, 1) head), by the layer arithmetic."""

    def final(size: int) -> int:
        return arith.blocks(1, 1, size, size)[-1].out_shape[2]

    ok = [s for s in range(150, 260) if final(s) == 7]
    return ok[0], ok[-1]


def test_default_head_accepted_range_is_derived_from_the_layers(cli):
    lo, hi = _smallest_and_largest_accepted()
    assert (lo, hi) == (193, 224)
    doc = cli.json("summary", "--base-dim", "4")
    assert doc["accepted_sizes"] == [lo, hi]
    for side, code in ((lo - 1, 3), (lo, 0), (hi, 0), (hi + 1, 3)):
        cli("summary", "--base-dim", "4", "--input", f"1x3x{side}x{side}", code=code)


def test_avgpool7_checkpoint_loads_into_adaptive_head(tmp_path, cli):
    a = ResNet(4, 3)
    b = ResNet(4, 3, head="adaptive")
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    b.load_state_dict(a.state_dict(), strict=True)

    # Through the CLI: the same checkpoint, both heads; where the final map is 7x7 they agree.
    torch.manual_seed(3)
    ckpt = tmp_path / "seed.pt"
    buf = io.BytesIO()
    torch.save(ResNet(4, 3).state_dict(), buf)
    ckpt.write_bytes(buf.getvalue())
    common = ("run", "--base-dim", "4", "--num-classes", "3", "--weights", str(ckpt), "--top-k", "3")
    common += ("--input", "1x3x193x200")
    seven = cli.json(*common)
    adaptive = cli.json(*common, "--head", "adaptive")
    assert adaptive["error"] is None and adaptive["model"]["head"] == "adaptive"
    assert len(adaptive["logits"]) == len(seven["logits"]) == 1
    assert adaptive["logits"][0] == pytest.approx(seven["logits"][0], rel=1e-5, abs=1e-6)
    # And the adaptive head accepts what the seed's head rejects, with the same weights.
    small = ("run", "--base-dim", "4", "--num-classes", "3", "--weights", str(ckpt), "--head", "adaptive")
    doc = cli.json(*small, "--input", "1x3x64x64")
    assert doc["error"] is None and doc["output_shape"] == [1, 3]


# -- compare ------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [DEFAULT, SECOND], ids=["64-2-224", "8-5-3x200x216"])
def test_compare_json_equals_the_two_single_traces(cli, config):
    base, classes, shape = config
    cli("compare", *shape_args(*config))  # the table: exit 0
    doc = cli.json("compare", *shape_args(*config))
    seed = cli.json("summary", "--variant", "seed", *shape_args(*config))
    fixed = cli.json("summary", "--variant", "fixed", *shape_args(*config))
    s_rows = {r["name"]: r for r in seed["rows"]}
    f_rows = {r["name"]: r for r in fixed["rows"]}
    assert [r["name"] for r in doc["rows"]] == [r["name"] for r in seed["rows"]]
    assert doc["input_shape"] == [int(d) for d in shape.split("x")]
    for row in doc["rows"]:
        s, f = s_rows[row["name"]], f_rows[row["name"]]
        for side, single in (("seed", s), ("fixed", f)):
            assert row[side] == {
                "skip": single["skip"],
                "params": single["params"],
                "params_unused": single["params_unused"],
                "macs": single["macs"],
            }, (row["name"], side)
        assert row["delta"] == {"params": f["params"] - s["params"], "macs": f["macs"] - s["macs"]}
    t = doc["totals"]
    for side, single in (("seed", seed), ("fixed", fixed)):
        assert t[side] == {k: single["totals"][k] for k in ("params", "params_unused", "macs")}
    assert t["delta"] == {
        "params": fixed["totals"]["params"] - seed["totals"]["params"],
        "macs": fixed["totals"]["macs"] - seed["totals"]["macs"],
    }
    n, _, h, w = dims(shape)
    a_seed = arith.totals(int(base), int(classes), n, h, w)
    a_fixed = arith.totals(int(base), int(classes), n, h, w, variant="fixed")
    assert t["delta"]["params"] == a_fixed["params"] - a_seed["params"] < 0
    assert t["delta"]["macs"] == a_fixed["macs"] - a_seed["macs"] < 0
    assert doc["errors"] == {"seed": None, "fixed": None}


def test_compare_rejected_input_exits_3(cli):
    cli("compare", "--input", "1x3x32x32", code=3)
    doc = cli.json("compare", "--input", "1x3x32x32", "--head", "adaptive")
    assert doc["errors"] == {"seed": None, "fixed": None}


# -- graph ---------------------------------------------------------------------------------------

MM_NODE = re.compile(r'^(\w+)(?:\["([^"]*)"\]|\(\("([^"]*)"\)\)|\(\["([^"]*)"\]\)|\{\{"([^"]*)"\}\})$')
MM_EDGE = re.compile(r'^(\w+) (-->|-\.->)(?:\|"([^"]*)"\|)? (\w+)$')
MM_SUBGRAPH = re.compile(r'^subgraph (\w+) \["([^"]*)"\]$')


def parse_mermaid(text: str) -> tuple[dict, list]:
    """Nodes {id: (label, subgraph title)} and edges [(src, dst, dashed, label)]; every line must parse."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes: dict[str, tuple[str, str | None]] = {}
    edges: list[tuple[str, str, bool, str | None]] = []
    sub: str | None = None
    for raw in lines[1:]:
        line = raw.strip()
        if m := MM_SUBGRAPH.match(line):
            assert sub is None, "nested subgraph"
            sub = m[2]
        elif line == "end":
            assert sub is not None
            sub = None
        elif m := MM_EDGE.match(line):
            edges.append((m[1], m[4], m[2] == "-.->", m[3]))
        elif m := MM_NODE.match(line):
            assert m[1] not in nodes, f"node {m[1]} declared twice"
            nodes[m[1]] = (next(g for g in m.groups()[1:] if g is not None), sub)
        else:
            raise AssertionError(f"unparsed mermaid line: {raw!r}")
    assert sub is None
    return nodes, edges


DOT_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|->|[{}\[\];=,]|[A-Za-z_][\w.]*|-?\d+(?:\.\d+)?)', re.S)


def _dot_tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = DOT_TOKEN.match(text, pos)
        assert m, f"unexpected DOT text at {pos}: {text[pos : pos + 40]!r}"
        tokens.append(m[1])
        pos = m.end()
    return tokens


def _unquote(tok: str) -> str:
    if tok.startswith('"'):
        return re.sub(r"\\(.)", r"\1", tok[1:-1])
    return tok


def parse_dot(text: str) -> tuple[dict, list]:
    """A small recursive parser for the DOT subset the tool writes.

    Returns nodes {name: (attrs, cluster)} and edges [(src, dst, attrs)].
    """
    toks = _dot_tokens(text)
    i = 0

    def take(expected: str | None = None) -> str:
        nonlocal i
        tok = toks[i]
        i += 1
        if expected is not None:
            assert tok == expected, (expected, tok, i)
        return tok

    def attrs() -> dict:
        out = {}
        take("[")
        while toks[i] != "]":
            key = _unquote(take())
            take("=")
            out[key] = _unquote(take())
            if toks[i] == ",":
                take(",")
        take("]")
        return out

    nodes: dict[str, tuple[dict, str | None]] = {}
    edges: list[tuple[str, str, dict]] = []

    def stmts(cluster: str | None) -> None:
        while toks[i] != "}":
            tok = take()
            if tok == "subgraph":
                name = _unquote(take())
                take("{")
                stmts(name)
                take("}")
                continue
            if tok in ("node", "edge"):
                attrs()
            elif toks[i] == "=":
                take("=")
                take()
            elif toks[i] == "->":
                take("->")
                dst = _unquote(take())
                edges.append((_unquote(tok), dst, attrs() if toks[i] == "[" else {}))
            else:
                name = _unquote(tok)
                assert name not in nodes, f"node {name} declared twice"
                nodes[name] = (attrs() if toks[i] == "[" else {}, cluster)
            take(";")

    take("digraph")
    if toks[i] != "{":
        take()
    take("{")
    stmts(None)
    take("}")
    assert i == len(toks), "text after the graph"
    return nodes, edges


EXPECTED_LABEL = {
    "downsample": "downsample 1x1/2",
    "dim_equalizer": "dim_equalizer 1x1",
    "identity": "identity",
}


@pytest.mark.parametrize("variant", ["seed", "fixed"])
def test_mermaid_graph_every_block_has_one_labelled_skip_edge(cli, variant):
    text = cli("graph", "--format", "mermaid", "--variant", variant).stdout
    nodes, edges = parse_mermaid(text)
    expected = arith.blocks(64, 1, 224, 224, variant=variant)
    by_label = {label: nid for nid, (label, _) in nodes.items()}
    stem = next(nid for nid, (label, _) in nodes.items() if label.startswith("layer_1"))
    prev = stem
    for b in expected:
        body = next(nid for nid, (label, _) in nodes.items() if label.split("<br/>")[0] == b.name)
        add = by_label[f"+ {b.name}"]
        assert nodes[body][1] == nodes[add][1] == b.stage, b.name  # in its stage's subgraph
        into_body = [e for e in edges if e[1] == body]
        assert into_body == [(prev, body, False, shape_text(b.in_shape))], b.name
        into_add = sorted((e for e in edges if e[1] == add), key=lambda e: e[2])
        assert into_add == [(body, add, False, None), (prev, add, True, EXPECTED_LABEL[b.skip])], b.name
        prev = add
    dashed = [e for e in edges if e[2]]
    assert len(dashed) == 16
    assert {label for label, sub in nodes.values() if sub is None} >= {"layer_1 (stem)", "avgpool (pool)"}
    assert {sub for _, sub in nodes.values() if sub} == {"layer_2", "layer_3", "layer_4", "layer_5"}
    # The chain goes on from the last block to the head with the stage-5 output shape.
    assert any(e[0] == prev and e[3] == shape_text(expected[-1].out_shape) for e in edges)


@pytest.mark.parametrize("variant", ["seed", "fixed"])
def test_dot_graph_every_block_has_one_labelled_skip_edge(cli, variant):
    text = cli("graph", "--format", "dot", "--variant", variant).stdout
    nodes, edges = parse_dot(text)
    expected = arith.blocks(64, 1, 224, 224, variant=variant)
    prev = "layer_1"
    assert prev in nodes and nodes[prev][1] is None
    for b in expected:
        body, add = b.name, f"{b.name} +"
        assert nodes[body][1] == nodes[add][1] == f"cluster_{b.stage}", b.name
        assert nodes[body][0]["label"].startswith(b.name)
        into_body = [e for e in edges if e[1] == body]
        assert into_body == [(prev, body, {"label": shape_text(b.in_shape)})], b.name
        into_add = [e for e in edges if e[1] == add]
        solid = [e for e in into_add if e[2].get("style") != "dashed"]
        dashed = [e for e in into_add if e[2].get("style") == "dashed"]
        assert solid == [(body, add, {})], b.name
        assert dashed == [(prev, add, {"style": "dashed", "label": EXPECTED_LABEL[b.skip]})], b.name
        prev = add
    assert sum(1 for e in edges if e[2].get("style") == "dashed") == 16
    assert any(e[0] == prev and e[2].get("label") == shape_text(expected[-1].out_shape) for e in edges)
    assert re.search(r'^\s*subgraph "cluster_layer_2" \{', text, re.M)


def test_graph_of_a_rejected_input_exits_3_and_still_parses(cli):
    result = cli("graph", "--input", "1x3x256x256", code=3)
    nodes, _ = parse_mermaid(result.stdout)
    assert any(label.startswith("stopped at fc_layer") for label, _ in nodes.values())


# -- --svg -----------------------------------------------------------------------------------------


def _svg_twice(cli, tmp_path, *args: str) -> tuple[bytes, bytes]:
    outs = []
    for i in (1, 2):
        path = tmp_path / f"{args[0]}-{i}.svg"
        cli(*args, "--svg", str(path))
        outs.append(path.read_bytes())
    for data in outs:
        assert data.startswith(b"<svg"), data[:40]
        assert data.rstrip().endswith(b"</svg>")
    return outs[0], outs[1]


def test_summary_svg_is_deterministic(cli, tmp_path):
    a, b = _svg_twice(cli, tmp_path, "summary")
    assert a == b
    assert b"layer_4.5" in a and b"39,423,874" in a.replace(b"&#160;", b" ")


def test_compare_svg_is_deterministic(cli, tmp_path):
    a, b = _svg_twice(cli, tmp_path, "compare", "--base-dim", "8")
    assert a == b
    fixed = arith.totals(8, 2, 1, variant="fixed")["params"]
    assert f"{fixed:,}".encode() in a


TIME = re.compile(rb"(?:&#160;)*\d+\.\d\d(?!\d)")  # a time and its right-justifying padding
TIMING_LINE = re.compile(rb"<text[^>]*>Timing:[^<]*</text>")  # its text length varies with the digits


def _without_times(svg: bytes) -> bytes:
    return TIME.sub(b"T", TIMING_LINE.sub(b"TIMING", svg))


def test_run_svg_is_deterministic_apart_from_wall_clock_times(cli, tmp_path):
    # run's picture carries measured times (the "time ms" column and the Timing line), which
    # no two runs share; everything else (shapes, counts, activation statistics) must be equal.
    args = ("run", "--base-dim", "2", "--head", "adaptive", "--input", "1x3x64x64", "--seed", "1")
    a, b = _svg_twice(cli, tmp_path, *args)
    assert _without_times(a) == _without_times(b)
    assert b"time&#160;ms" in a and len(TIMING_LINE.findall(a)) == 1


def test_svg_to_a_missing_folder_is_a_usage_error(cli, tmp_path):
    cli("summary", "--base-dim", "4", "--svg", str(tmp_path / "nope" / "t.svg"), code=2)


def test_json_stdout_unaffected_by_svg(cli, tmp_path):
    plain = cli("summary", "--format", "json").stdout
    with_svg = cli("summary", "--format", "json", "--svg", str(tmp_path / "t.svg")).stdout
    assert json.loads(plain) == json.loads(with_svg)


def test_a_square_sweep_finds_the_accepted_range(cli):
    lo, hi = _smallest_and_largest_accepted()
    span = f"{lo - 2}-{hi + 2}"
    docs = cli.json("summary", "--base-dim", "4", "--input", f"1x3x{span}x{span}", code=3)
    assert [d["input_shape"][2:] for d in docs] == [[s, s] for s in range(lo - 2, hi + 3)]
    assert [d["input_shape"][2] for d in docs if d["error"] is None] == list(range(lo, hi + 1))


def test_a_sweep_of_one_side_finds_the_accepted_range(cli):
    lo, hi = _smallest_and_largest_accepted()
    docs = cli.json("summary", "--base-dim", "4", "--input", f"1x3x{lo - 2}-{hi + 2}x224", code=3)
    assert [d["input_shape"][2:] for d in docs] == [[s, 224] for s in range(lo - 2, hi + 3)]
    assert [d["input_shape"][2] for d in docs if d["error"] is None] == list(range(lo, hi + 1))
    assert {d["error"]["module"] for d in docs if d["error"]} == {"avgpool", "fc_layer"}
