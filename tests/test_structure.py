"""Blocks and skip paths of models that are not the seed: found from the dataflow, never nesting.

Every expected structure is read off the model's own source (the ``transformers`` files in
site-packages show each add: ``BertSelfOutput`` and ``BertOutput`` add onto the layer's stream,
``LlamaDecoderLayer`` adds twice, RoPE's ``q * cos + rotate_half(q) * sin`` is no skip, a
``T5Block`` adds nothing itself, each of its sub-layers once), or from the hand-written models
below. Totals come from ``FlopCounterMode`` (total / 2) on a real CPU forward with the math
attention backend, never from resnet-trace. Models are tiny configs with random weights (no
download).
"""

from __future__ import annotations

import dataclasses
import math
import os
from functools import cache
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from resnet_trace.freeze import freeze_rows
from resnet_trace.model import ResNet
from resnet_trace.recorder import BlockRule, choose_blocks
from resnet_trace.records import Depth, Kind, Row
from resnet_trace.target import builtin_target, model_target
from resnet_trace.tracer import find_blocks, run_forward

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# -- the truth, by torch's own means ----------------------------------------------------------------
def flop_total(model: nn.Module, x: Any) -> int:
    """MACs of a real CPU forward: ``FlopCounterMode`` total / 2, attention on the math backend and
    ``nn.MultiheadAttention``'s fused fast path off (one kernel ``FlopCounterMode`` cannot count)."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
            model(**x) if isinstance(x, dict) else model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return fc.get_total_flops() // 2


def classes_in_order(model: nn.Module, *names: str) -> list[tuple[str, str]]:
    """(name, class) of every module of the named classes, in the model's own order."""
    return [(n, type(m).__name__) for n, m in model.named_modules() if type(m).__name__ in names]


# -- the tool, through its internals (the public API cannot take token ids yet) ---------------------
@dataclasses.dataclass(frozen=True)
class Traced:
    types: tuple[str, ...]
    rows: tuple[Row, ...]
    macs: int

    def blocks(self) -> list[Row]:
        return [r for r in self.rows if r.kind is Kind.BLOCK]

    def skips(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(r.name, tuple(r.skips or ())) for r in self.blocks()]

    def top(self) -> list[Row]:
        """Block rows and the frame rows between them: what must add up to the total."""
        return [r for r in self.rows if r.depth is not Depth.LAYER and r.kind is not Kind.STAGE]


def traced(model: nn.Module, x: Any) -> Traced:
    model.eval()
    target = model_target(model)
    types = find_blocks(target, x).types
    found = dataclasses.replace(target, block_types=types)
    fwd = run_forward(found, x)
    assert fwd.failure is None, fwd.failure
    rows = freeze_rows(found, fwd.recorder, timed=False)
    return Traced(tuple(t.__name__ for t in types), rows, fwd.recorder.macs)


def assert_adds_up(model: nn.Module, x: Any, t: Traced) -> None:
    """No block inside another; block and frame rows add up to an independent total."""
    names = {r.name for r in t.blocks()}
    for r in t.rows:
        parent = r.parent
        if r.kind is Kind.BLOCK:
            assert parent not in names, (r.name, parent)
    want = flop_total(model, x)
    assert t.macs == want
    assert sum(r.macs for r in t.top()) == want


def token_ids(n: int = 2, s: int = 12, vocab: int = 100) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(0, vocab, (n, s), generator=g),
        "attention_mask": torch.ones(n, s, dtype=torch.long),
    }


def image(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


# -- transformers: small configs built on the CPU ------------------------------------------------
LM = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=40,
    max_position_embeddings=64,
)


def bert() -> tuple[nn.Module, Any]:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(**LM)), token_ids()


def gpt2() -> tuple[nn.Module, Any]:
    from transformers import GPT2Config, GPT2Model

    return GPT2Model(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64)), token_ids()


def llama() -> tuple[nn.Module, Any]:
    from transformers import LlamaConfig, LlamaModel

    return LlamaModel(LlamaConfig(**LM, num_key_value_heads=1)), token_ids()


def t5() -> tuple[nn.Module, Any]:
    from transformers import T5Config, T5Model

    cfg = T5Config(
        vocab_size=100, d_model=32, d_kv=16, d_ff=40, num_layers=2, num_decoder_layers=2, num_heads=2
    )
    x = {**token_ids(), "decoder_input_ids": token_ids(s=5)["input_ids"]}
    return T5Model(cfg), x


