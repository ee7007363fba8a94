"""The tracer against numbers derived independently (tests/arith.py) and the hooks' hygiene."""

from __future__ import annotations

import arith
import pytest
import torch
from torch import nn

from resnet_trace.api import build_target, trace, trace_run, trace_shapes
from resnet_trace.records import Depth, Kind
from resnet_trace.spec import ModelSpec
from resnet_trace.views import select_depth


def blocks_of(t):
    return [r for r in t.rows if r.kind == Kind.BLOCK]


def test_reference_totals_at_the_seeds_defaults():
    t = trace()
    assert t.totals.params == 39_423_874
    assert t.totals.params_unused == 1_378_048
    assert t.totals.macs == 5_368_434_688
    assert t.output_shape == (1, 2)
    assert t.totals.unused_modules == (
        "layer_2.2.dim_equalizer",
        "layer_3.3.dim_equalizer",
        "layer_4.5.dim_equalizer",
    )


def test_sixteen_blocks_with_hand_derived_shapes_and_skips_at_224():
    t = trace()
    rows = blocks_of(t)
    assert len(rows) == 16
    by = {r.name: r for r in rows}
    assert by["layer_2.2"].in_shape == (1, 256, 56, 56) and by["layer_2.2"].out_shape == (1, 256, 28, 28)
    assert by["layer_3.3"].in_shape[2:] == (28, 28) and by["layer_3.3"].out_shape[2:] == (14, 14)
    assert by["layer_4.5"].in_shape[2:] == (14, 14) and by["layer_4.5"].out_shape[2:] == (7, 7)
    assert {r.name for r in rows if r.skip == "downsample"} == {"layer_2.2", "layer_3.3", "layer_4.5"}
    assert all(r.skip == "dim_equalizer" for r in rows if not r.down)


@pytest.mark.parametrize(
    ("base", "classes", "n", "h", "w"), [(64, 2, 1, 224, 224), (16, 10, 3, 200, 217), (5, 1, 2, 193, 224)]
)
def test_every_block_matches_the_independent_arithmetic(base, classes, n, h, w):
    t = trace(base_dim=base, num_classes=classes, input_shape=(n, 3, h, w))
    expected = arith.blocks(base, n, h, w)
    got = blocks_of(t)
    assert [r.name for r in got] == [b.name for b in expected]
    for r, b in zip(got, expected):
        assert (r.in_shape, r.out_shape, r.params, r.params_unused, r.macs, r.skip, r.down) == (
            b.in_shape,
            b.out_shape,
            b.params,
            b.unused,
            b.macs,
            b.skip,
            b.down,
        ), r.name
    tot = arith.totals(base, classes, n, h, w)
    assert (t.totals.params, t.totals.params_unused, t.totals.macs) == (
        tot["params"],
        tot["unused"],
        tot["macs"],
    )
    assert t.output_shape == (n, classes)
    stem, pool, fc = (
        t.rows[0],
        [r for r in t.rows if r.kind == "pool"][0],
        [r for r in t.rows if r.kind == "fc"][0],
    )
    assert (stem.name, stem.params, stem.macs) == ("layer_1", tot["stem_params"], tot["stem_macs"])
    assert (pool.name, pool.params, pool.macs) == ("avgpool", 0, 0)
    assert (fc.name, fc.params, fc.macs) == ("fc_layer", tot["fc_params"], tot["fc_macs"])


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


class _Shared(nn.Module):
    """A block called twice, a weight tied to the block's, a module that never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.block = _Block()
        self.tied = nn.Linear(6, 6, bias=False)
        self.tied.weight = self.block.lin.weight
        self.unused = nn.Linear(6, 5)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.tied(self.block(self.block(x))))


@pytest.mark.parametrize("real", [False, True])
def test_totals_count_each_parameter_once_whatever_the_rows_say(real):
    # Rows count the shared block once per call and the tied weight in two rows, and no row holds
    # the module that never runs: a total summed from rows, at any depth, would be wrong here.
    torch.manual_seed(0)
    model = _Shared()
    unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    never_read = sum(p.numel() for p in model.unused.parameters())
    t = trace(model=model, block=_Block, input_shape=(1, 2, 3, 6), real=real)
    assert t.error is None and [r.name for r in t.rows] == [
        "block (call 1/2)",
        "block (call 2/2)",
        "tied",
        "head",
    ]
    for depth in Depth:
        assert sum(r.params for r in select_depth(t.rows, depth)) != unique, depth
    assert (t.totals.params, t.totals.params_unused) == (unique, never_read) == (98, 35)
    assert t.totals.unused_modules == ("unused",)


def test_run_gives_the_same_rows_as_summary_on_real_tensors():
    shape = (2, 3, 224, 200)
    meta = trace(base_dim=8, num_classes=3, input_shape=shape)
    real = trace(base_dim=8, num_classes=3, input_shape=shape, real=True)

    def strip(t):
        return [
            (r.name, r.kind, r.in_shape, r.out_shape, r.skip, r.params, r.params_unused, r.macs)
            for r in t.rows
        ]  # noqa: E731

    assert strip(meta) == strip(real)
    assert real.trace.device == "cpu" and meta.trace.device == "meta"
    assert real.totals == meta.totals


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("side", [224, 256, 100])
def test_hooks_removed_training_restored_state_unchanged(side):
    target = build_target(ModelSpec(base_dim=4), device="cpu", init_seed=0)
    model = target.model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = trace_run(target, torch.randn(1, 3, side, side))
    assert (t.error is None) == (side == 224)
    assert _hooks(model) == 0
    assert model.training is True
    after = model.state_dict()
    assert list(before) == list(after) and all(torch.equal(before[k], after[k]) for k in before)


def test_hooks_removed_after_a_shape_only_failure():
    target = build_target(ModelSpec(base_dim=4))
    t = trace_shapes(target, (1, 3, 300, 300))
    assert t.error is not None and t.error.module == "fc_layer"
    assert _hooks(target.model) == 0
