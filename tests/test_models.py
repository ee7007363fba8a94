"""Real models no one here wrote, traced exactly (issue 11).

Every expected number comes from :mod:`models_corpus`, which asks torch itself (parameter
lists, a real backward, ``FlopCounterMode`` under the math attention backend, forward hooks)
and never resnet-trace. Models come from ``transformers`` configs with random weights (no
download) and from ``torch.nn.TransformerEncoder``; the seed's own numbers close the file.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from models_corpus import BUILDERS, Truth, block_class, model_file_text, truth  # noqa: E402
from torch import nn  # noqa: E402

from resnet_trace.api import report, trace  # noqa: E402

# (id, family, config, input shape): small enough to run for real in well under a second each.
SMALL: list[tuple[str, str, dict[str, Any], tuple[int, ...]]] = [
    (
        "resnet-bottleneck",
        "resnet",
        dict(embedding_size=8, hidden_sizes=[8, 16, 24], depths=[1, 2, 1], num_labels=3),
        (2, 3, 32, 32),
    ),
    (
        "resnet-basic-1ch",
        "resnet",
        dict(embedding_size=8, hidden_sizes=[8, 16], depths=[2, 1], layer_type="basic", num_channels=1),
        (1, 1, 40, 40),
    ),
    (
        "resnet-4ch-downsample-first",
        "resnet",
        dict(
            embedding_size=6,
            hidden_sizes=[12, 12],
            depths=[1, 2],
            num_channels=4,
            downsample_in_first_stage=True,
            downsample_in_bottleneck=True,
        ),
        (3, 4, 48, 36),
    ),
    (
        "vit",
        "vit",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            image_size=32,
            patch_size=8,
        ),
        (2, 3, 32, 32),
    ),
    (
        "vit-4ch-deep",
        "vit",
        dict(
            hidden_size=24,
            num_hidden_layers=4,
            num_attention_heads=3,
            intermediate_size=48,
            image_size=24,
            patch_size=6,
            num_channels=4,
            num_labels=5,
        ),
        (3, 4, 24, 24),
    ),
    (
        "vit-1ch-noqkvbias",
        "vit",
        dict(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=16,
            image_size=16,
            patch_size=4,
            num_channels=1,
            qkv_bias=False,
        ),
        (1, 1, 16, 16),
    ),
    (
        "mobilenet_v2",
        "mobilenet_v2",
        dict(depth_multiplier=0.35, image_size=32, num_labels=3),
        (1, 3, 32, 32),
    ),
    (
        "mobilenet_v2-1ch",
        "mobilenet_v2",
        dict(depth_multiplier=0.25, image_size=40, num_channels=1, num_labels=4, finegrained_output=False),
        (2, 1, 40, 40),
    ),
    (
        "convnext",
        "convnext",
        dict(hidden_sizes=[8, 16], depths=[1, 2], num_labels=3),
        (3, 3, 32, 32),
    ),
    (
        "convnext-4ch-3stage",
        "convnext",
        dict(hidden_sizes=[8, 12, 16], depths=[2, 1, 1], num_channels=4, patch_size=2),
        (1, 4, 32, 32),
    ),
    ("encoder", "encoder", dict(), (2, 16, 3, 3)),
    ("encoder-3layer", "encoder", dict(d_model=8, nhead=4, ff=12, layers=3, classes=2), (3, 8, 2, 5)),
]
IDS = [c[0] for c in SMALL]
BY_ID = {c[0]: c for c in SMALL}


@cache
def corpus(case_id: str) -> tuple[nn.Module, Truth, str]:
    """The model of one case (built once per session), its truth and its block class."""
    _, family, cfg, shape = BY_ID[case_id]
    torch.manual_seed(0)
    model = BUILDERS[family](**cfg)
    block = block_class(family, cfg)
    return model, truth(model, shape, block), block


@cache
def traced(case_id: str, real: bool):
    model, _, _ = corpus(case_id)
    return trace(model=model, input_shape=BY_ID[case_id][3], real=real)


def blocks_of(rows) -> list:
    return [r for r in rows if r.kind == "block"]


def as_block_tuples(rows) -> list[tuple]:
    return [
        (r.name, tuple(r.in_shape), tuple(r.out_shape), r.params, r.macs, list(r.skips or [])) for r in rows
    ]


def truth_block_tuples(t: Truth) -> list[tuple]:
    return [(b.name, b.in_shape, b.out_shape, b.params, b.macs, b.skips) for b in t.blocks]


def base_name(name: str) -> str:
    return re.sub(r" \(call \d+/\d+\)$", "", name)


# -- the Python API: every number, shape-only and real ------------------------------------------------
@pytest.mark.parametrize("real", [False, True], ids=["summary", "run"])
@pytest.mark.parametrize("case_id", IDS)
def test_api_exact(case_id: str, real: bool) -> None:
    model, want, block = corpus(case_id)
    t = traced(case_id, real)
    assert t.model.block == block  # found from the dataflow, not named
    assert (t.totals.params, t.totals.params_unused, t.totals.macs) == (
        want.params,
        want.params_unused,
        want.macs,
    )
    assert as_block_tuples(blocks_of(t.rows)) == truth_block_tuples(want)
    assert [(o.path, tuple(o.shape)) for o in t.outputs] == want.outputs
    assert tuple(t.output_shape) == want.outputs[0][1]
    assert [p.requires_grad for p in model.parameters()] == [True] * len(list(model.parameters()))
    assert not model.training  # truth() left it in eval(); the tool restores the mode it found


@pytest.mark.parametrize("case_id", ["resnet-basic-1ch", "vit", "mobilenet_v2", "encoder"])
def test_block_given_by_name_agrees(case_id: str) -> None:
    model, want, block = corpus(case_id)
    t = trace(model=model, input_shape=BY_ID[case_id][3], block=block)
    assert t.model.block == block
    assert as_block_tuples(blocks_of(t.rows)) == truth_block_tuples(want)
    assert t.totals.macs == want.macs


# -- every operation belongs to a row, at every depth ----------------------------------------------
@pytest.mark.parametrize("case_id", IDS)
def test_rows_sum_to_totals_at_every_depth(case_id: str) -> None:
    t = traced(case_id, False)
    block_rows = report(t.trace, depth="block").rows
    assert not [r for r in block_rows if r.kind == "stage"]
    assert sum(r.macs for r in block_rows) == t.totals.macs
    stage_rows = report(t.trace, depth="stage").rows
    assert sum(r.macs for r in stage_rows) == t.totals.macs, [(r.name, r.macs) for r in stage_rows]
    layer_rows = report(t.trace, depth="layer").rows
    for b in blocks_of(block_rows):
        children = [r for r in layer_rows if r.depth == "layer" and r.parent == b.name]
        assert children, b.name
        assert sum(r.macs for r in children) == b.macs, b.name


@pytest.mark.parametrize("case_id", IDS)
def test_layer_rows_match_flop_counter_per_leaf_module(case_id: str) -> None:
    """A leaf module's layer rows (all its calls) carry FlopCounterMode's count for it."""
    _, want, _ = corpus(case_id)
    got: dict[str, int] = {}
    for r in report(traced(case_id, False).trace, depth="layer").rows:
        if r.depth == "layer" and base_name(r.name) in want.leaf_macs:
            got[base_name(r.name)] = got.get(base_name(r.name), 0) + r.macs
    assert got
    assert got == {n: want.leaf_macs[n] for n in got}


@pytest.mark.parametrize("case_id", ["vit", "vit-4ch-deep"])
def test_module_called_twice_in_a_block_gets_numbered_layer_rows(case_id: str) -> None:
    """ViTLayer calls its one ``dropout`` twice: two rows, ``(call 1/2)`` and ``(call 2/2)``."""
    rows = report(traced(case_id, False).trace, depth="layer").rows
    keys = [(r.parent, r.name) for r in rows if r.depth == "layer"]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)[:4]
    dropout = [r.name for r in rows if r.parent == "vit.layers.0" and "dropout" in r.name]
    assert dropout == ["vit.layers.0.dropout (call 1/2)", "vit.layers.0.dropout (call 2/2)"]


# -- a block called three times --------------------------------------------------------------------
class Refine(nn.Module):
    """A residual conv block."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class Recurrent(nn.Module):
    """One block applied three times (weights shared across calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.refine = Refine(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for _ in range(3):
            x = self.refine(x)
        return self.head(x.mean((2, 3)))


def test_block_called_three_times() -> None:
    model = Recurrent()
    # FlopCounterMode sums the three calls under one module path
    want = truth(model, (2, 3, 8, 8), "Refine", skip_rule=lambda m: ["identity"])
    t = trace(model=model, input_shape=(2, 3, 8, 8))
    assert t.model.block == "Refine"
    assert (t.totals.params, t.totals.params_unused, t.totals.macs) == (want.params, 0, want.macs)
    blocks = blocks_of(t.rows)
    assert [r.name for r in blocks] == [f"refine (call {k}/3)" for k in (1, 2, 3)]
    assert [r.macs for r in blocks] == [want.blocks[0].macs // 3] * 3
    assert sum(r.macs for r in blocks) == want.blocks[0].macs
    assert [list(r.skips) for r in blocks] == [["identity"]] * 3
    for depth in ("stage", "block", "layer"):
        rows = [r for r in report(t.trace, depth=depth).rows if depth != "layer" or r.depth != "layer"]
        assert sum(r.macs for r in rows) == want.macs, (depth, [(r.name, r.macs) for r in rows])


# -- outputs that are a nest, parameters never read ------------------------------------------------
def test_model_output_with_two_tensors() -> None:
    from transformers import ResNetConfig, ResNetModel

    model = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
    want = truth(model, (2, 3, 32, 32), "ResNetBottleNeckLayer")
    assert [p for p, _ in want.outputs] == ["last_hidden_state", "pooler_output"]
    for real in (False, True):
        t = trace(model=model, input_shape=(2, 3, 32, 32), real=real)
        assert [(o.path, tuple(o.shape)) for o in t.outputs] == want.outputs
        assert tuple(t.output_shape) == want.outputs[0][1]
        assert t.totals.macs == want.macs


def test_parameters_never_read_are_unused() -> None:
    """ViT for masked image modeling holds a ``mask_token`` that no forward without a mask reads."""
    from transformers import ViTConfig, ViTForMaskedImageModeling

    cfg = ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        image_size=16,
        patch_size=4,
        encoder_stride=4,
    )
    model = ViTForMaskedImageModeling(cfg)
    want = truth(model, (1, 3, 16, 16), "ViTLayer")
    assert want.params_unused > 0, want.unused_names  # the test needs something unused
    for real in (False, True):
        t = trace(model=model, input_shape=(1, 3, 16, 16), real=real)
        assert (t.totals.params, t.totals.params_unused, t.totals.macs) == (
            want.params,
            want.params_unused,
            want.macs,
        )
        assert [(o.path, tuple(o.shape)) for o in t.outputs] == want.outputs


def test_multihead_attention_out_proj_is_used() -> None:
    """``MultiheadAttention`` reads ``out_proj.weight`` without calling ``out_proj``: still used."""
    model, want, _ = corpus("encoder")
    t = traced("encoder", False)
    assert want.params_unused == 0 and t.totals.params_unused == 0
    assert not any("out_proj" in m for m in t.totals.unused_modules)
    assert torch.backends.mha.get_fastpath_enabled()  # the tool restores the fast path


# -- the CLI: summary (meta) and run (real) for one model per family --------------------------------
CLI_CASES = ["resnet-basic-1ch", "vit-4ch-deep", "mobilenet_v2", "convnext", "encoder"]


def json_blocks(doc: dict) -> list[tuple]:
    return [
        (r["name"], tuple(r["in_shape"]), tuple(r["out_shape"]), r["params"], r["macs"], r["skips"])
        for r in doc["rows"]
        if r["kind"] == "block"
    ]


@pytest.mark.parametrize("command", ["summary", "run"])
@pytest.mark.parametrize("case_id", CLI_CASES)
def test_cli_json_exact(cli, tmp_path, case_id: str, command: str) -> None:
    _, family, cfg, shape = BY_ID[case_id]
    _, want, block = corpus(case_id)
    path = tmp_path / f"{family}_model.py"
    path.write_text(model_file_text(family, cfg), encoding="utf-8")
    doc = cli.json(command, "--model", f"{path}:build", "-i", "x".join(map(str, shape)))
    assert doc["model"]["block"] == block and doc["model"]["block_found"] is True
    assert doc["model"]["params"] == want.params
    t = doc["totals"]
    assert (t["params"], t["params_unused"], t["macs"]) == (want.params, want.params_unused, want.macs)
    assert json_blocks(doc) == truth_block_tuples(want)
    assert [(o["path"], tuple(o["shape"])) for o in doc["outputs"]] == want.outputs
    assert tuple(doc["output_shape"]) == want.outputs[0][1]
    assert sum(r["macs"] for r in doc["rows"] if r["kind"] != "stage") == want.macs
    assert doc["device"] == ("meta" if command == "summary" else "cpu")


def test_cli_model_arg_builds_what_was_asked(cli, tmp_path) -> None:
    path = tmp_path / "vitargs.py"
    path.write_text(
        "from transformers import ViTConfig, ViTForImageClassification\n\n\n"
        "def build(layers, channels=3):\n"
        "    cfg = ViTConfig(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,\n"
        "                    intermediate_size=16, image_size=16, patch_size=4, num_channels=channels)\n"
        "    return ViTForImageClassification(cfg)\n",
        encoding="utf-8",
    )
    cfg = dict(
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=16,
        image_size=16,
        patch_size=4,
        num_channels=4,
    )
    want = truth(BUILDERS["vit"](**cfg), (2, 4, 16, 16), "ViTLayer")
    doc = cli.json(
        "summary", "--model", f"{path}:build", "--model-arg", "layers=3", "--model-arg", "channels=4",
        "-i", "2x4x16x16",
    )  # fmt: skip
    assert doc["model"]["class"] == "ViTForImageClassification"
    assert doc["totals"]["params"] == want.params and doc["totals"]["macs"] == want.macs
    assert json_blocks(doc) == truth_block_tuples(want)
    cli("summary", "--model", f"{path}:build", "-i", "2x4x16x16", code=2)  # `layers` has no value


# -- random small configs ----------------------------------------------------------------------------
@settings(max_examples=4, deadline=None, derandomize=True)
@given(
    depths=st.lists(st.integers(1, 2), min_size=1, max_size=3),
    width=st.sampled_from([4, 8]),
    basic=st.booleans(),
    channels=st.sampled_from([1, 3, 4]),
    batch=st.integers(1, 3),
    size=st.sampled_from([24, 32, 40]),
)
def test_random_resnets(depths, width, basic, channels, batch, size) -> None:
    cfg = dict(
        embedding_size=width,
        hidden_sizes=[width * (i + 1) for i in range(len(depths))],
        depths=depths,
        layer_type="basic" if basic else "bottleneck",
        num_channels=channels,
    )
    model = BUILDERS["resnet"](**cfg)
    shape = (batch, channels, size, size)
    want = truth(model, shape, block_class("resnet", cfg))
    t = trace(model=model, input_shape=shape)
    assert (t.totals.params, t.totals.params_unused, t.totals.macs) == (want.params, 0, want.macs)
    assert as_block_tuples(blocks_of(t.rows)) == truth_block_tuples(want)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(
    layers=st.integers(1, 3),
    heads=st.sampled_from([1, 2, 4]),
    patch=st.sampled_from([4, 8]),
    grid=st.integers(1, 3),
    channels=st.sampled_from([1, 3]),
    batch=st.integers(1, 3),
)
def test_random_vits(layers, heads, patch, grid, channels, batch) -> None:
    size = patch * grid
    cfg = dict(
        hidden_size=8 * heads,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=12,
        image_size=size,
        patch_size=patch,
        num_channels=channels,
    )
    model = BUILDERS["vit"](**cfg)
    shape = (batch, channels, size, size)
    want = truth(model, shape, "ViTLayer")
    t = trace(model=model, input_shape=shape)
    assert (t.totals.params, t.totals.params_unused, t.totals.macs) == (want.params, 0, want.macs)
    assert as_block_tuples(blocks_of(t.rows)) == truth_block_tuples(want)


# -- the default configs at 224x224 (few: full-size models cost seconds each) -------------------------
FULL = [
    ("resnet", {}, "ResNetBottleNeckLayer"),
    ("vit", {}, "ViTLayer"),
    ("mobilenet_v2", {}, "MobileNetV2InvertedResidual"),
    ("convnext", {}, "ConvNextLayer"),
]


@pytest.mark.parametrize("family,cfg,block", FULL, ids=[f[0] for f in FULL])
def test_default_config_summary_224(cli, tmp_path, family: str, cfg: dict, block: str) -> None:
    torch.manual_seed(0)
    want = truth(BUILDERS[family](**cfg), (1, 3, 224, 224), block)
    path = tmp_path / f"{family}_default.py"
    path.write_text(model_file_text(family, cfg), encoding="utf-8")
    doc = cli.json("summary", "--model", f"{path}:build", "-i", "1x3x224x224")
    assert doc["device"] == "meta"
    assert doc["model"]["block"] == block
    t = doc["totals"]
    assert (t["params"], t["params_unused"], t["macs"]) == (want.params, want.params_unused, want.macs)
    assert json_blocks(doc) == truth_block_tuples(want)
    assert [(o["path"], tuple(o["shape"])) for o in doc["outputs"]] == want.outputs


def test_well_known_default_numbers() -> None:
    """Pinned from torch alone (models_corpus.truth): the figures docs/models.md quotes."""
    from models_corpus import build_resnet, build_vit

    assert sum(p.numel() for p in build_resnet().parameters()) == 23_512_130
    assert sum(p.numel() for p in build_vit().parameters()) == 85_800_194


# -- the seed itself is unchanged ------------------------------------------------------------------------
def test_seed_unchanged(cli) -> None:
    doc = cli.json("summary")
    t = doc["totals"]
    assert (t["params"], t["params_unused"], t["macs"]) == (39_423_874, 1_378_048, 5_368_434_688)
    blocks = [r for r in doc["rows"] if r["kind"] == "block"]
    down = {"layer_2.2", "layer_3.3", "layer_4.5"}
    assert len(blocks) == 16
    assert [r["skips"] for r in blocks] == [
        ["downsample"] if r["name"] in down else ["dim_equalizer"] for r in blocks
    ]
    assert [r["skip"] for r in blocks] == [
        "downsample" if r["name"] in down else "dim_equalizer" for r in blocks
    ]
    assert sum(r["macs"] for r in doc["rows"]) == 5_368_434_688


def test_seed_truth_from_its_own_code(seed_module) -> None:
    """The seed's numbers again at another width, from the code review's own classes and torch alone."""
    torch.manual_seed(0)
    model = seed_module["ResNet"](base_dim=8, num_classes=2)
    want = truth(model, (1, 3, 224, 224), "BottleNeck", skip_rule=lambda m: [])
    t = trace(base_dim=8, input_shape=(1, 3, 224, 224))
    assert (t.totals.params, t.totals.params_unused, t.totals.macs) == (
        want.params,
        want.params_unused,
        want.macs,
    )
    got = [(r.name, tuple(r.in_shape), tuple(r.out_shape), r.params, r.macs) for r in blocks_of(t.rows)]
    assert got == [(b.name, b.in_shape, b.out_shape, b.params, b.macs) for b in want.blocks]


@pytest.mark.parametrize(
    "case_id, shapes",
    [
        ("encoder", [(2, 16, 3, 3), (1, 16, 2, 5), (3, 16, 4, 4)]),  # attention, on meta's CPU kernel
        ("resnet-bottleneck", [(2, 3, 32, 32), (1, 4, 8, 8), (1, 3, 48, 40)]),  # 4 channels fail
    ],
)
def test_several_inputs_in_one_call_each_match_their_own_truth(cli, tmp_path, case_id, shapes):
    """One hook session serves every input of a ``summary``: nothing from one forward (or from the
    work between forwards) leaks into another, an input that fails included."""
    _, family, cfg, _ = BY_ID[case_id]
    torch.manual_seed(0)
    model, block = BUILDERS[family](**cfg), block_class(family, cfg)
    path = tmp_path / f"{family}_sizes.py"
    path.write_text(model_file_text(family, cfg), encoding="utf-8")
    wants: list[Truth | None] = []
    for shape in shapes:
        try:
            wants.append(truth(model, shape, block))
        except (RuntimeError, ValueError):  # the model refuses it: the tool reports the failure
            wants.append(None)
    args = [a for s in shapes for a in ("-i", "x".join(map(str, s)))]
    docs = cli.json("summary", "--model", f"{path}:build", *args, code=3 if None in wants else 0)
    assert [tuple(d["input_shape"]) for d in docs] == shapes
    for doc, shape, want in zip(docs, shapes, wants):
        if want is None:
            assert doc["error"] is not None and doc["output_shape"] is None, shape
            continue
        assert doc["error"] is None, shape
        t = doc["totals"]
        assert (t["params"], t["params_unused"], t["macs"]) == (want.params, want.params_unused, want.macs)
        assert json_blocks(doc) == truth_block_tuples(want), shape
        assert [(o["path"], tuple(o["shape"])) for o in doc["outputs"]] == want.outputs