def vit() -> tuple[nn.Module, Any]:
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        image_size=32,
        patch_size=8,
    )
    return ViTModel(cfg), image(2, 3, 32, 32)


def swin() -> tuple[nn.Module, Any]:
    from transformers import SwinConfig, SwinModel

    cfg = SwinConfig(
        image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=4
    )
    return SwinModel(cfg), image(2, 3, 32, 32)


def detr() -> tuple[nn.Module, Any]:
    from transformers import DetrConfig, DetrModel, ResNetConfig

    backbone = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_features=["stage1", "stage2"]
    )
    cfg = DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=5,
    )
    return DetrModel(cfg), image(1, 3, 64, 64)


# (builder, the block classes, the skips each class's forward adds, as its source reads)
TRANSFORMERS = {
    # BertSelfOutput: LayerNorm(dense(h) + input_tensor); BertOutput: the same after the MLP.
    # BertAttention holds the first residual, but the layer around it holds both: the layer.
    "bert": (bert, ("BertLayer",), {"BertLayer": ("identity", "identity")}),
    # GPT2Block: residual + attn_output; residual + feed_forward_hidden_states.
    "gpt2": (gpt2, ("GPT2Block",), {"GPT2Block": ("identity", "identity")}),
    # LlamaDecoderLayer: two residual adds; RoPE's q * cos + rotate_half(q) * sin is none.
    "llama": (llama, ("LlamaDecoderLayer",), {"LlamaDecoderLayer": ("identity", "identity")}),
    # T5Block adds nothing itself; each T5Layer* adds its sub-layer's output once. T5Attention's
    # integer bucket arithmetic (relative_buckets +=) is no skip.
    "t5": (
        t5,
        ("T5LayerSelfAttention", "T5LayerFF", "T5LayerCrossAttention"),
        {
            "T5LayerSelfAttention": ("identity",),
            "T5LayerCrossAttention": ("identity",),
            "T5LayerFF": ("identity",),
        },
    ),
    # ViTLayer: attention_output + hidden_states, then ViTOutput's hidden_states + input_tensor.
    "vit": (vit, ("ViTLayer",), {"ViTLayer": ("identity", "identity")}),
    # SwinLayer: shortcut + attention, then hidden + output; the shifted window's integer mask is none.
    "swin": (swin, ("SwinLayer",), {"SwinLayer": ("identity", "identity")}),
}


@cache
def transformers_case(name: str) -> tuple[nn.Module, Any, Traced]:
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    build = TRANSFORMERS[name][0] if name in TRANSFORMERS else detr
    model, x = build()
    return model, x, traced(model, x)


@pytest.mark.parametrize("name", list(TRANSFORMERS))
def test_transformers_blocks_and_skips_as_the_source_reads(name: str) -> None:
    model, x, t = transformers_case(name)
    _, classes, skips = TRANSFORMERS[name]
    assert t.types == classes
    want = [(n, skips[cls]) for n, cls in classes_in_order(model, *classes)]
    assert t.skips() == want
    assert [r.module_type for r in t.blocks()] == [cls for _, cls in classes_in_order(model, *classes)]


@pytest.mark.parametrize("name", list(TRANSFORMERS))
def test_transformers_blocks_never_nest_and_add_up_to_the_total(name: str) -> None:
    model, x, t = transformers_case(name)
    assert_adds_up(model, x, t)


def test_bert_embedding_sum_and_attention_are_not_blocks() -> None:
    model, _, t = transformers_case("bert")
    names = {r.name for r in t.blocks()}
    assert not [n for n in names if "embeddings" in n or n.endswith(".attention")]
    embeddings = next(r for r in t.rows if r.name == "embeddings")
    assert embeddings.kind is Kind.STEM and embeddings.skips is None


def test_detr_query_plus_position_is_no_skip() -> None:
    # DetrDecoderLayer: three residual adds (self-attention, cross-attention, feed-forward); its
    # attention's hidden_states + position_embeddings (the object queries) joins no stream.
    model, x, t = transformers_case("detr")
    assert {"DetrEncoderLayer", "DetrDecoderLayer"} <= set(t.types)
    by_class = {r.module_type: tuple(r.skips or ()) for r in t.blocks()}
    assert by_class["DetrEncoderLayer"] == ("identity", "identity")
    assert by_class["DetrDecoderLayer"] == ("identity", "identity", "identity")
    assert_adds_up(model, x, t)


