"""The shape-only fast path (the meta shortcuts of resnet_trace.ops) agrees with real CPU forwards, failures included."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

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


# 12 random sizes a run (a real CPU forward each) beside the 8 chosen cases above: every variant and
# head meets sizes the head accepts and sizes it refuses; the database replays any failure found.
@settings(max_examples=12, deadline=None)
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


# -- the meta shortcuts of resnet_trace.ops, one by one, against the kernels they replace ---------
aten = torch.ops.aten


def _meta(*shape, dtype=torch.float32, perm=None):
    t = torch.empty(shape, device="meta", dtype=dtype)
    return t.permute(*perm) if perm else t


def _outs(value):
    values = value if isinstance(value, (tuple, list)) else (value,)
    return [(tuple(t.shape), t.dtype, t.stride(), t.device.type) for t in values]


def _vec(n, dtype=torch.float32):
    return torch.empty(n, device="meta", dtype=dtype)


RULE_CASES = [
    # batch norm, every overload the dispatcher uses (eval, train, functional under autograd)
    (
        aten.native_batch_norm.default,
        (_meta(2, 3, 4, 5), _vec(3), _vec(3), _vec(3), _vec(3), False, 0.1, 1e-5),
    ),
    (
        aten.native_batch_norm.default,
        (_meta(2, 3, 4, 5), _vec(3), _vec(3), _vec(3), _vec(3), True, 0.1, 1e-5),
    ),
    (aten.native_batch_norm.default, (_meta(2, 3, 4, 5), None, None, None, None, True, 0.1, 1e-5)),
    (
        aten.native_batch_norm.default,
        (_meta(2, 4, 5, 3, perm=(0, 3, 1, 2)), _vec(3), _vec(3), _vec(3), _vec(3), False, 0.1, 1e-5),
    ),
    (aten.native_batch_norm.default, (_meta(4, 3), _vec(3), _vec(3), _vec(3), _vec(3), True, 0.1, 1e-5)),
    (aten.native_batch_norm.default, (_meta(2, 3, 7), None, None, _vec(3), _vec(3), False, 0.1, 1e-5)),
    (
        aten.native_batch_norm.default,
        (
            _meta(2, 3, 4, 5, dtype=torch.bfloat16),
            _vec(3, torch.bfloat16),
            None,
            _vec(3),
            _vec(3),
            False,
            0.1,
            1e-5,
        ),
    ),
    (
        aten.native_batch_norm.default,
        (_meta(2, 3, 4, 5, dtype=torch.float64), None, None, None, None, True, 0.1, 1e-5),
    ),
    (
        aten._native_batch_norm_legit_no_training.default,
        (_meta(2, 3, 4, 5), _vec(3), _vec(3), _vec(3), _vec(3), 0.1, 1e-5),
    ),
    (
        aten._native_batch_norm_legit_functional.default,
        (_meta(2, 3, 4, 5), _vec(3), _vec(3), _vec(3), _vec(3), True, 0.1, 1e-5),
    ),
    (
        aten._native_batch_norm_legit_functional.default,
        (_meta(2, 3, 4, 5), _vec(3), _vec(3), _vec(3), _vec(3), False, 0.1, 1e-5),
    ),
    (
        aten._native_batch_norm_legit.default,
        (_meta(2, 3, 4, 5), _vec(3), _vec(3), _vec(3), _vec(3), True, 0.1, 1e-5),
    ),
    (aten._native_batch_norm_legit.no_stats, (_meta(2, 3, 4, 5), _vec(3), _vec(3), True, 0.1, 1e-5)),
    # layer norm: every output, statistics' shape and dtype included
    (aten.native_layer_norm.default, (_meta(2, 3, 4, 5), [4, 5], _meta(4, 5), _meta(4, 5), 1e-5)),
    (aten.native_layer_norm.default, (_meta(2, 3, 4, 5), [5], None, None, 1e-5)),
    (aten.native_layer_norm.default, (_meta(2, 4, 5, 3, perm=(0, 3, 1, 2)), [5], _vec(5), _vec(5), 1e-6)),
    (aten.native_layer_norm.default, (_meta(2, 3, 4, 5, dtype=torch.bfloat16), [5], None, None, 1e-5)),
    (aten.native_layer_norm.default, (_meta(2, 3, 4, 5, dtype=torch.float16), [4, 5], None, None, 1e-5)),
    (
        aten.native_layer_norm.default,
        (_meta(2, 3, 4, 5, dtype=torch.float64), [5], _vec(5, torch.float64), None, 1e-5),
    ),
    # softmax, bmm, dropout, scalar products, unary ops keeping a dense layout
    (aten._softmax.default, (_meta(2, 3, 4), -1, False)),
    (aten._softmax.default, (_meta(2, 4, 3, perm=(0, 2, 1)), 1, False)),
    (aten._softmax.default, (_meta(2, 3, 4, dtype=torch.float16), -1, True)),
    (aten._safe_softmax.default, (_meta(2, 3, 4), -1)),
    (aten._safe_softmax.default, (_meta(2, 3, 4, dtype=torch.bfloat16), -1, torch.float32)),
    (aten.bmm.default, (_meta(2, 3, 4), _meta(2, 5, 4, perm=(0, 2, 1)))),
    (aten.bmm.default, (_meta(2, 4, 3, perm=(0, 2, 1)), _meta(2, 4, 5))),
    (aten.native_dropout.default, (_meta(2, 3, 4), 0.1, True)),
    (aten.native_dropout.default, (_meta(2, 4, 3, perm=(0, 2, 1)), 0.5, True)),
    (aten.native_dropout.default, (_meta(2, 3, 4), 0.1, False)),
    (aten.mul.Scalar, (_meta(2, 4, 10, 16, perm=(0, 1, 3, 2)), 0.5)),
    (aten.mul.Scalar, (_meta(2, 3, dtype=torch.float16), 3)),
    (aten.div.Scalar, (_meta(2, 3, 4), 8.0)),
    (aten.relu.default, (_meta(2, 4, 5, 3, perm=(0, 3, 1, 2)),)),
    (aten.gelu.default, (_meta(2, 3, 4),)),
    (aten.hardtanh.default, (_meta(2, 4, 5, 3, perm=(0, 3, 1, 2)), 0.0, 6.0)),
]


@pytest.mark.parametrize(
    ("func", "args"), RULE_CASES, ids=lambda v: str(v) if not isinstance(v, tuple) else ""
)
def test_each_meta_shortcut_returns_what_pytorch_returns(func, args):
    from resnet_trace.ops import META_RULES

    got = META_RULES[func](*args)
    assert got is not NotImplemented, "the shortcut should answer this case itself"
    assert _outs(got) == _outs(func(*args))


BAD_CASES = [
    (aten.native_batch_norm.default, (_meta(2, 3, 4, 5), _vec(4), None, None, None, True, 0.1, 1e-5)),
    (aten.native_batch_norm.default, (_meta(2, 3, 4, 5), None, None, None, None, False, 0.1, 1e-5)),
    (
        aten._native_batch_norm_legit_no_training.default,
        (_meta(2, 3, 4, 5), None, None, _vec(2), _vec(3), 0.1, 1e-5),
    ),
    (aten.native_layer_norm.default, (_meta(2, 3, 4, 5), [4], None, None, 1e-5)),
    (aten.native_layer_norm.default, (_meta(2, 3, 4, 5), [5], _vec(4), None, 1e-5)),
    (aten._softmax.default, (_meta(2, 3, 4), 3, False)),
    (aten._safe_softmax.default, (_meta(2, 3, 4), -4)),
    (aten.bmm.default, (_meta(2, 3, 4), _meta(2, 5, 4))),
    (aten.bmm.default, (_meta(2, 3, 4), _meta(3, 4, 5))),
    (aten.bmm.default, (_meta(3, 4), _meta(4, 5))),
    (aten.native_dropout.default, (_meta(2, 3), 1.5, True)),
]


@pytest.mark.parametrize(
    ("func", "args"), BAD_CASES, ids=lambda v: str(v) if not isinstance(v, tuple) else ""
)
def test_meta_shortcuts_leave_invalid_input_to_pytorch(func, args):
    """An invalid call is never answered: the shortcut declines, so PyTorch raises (or not) as it would."""
    from resnet_trace.ops import META_RULES

    assert META_RULES[func](*args) is NotImplemented


# -- shape-only traces of real models no one here wrote, against real CPU forwards ----------------
def _model_facts(t):
    rows = [(r.name, r.kind, r.in_shape, r.out_shape, r.params, r.macs, r.skips) for r in t.rows]
    outs = [(o.path, o.shape, o.dtype) for o in t.outputs]
    return rows, outs, t.output_shape, t.totals, t.error.module if t.error else None


def _agree_on_model(build, shape):
    from resnet_trace.api import model_target

    with torch.device("meta"):
        meta_model = build().eval()
    torch.manual_seed(0)
    cpu_model = build().eval()
    meta = trace_shapes(model_target(meta_model, input_shape=shape), shape)
    assert meta.device == "meta"
    real = trace_run(model_target(cpu_model, input_shape=shape), torch.randn(shape))
    assert _model_facts(meta) == _model_facts(real)
    return meta


def _transformers_models():
    tf = pytest.importorskip("transformers")
    return {
        "resnet-bottleneck": lambda: tf.ResNetForImageClassification(
            tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 48], depths=[1, 2, 1], num_labels=5)
        ),
        "resnet-basic-1ch": lambda: tf.ResNetForImageClassification(
            tf.ResNetConfig(
                num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"
            )
        ),
        "vit": lambda: tf.ViTForImageClassification(
            tf.ViTConfig(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                image_size=32,
                patch_size=8,
                num_labels=3,
            )
        ),
        "mobilenetv2": lambda: tf.MobileNetV2ForImageClassification(
            tf.MobileNetV2Config(depth_multiplier=0.35, image_size=64)
        ),
        "convnext": lambda: tf.ConvNextForImageClassification(
            tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 2], num_stages=2, num_labels=4)
        ),
    }


MODEL_CASES = [
    ("resnet-bottleneck", (2, 3, 64, 64)),
    ("resnet-bottleneck", (1, 3, 45, 71)),
    ("resnet-basic-1ch", (3, 1, 40, 40)),
    ("vit", (2, 3, 32, 32)),
    ("mobilenetv2", (2, 3, 64, 64)),
    ("mobilenetv2", (1, 3, 37, 50)),
    ("convnext", (2, 3, 64, 64)),
]


@pytest.mark.parametrize(("name", "shape"), MODEL_CASES)
def test_shape_only_trace_of_a_transformers_model_equals_a_real_forward(name, shape):
    _agree_on_model(_transformers_models()[name], shape)


@pytest.mark.parametrize("name", ["resnet-bottleneck", "vit", "mobilenetv2", "convnext"])
def test_shape_only_training_trace_of_a_transformers_model_runs_on_meta(name):
    from resnet_trace.api import model_target

    with torch.device("meta"):
        model = _transformers_models()[name]()
    shape = (2, 3, 32, 32) if name == "vit" else (2, 3, 64, 64)
    t = trace_shapes(model_target(model, input_shape=shape), shape, train=True)
    assert t.error is None and t.device == "meta"
    model_cpu = _transformers_models()[name]()
    with torch.no_grad():
        expected = model_cpu.train()(torch.zeros(shape)).logits.shape
    assert t.output_shape == tuple(expected)


def _encoder():
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    return torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


@pytest.mark.parametrize("shape", [(2, 10, 32), (1, 3, 32)])
def test_shape_only_trace_of_a_transformer_encoder_equals_a_real_forward(shape):
    _agree_on_model(_encoder, shape)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("vit", (1, 3, 40, 32)),  # the patch grid does not match the position embeddings
        ("resnet-bottleneck", (1, 4, 64, 64)),  # 4 channels into a 3-channel stem
        ("convnext", (1, 3, 2, 2)),  # smaller than the stem's 4x4 patch
    ],
)
def test_failing_inputs_fail_alike_on_meta_and_on_the_cpu(name, shape):
    meta = _agree_on_model(_transformers_models()[name], shape)
    assert meta.error is not None


def test_the_seeds_shape_only_trace_imports_neither_sympy_nor_dynamo():
    """PyTorch's Python meta kernels and TorchDispatchMode's dynamo guard cost about 1 s on first use.

    The seed's trace runs on ``meta`` with its own shortcuts and pays neither. A model of your own
    is traced under FakeTensorMode, which imports torch._dynamo (docs/performance.md): the cost of
    tracing any model exactly as the CPU runs it.
    """
    code = (
        "import sys, torch\n"
        "from resnet_trace.api import trace\n"
        "trace()\n"
        "trace(base_dim=16, input_shape=(2, 3, 200, 200), train=True)\n"
        "print(sorted(m for m in ('sympy', 'torch._dynamo') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_meta_build_skips_initialisation_and_nothing_else():
    import threading

    from resnet_trace.model import ResNet
    from resnet_trace.ops import MetaBuild

    with torch.device("meta"):
        plain = ResNet(16, 3)
    with MetaBuild():
        fast = ResNet(16, 3)
        made_here = torch.empty(2, 3)
        default_inside = torch.get_default_device()  # as torch.device("meta") sets it
        real = torch.zeros(4, device="cpu")
        nn.init.uniform_(real, 1.0, 2.0)  # a real tensor is still filled
        other: list[torch.Tensor] = []
        # another thread is outside the (thread-local) mode: its model is real and initialised
        thread = threading.Thread(target=lambda: other.append(nn.Linear(3, 4).weight.detach().clone()))
        thread.start()
        thread.join()
    assert made_here.is_meta and bool((real >= 1.0).all()) and bool((real <= 2.0).all())
    assert default_inside.type == "meta" and torch.get_default_device().type == "cpu"
    assert not other[0].is_meta and bool(other[0].abs().sum() > 0)
    assert [(n, p.shape, p.dtype, p.is_meta) for n, p in plain.named_parameters()] == [
        (n, p.shape, p.dtype, p.is_meta) for n, p in fast.named_parameters()
    ]
    assert [(n, type(m)) for n, m in plain.named_modules()] == [(n, type(m)) for n, m in fast.named_modules()]
