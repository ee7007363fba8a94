"""The shape-only fast path (ShapeMode on meta) agrees with real CPU forwards, failures included."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from resnet_trace.api import build_target, trace_run, trace_shapes
from resnet_trace.spec import ModelSpec


def facts(t):
    rows = [
        (r.name, r.kind, r.depth, r.in_shape, r.out_shape, r.skip, r.params, r.params_unused, r.macs)
        for r in t.rows
    ]
    return rows, t.output_shape, t.totals, t.error.module if t.error else None


def agree(spec: ModelSpec, shape: tuple[int, int, int, int]) -> None:
    meta = trace_shapes(build_target(spec), shape)
    real = trace_run(build_target(spec, device="cpu", init_seed=0), torch.randn(shape))
    assert facts(meta) == facts(real)


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        (ModelSpec(2, 2), (1, 3, 224, 224)),
        (ModelSpec(3, 5), (2, 3, 193, 224)),
        (ModelSpec(2, 2), (1, 3, 192, 224)),  # fails in avgpool
        (ModelSpec(2, 2), (1, 3, 225, 225)),  # fails in fc_layer
        (ModelSpec(2, 2), (1, 3, 1, 1)),
        (ModelSpec(2, 7, "fixed"), (3, 3, 210, 200)),
        (ModelSpec(2, 3, "seed", "adaptive"), (1, 3, 97, 301)),
        (ModelSpec(2, 3, "fixed", "adaptive"), (2, 3, 8, 9)),
    ],
)
def test_shape_only_trace_equals_a_real_trace(spec, shape):
    agree(spec, shape)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 260),
    w=st.integers(1, 260),
    n=st.integers(1, 2),
    variant=st.sampled_from(["seed", "fixed"]),
    head=st.sampled_from(["avgpool7", "adaptive"]),
)
def test_shape_only_agrees_over_many_sizes(h, w, n, variant, head):
    agree(ModelSpec(2, 3, variant, head), (n, 3, h, w))


def test_renderers_and_cli_import_without_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import resnet_trace, resnet_trace.cli, resnet_trace.views, resnet_trace.diffing\n"
        "import resnet_trace.render.table, resnet_trace.render.data, resnet_trace.render.tabular\n"
        "import resnet_trace.render.graph, resnet_trace.render.compare, resnet_trace.render.tree\n"
        "import resnet_trace.render.diffs, resnet_trace.layout, resnet_trace.records\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