# -- the seed, unchanged -------------------------------------------------------------------------
def test_the_seed_found_from_its_dataflow_keeps_its_projection_skips() -> None:
    # Both operands of the seed's adds derive from the block input: the cheaper side is the skip.
    torch.manual_seed(0)
    x = image(1, 3, 224, 224)
    t = traced(ResNet(8, 3), x)
    assert t.types == ("BottleNeck",)
    builtin = builtin_target(8, 3, "seed", "avgpool7", device="cpu", init_seed=0)
    rows = freeze_rows(builtin, run_forward(builtin, x).recorder, timed=False)
    assert t.skips() == [(r.name, tuple(r.skips or ())) for r in rows if r.kind is Kind.BLOCK]
    down = {"layer_2.2", "layer_3.3", "layer_4.5"}  # the down blocks run downsample, the rest dim_equalizer
    assert t.skips() == [
        (r.name, ("downsample",) if r.name in down else ("dim_equalizer",))
        for r in rows
        if r.kind is Kind.BLOCK
    ]


# -- the rule on small hand-written blocks ----------------------------------------------------------
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Rope(nn.Module):
    """Pre-norm attention and MLP, RoPE applied in the layer's own forward (no attention module)."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.register_buffer("cos", torch.cos(torch.arange(8.0)[:, None] / (1 + torch.arange(d))))
        self.register_buffer("sin", torch.sin(torch.arange(8.0)[:, None] / (1 + torch.arange(d))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        q = q * self.cos + rotate_half(q) * self.sin
        k = k * self.cos + rotate_half(k) * self.sin
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v
        x = x + self.o(a)
        return x + self.mlp(self.norm2(x))


class PostNorm(nn.Module):
    """BERT's order: LayerNorm(x + f(x)), then LayerNorm(h + g(h))."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.f, self.g = nn.Linear(d, d), nn.Linear(d, d)
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.n1(x + self.f(x))
        return self.n2(h + self.g(h))


