"""One name for the model choice (issue 21): ``ModelChoice``; the built-in model's four settings,
resolved, are its ``seed_config()`` (a ``SeedConfig``, old name ``ModelSpec``); the API's old names
are thin calls into the one route and give what it gives."""

from __future__ import annotations

import pytest

from resnet_trace import api
from resnet_trace.choice import ModelChoice, TraceOptions
from resnet_trace.pipeline import trace_inputs
from resnet_trace.spec import ModelSpec, SeedConfig
from resnet_trace.target import build


def test_the_seed_config_fills_the_seeds_defaults():
    # the seed's code: ResNet(base_dim=64, num_classes=2), its blocks as written, AvgPool2d(7, 1)
    assert ModelChoice().seed_config() == SeedConfig(64, 2, "seed", "avgpool7")
    got = ModelChoice(base_dim=8, variant="fixed", head="adaptive").seed_config()
    assert (got.base_dim, got.num_classes, str(got.variant), str(got.head)) == (8, 2, "fixed", "adaptive")
    assert ModelSpec is SeedConfig


def test_old_build_names_build_what_the_choice_builds():
    new = build(ModelChoice(base_dim=4, skip=("downsample",)))
    old = api.make_target(base_dim=4, skip=["downsample"])
    spec = api.build_target(SeedConfig(base_dim=4))
    assert old.info == new.info == spec.info
    assert old.skip_override == ("downsample",) and spec.skip_override is None


@pytest.mark.parametrize("real", [False, True])
def test_old_trace_names_are_the_route(real):
    shape = [(1, 3, 224, 224)]
    if real:
        old = api.run_traces(inputs=shape, base_dim=2, model_args=None, seed=3)
        new = trace_inputs(ModelChoice(base_dim=2), shape, TraceOptions(real=True, seed=3))
    else:
        old = api.summary_traces(inputs=shape, base_dim=2, budget="1GiB")
        new = trace_inputs(ModelChoice(base_dim=2), shape, TraceOptions(train=True, budget=2**30))
    assert [t.totals for t in old] == [t.totals for t in new]
    assert [r.out_shape for r in old[0].rows] == [r.out_shape for r in new[0].rows]
    if real:
        assert old[0].run is not None and old[0].run.seed == 3
    else:
        assert old[0].train is not None and old[0].train.budget_bytes == 2**30
