"""The seed's model, faithfully: keys, shapes, shared ReLU, skip behaviour, checkpoints."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from resnet_trace.model import BottleNeck, ResNet


@pytest.mark.parametrize(("base_dim", "classes"), [(64, 2), (8, 5), (3, 1)])
def test_state_dict_keys_and_shapes_equal_the_seeds(seed_module, base_dim, classes):
    seed = seed_module["ResNet"](base_dim, classes)
    ours = ResNet(base_dim, classes)
    s, o = seed.state_dict(), ours.state_dict()
    assert list(s) == list(o)
    assert {k: tuple(v.shape) for k, v in s.items()} == {k: tuple(v.shape) for k, v in o.items()}


def test_seed_checkpoint_loads_strictly_and_gives_identical_logits(seed_module):
    torch.manual_seed(1)
    seed = seed_module["ResNet"](8, 3).eval()
    buf = io.BytesIO()
    torch.save(seed.state_dict(), buf)
    buf.seek(0)
    ours = ResNet(8, 3).eval()
    ours.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(seed(x), ours(x))


def test_state_dict_round_trip_same_logits():
    torch.manual_seed(0)
    a = ResNet(4, 2).eval()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = ResNet(4, 2).eval()
    b.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    x = torch.randn(1, 3, 200, 210)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_named_keys_from_the_issue_exist():
    keys = ResNet(64).state_dict().keys()
    for key in (
        "layer_1.0.weight",
        "layer_2.0.layer.0.0.weight",
        "layer_2.0.dim_equalizer.weight",
        "layer_2.2.downsample.weight",
        "fc_layer.weight",
    ):
        assert key in keys


def test_one_relu_shared_by_every_block_and_the_stem_has_its_own():
    model = ResNet(8)
    blocks = [m for m in model.modules() if isinstance(m, BottleNeck)]
    assert len(blocks) == 16
    relus = {id(b.act_fn) for b in blocks}
    inner = {id(m) for b in blocks for m in b.modules() if isinstance(m, nn.ReLU)}
    assert relus == inner == {id(model.act_fn)}
    assert model.layer_1[1] is not model.act_fn


def test_down_blocks_stride_two_in_first_conv_and_downsample():
    model = ResNet(8)
    downs = [n for n, m in model.named_modules() if isinstance(m, BottleNeck) and m.down]
    assert downs == ["layer_2.2", "layer_3.3", "layer_4.5"]
    for name in downs:
        block = model.get_submodule(name)
        assert block.layer[0][0].stride == (2, 2) and block.layer[0][0].kernel_size == (1, 1)
        assert block.downsample.stride == (2, 2) and block.downsample.kernel_size == (1, 1)


def test_the_seeds_identity_test_is_always_true():
    # The seed's condition: two calls of size() never return the same object.
    x = torch.zeros(1, 4, 5, 5)
    assert x.size() == x.size() and x.size() is not x.size()


def test_fixed_variant_drops_only_dead_and_equal_shape_equalizers():
    fixed = ResNet(64, variant="fixed").state_dict().keys()
    seed = ResNet(64).state_dict().keys()
    dropped = {k.rsplit(".", 1)[0] for k in set(seed) - set(fixed)}
    assert all(k.endswith("dim_equalizer") for k in dropped)
    assert set(fixed) < set(seed)
    assert "layer_2.0.dim_equalizer.weight" in fixed  # 64 -> 256 channels still needs it
    assert "layer_2.1.dim_equalizer.weight" not in fixed