class NoJoin(nn.Module):
    """Adds that join nothing: integer index arithmetic, and a parameter the stream never came from."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(8, d))
        self.lin = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(x.shape[1])
        idx = idx + idx.flip(0) - idx.flip(0)  # integer adds with a common ancestor
        y = self.lin(x)
        return y + self.pos[idx]  # no common ancestor


class Stack(nn.Module):
    def __init__(self, block: type[nn.Module], n: int = 3, d: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(4, d)
        self.blocks = nn.ModuleList([block(d) for _ in range(n)])
        self.head = nn.Linear(d, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


@pytest.mark.parametrize(
    "block,skips",
    [(Rope, ("identity", "identity")), (PostNorm, ("identity", "identity"))],
    ids=["rope-in-the-layer", "post-norm"],
)
def test_hand_written_layers(block: type[nn.Module], skips: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    model, x = Stack(block), image(2, 8, 4)
    t = traced(model, x)
    assert t.types == (block.__name__,)
    assert t.skips() == [(f"blocks.{i}", skips) for i in range(3)]
    assert_adds_up(model, x, t)


def test_adds_that_join_nothing_find_no_block_and_say_how() -> None:
    torch.manual_seed(0)
    model, x = Stack(NoJoin), image(2, 8, 4)
    fwd = run_forward(model_target(model), x, find_blocks=True, block_types=())
    assert fwd.recorder.joiners == []
    choice = choose_blocks(model, fwd.recorder.joiners)
    # no module joins its own stream: the blocks are only the repeated class of the longest list
    assert choice.rule is BlockRule.REPEATED and choice.types == (NoJoin,)
    plain = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    assert choose_blocks(plain, []).rule is BlockRule.NONE


def test_finding_blocks_is_one_forward() -> None:
    model, x = Stack(Rope), image(2, 8, 4)
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        find_blocks(model_target(model), x)
    finally:
        handle.remove()
    assert len(calls) == 1


# -- concatenation skips ---------------------------------------------------------------------
def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU()
    )


class Down(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = double_conv(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Up(nn.Module):
    """Upsample the decoder's stream, concatenate the encoder's feature onto it, convolve."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
        self.conv = double_conv(cin // 2 + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], 1))


class UNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down_blocks = nn.ModuleList([Down(8, 8), Down(8, 16)])
        self.mid = double_conv(16, 32)
        self.up_blocks = nn.ModuleList([Up(32, 16, 16), Up(16, 8, 8)])
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        features = []
        for down in self.down_blocks:
            x = down(x)
            features.append(x)
            x = F.max_pool2d(x, 2)
        x = self.mid(x)
        for up, skip in zip(self.up_blocks, reversed(features)):
            x = up(x, skip)
        return self.head(x)


class UpConv(Down):
    """Two convolutions on what the model concatenated."""


class UNetCatOutside(UNet):
    """The model concatenates; the up block only takes the result (the row that consumes it names it)."""

    def __init__(self) -> None:
        super().__init__()
        self.ups = nn.ModuleList(
            [nn.ConvTranspose2d(32, 16, 2, stride=2), nn.ConvTranspose2d(16, 8, 2, stride=2)]
        )
        self.up_blocks = nn.ModuleList([UpConv(32, 16), UpConv(16, 8)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        features = []
        for down in self.down_blocks:
            x = down(x)
            features.append(x)
            x = F.max_pool2d(x, 2)
        x = self.mid(x)
        for upsample, up, skip in zip(self.ups, self.up_blocks, reversed(features)):
            x = up(torch.cat([upsample(x), skip], 1))
        return self.head(x)


@pytest.mark.parametrize("cls", [UNet, UNetCatOutside], ids=["cat-in-the-up-block", "cat-in-the-model"])
def test_unet_concatenation_skips_name_where_they_came_from(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model, x = cls(), image(2, 3, 16, 16)
    t = traced(model, x)
    up = type(model.up_blocks[0]).__name__
    assert t.types == (up,)
    assert t.skips() == [
        ("up_blocks.0", ("concat down_blocks.1",)),
        ("up_blocks.1", ("concat down_blocks.0",)),
    ]
    assert_adds_up(model, x, t)


class DenseLayer(nn.Module):
    """A DenseNet-like layer: its input, concatenated with what it computed from it."""

    def __init__(self, cin: int, growth: int = 4) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class DenseBlock(nn.Module):
    """torchvision's way: every layer takes all earlier features; the block returns them all."""

    def __init__(self, cin: int, growth: int = 4, n: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, growth, 3, padding=1))
            for c in range(cin, cin + n * growth, growth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    def __init__(self, by_layer: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block1 = nn.Sequential(*(DenseLayer(c) for c in (8, 12, 16))) if by_layer else DenseBlock(8)
        self.transition = nn.Conv2d(20, 8, 1)
        self.block2 = nn.Sequential(DenseLayer(8), DenseLayer(12)) if by_layer else DenseBlock(8, n=2)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(F.avg_pool2d(self.transition(self.block1(self.stem(x))), 2))
        return self.fc(x.mean((2, 3)))


def test_densenet_layer_concatenates_its_own_input() -> None:
    torch.manual_seed(0)
    model, x = DenseNet(by_layer=True), image(2, 3, 16, 16)
    t = traced(model, x)
    assert t.types == ("DenseLayer",)
    names = ["block1.0", "block1.1", "block1.2", "block2.0", "block2.1"]
    assert t.skips() == [(n, ("concat identity",)) for n in names]
    assert_adds_up(model, x, t)


def test_dense_block_concatenates_its_input_and_each_earlier_layer() -> None:
    torch.manual_seed(0)
    model, x = DenseNet(by_layer=False), image(2, 3, 16, 16)
    t = traced(model, x)
    assert t.types == ("DenseBlock",)
    assert t.skips() == [
        ("block1", ("concat identity", "concat layers.0", "concat layers.1")),
        ("block2", ("concat identity", "concat layers.0")),
    ]
    assert_adds_up(model, x, t)


# -- a diffusers-like U-Net: resnets and attention transformers, concatenations between ------------
# (diffusers' UNet2DConditionModel in miniature: its up blocks concatenate a down block's output
# onto the stream before each resnet; the resnets add a 1x1 conv_shortcut; each attention
# transformer adds its input back around blocks that add twice themselves.)
class ResnetBlock(nn.Module):
    """Two convolutions with the time embedding added between; a 1x1 conv_shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, temb: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(2, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(2, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention and feed-forward, each added back."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn1 = nn.MultiheadAttention(d, 2, batch_first=True)
        self.norm3 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = self.attn1(h, h, h, need_weights=False)[0] + x
        return self.ff(self.norm3(x)) + x


class Transformer2D(nn.Module):
    """Feature map to tokens, transformer blocks, back, and the input added back."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(2, c)
        self.proj_in = nn.Linear(c, c)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(c)])
        self.proj_out = nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        res = x
        h = self.norm(x).permute(0, 2, 3, 1).reshape(b, hh * ww, c)
        h = self.proj_in(h)
        for blk in self.transformer_blocks:
            h = blk(h)
        h = self.proj_out(h).reshape(b, hh, ww, c).permute(0, 3, 1, 2)
        return h + res


class CrossAttnDownBlock(nn.Module):
    """A resnet and a transformer; returns the stream and every feature the up path takes."""

    def __init__(self, cin: int, cout: int, down: bool = True) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin, cout)])
        self.attentions = nn.ModuleList([Transformer2D(cout)])
        self.downsamplers = nn.ModuleList([nn.Conv2d(cout, cout, 3, stride=2, padding=1)]) if down else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        out: tuple[torch.Tensor, ...] = ()
        for r, a in zip(self.resnets, self.attentions):
            x = a(r(x, temb))
            out += (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            out += (x,)
        return x, out


class CrossAttnUpBlock(nn.Module):
    """Before each resnet, a down block's feature concatenated onto the stream."""

    def __init__(self, cin: int, cskips: list[int], cout: int, up: bool = True) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock((cin if i == 0 else cout) + cs, cout) for i, cs in enumerate(cskips)]
        )
        self.attentions = nn.ModuleList([Transformer2D(cout) for _ in cskips])
        self.up = up
        self.conv = nn.Conv2d(cout, cout, 3, padding=1) if up else None

    def forward(self, x: torch.Tensor, res: tuple[torch.Tensor, ...], temb: torch.Tensor) -> torch.Tensor:
        for r, a in zip(self.resnets, self.attentions):
            skip = res[-1]
            res = res[:-1]
            x = torch.cat([x, skip], 1)
            x = a(r(x, temb))
        if self.up:
            x = self.conv(F.interpolate(x, scale_factor=2.0))
        return x


class UNet2D(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.time = nn.Linear(1, 8)
        self.conv_in = nn.Conv2d(3, 8, 3, padding=1)
        self.down_blocks = nn.ModuleList([CrossAttnDownBlock(8, 8), CrossAttnDownBlock(8, 16, down=False)])
        self.mid = ResnetBlock(16, 16)
        self.up_blocks = nn.ModuleList(
            [CrossAttnUpBlock(16, [16, 8], 16), CrossAttnUpBlock(16, [8, 8], 8, up=False)]
        )
        self.conv_out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time(t)
        x = self.conv_in(x)
        res = (x,)
        for d in self.down_blocks:
            x, out = d(x, temb)
            res += out
        x = self.mid(x, temb)
        for u in self.up_blocks:
            n = len(u.resnets)
            x = u(x, res[-n:], temb)
            res = res[:-n]
        return self.conv_out(x)


class TimeWrapped(nn.Module):
    """The U-Net inside another module, as a pipeline holds it: every call below it is a scope."""

    def __init__(self) -> None:
        super().__init__()
        self.unet = UNet2D()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x, torch.ones(x.shape[0], 1))


def test_diffusers_like_unet_blocks_never_nest_and_resnets_name_the_concatenation() -> None:
    torch.manual_seed(0)
    model, x = TimeWrapped(), image(1, 3, 8, 8)
    t = traced(model, x)
    # the outermost modules joining their own stream: not the up blocks (they only concatenate,
    # around resnets that add), not BasicTransformerBlock (inside Transformer2D, which adds too)
    assert t.types == ("ResnetBlock", "Transformer2D")
    resnets = [(n, s) for n, s in t.skips() if ".resnets." in n]
    assert resnets == [
        ("unet.down_blocks.0.resnets.0", ("identity",)),
        ("unet.down_blocks.1.resnets.0", ("conv_shortcut",)),
        ("unet.up_blocks.0.resnets.0", ("concat unet.down_blocks.1", "conv_shortcut")),
        ("unet.up_blocks.0.resnets.1", ("concat unet.down_blocks.0", "conv_shortcut")),
        ("unet.up_blocks.1.resnets.0", ("concat unet.down_blocks.0", "conv_shortcut")),
        ("unet.up_blocks.1.resnets.1", ("concat unet.conv_in", "conv_shortcut")),
    ]
    assert all(s == ("identity",) for n, s in t.skips() if ".attentions." in n or n == "unet.mid")
    assert_adds_up(model, x, t)
