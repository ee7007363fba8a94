"""Real models no one here wrote, and the truth about them, computed without resnet-trace.

Every expected number comes from torch itself:

* ``params``: ``sum(p.numel() for p in model.parameters())`` (unique tensors);
* ``params_unused``: parameters whose ``.grad`` stays ``None`` after a real backward of the
  sum of every output tensor (model in ``eval()``);
* MACs: ``torch.utils.flop_counter.FlopCounterMode`` total / 2, per block from
  ``get_flop_counts()`` under the module path it names (``RootClass.a.b.0``), with attention
  on the math backend and ``nn.MultiheadAttention``'s fused fast path switched off (that path
  runs one opaque kernel that ``FlopCounterMode`` cannot count);
* shapes: forward hooks on the block modules in a real CPU forward;
* skips: read off each block class's own structure.

Models come from ``transformers`` configs (random weights, never a download) and from
``torch.nn.TransformerEncoder``. torchvision is never used.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Builders: (family, config) -> nn.Module. Each family names its block class.
# ---------------------------------------------------------------------------------------------

BLOCK_CLASS = {
    "resnet": "ResNetBottleNeckLayer",  # ResNetBasicLayer when layer_type="basic"
    "vit": "ViTLayer",
    "mobilenet_v2": "MobileNetV2InvertedResidual",
    "convnext": "ConvNextLayer",
    "encoder": "TransformerEncoderLayer",
}


def build_resnet(**cfg: Any) -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    return ResNetForImageClassification(ResNetConfig(**cfg))


def build_vit(**cfg: Any) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(**cfg))


def build_mobilenet_v2(**cfg: Any) -> nn.Module:
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    return MobileNetV2ForImageClassification(MobileNetV2Config(**cfg))


def build_convnext(**cfg: Any) -> nn.Module:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    if "hidden_sizes" in cfg:
        cfg.setdefault("num_stages", len(cfg["hidden_sizes"]))
    return ConvNextForImageClassification(ConvNextConfig(**cfg))


class EncoderNet(nn.Module):
    """A ``TransformerEncoder`` over the H*W positions of an N x C x H x W input (C features each)."""

    def __init__(self, d_model: int = 16, nhead: int = 2, ff: int = 32, layers: int = 2, classes: int = 3):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model, nhead, ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (N, H*W, C)
        return self.head(self.encoder(tokens).mean(dim=1))


def build_encoder(**cfg: Any) -> nn.Module:
    return EncoderNet(**cfg)


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet": build_resnet,
    "vit": build_vit,
    "mobilenet_v2": build_mobilenet_v2,
    "convnext": build_convnext,
    "encoder": build_encoder,
}


def block_class(family: str, cfg: dict[str, Any]) -> str:
    if family == "resnet" and cfg.get("layer_type") == "basic":
        return "ResNetBasicLayer"
    return BLOCK_CLASS[family]


# Source text of a model file for ``--model PATH.py:build`` (the CLI builds it itself).
MODEL_FILE = {
    "resnet": "from transformers import ResNetConfig as C, ResNetForImageClassification as M\n",
    "vit": "from transformers import ViTConfig as C, ViTForImageClassification as M\n",
    "mobilenet_v2": "from transformers import MobileNetV2Config as C, MobileNetV2ForImageClassification as M\n",
    "convnext": "from transformers import ConvNextConfig as C, ConvNextForImageClassification as M\n",
}


def model_file_text(family: str, cfg: dict[str, Any]) -> str:
    """A small Python file whose ``build()`` returns the model of ``family`` with ``cfg``."""
    if family == "encoder":
        import inspect

        return (
            "import torch\nfrom torch import nn\n\n\n"
            + inspect.getsource(EncoderNet)
            + f"\n\ndef build():\n    return EncoderNet(**{cfg!r})\n"
        )
    if family == "convnext" and "hidden_sizes" in cfg:
        cfg = {**cfg, "num_stages": len(cfg["hidden_sizes"])}
    return MODEL_FILE[family] + f"\n\ndef build():\n    return M(C(**{cfg!r}))\n"


# ---------------------------------------------------------------------------------------------
# Skips from structure
# ---------------------------------------------------------------------------------------------


def structural_skips(block: nn.Module) -> list[str]:
    """The residual adds of one block, as its class's own code does them."""
    name = type(block).__name__
    if name in ("ResNetBottleNeckLayer", "ResNetBasicLayer"):
        return ["identity" if isinstance(block.shortcut, nn.Identity) else "shortcut"]
    if name == "MobileNetV2InvertedResidual":
        return ["identity"] if block.use_residual else []
    if name in ("ViTLayer", "TransformerEncoderLayer"):
        return ["identity", "identity"]
    if name == "ConvNextLayer":
        return ["identity"]
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# The truth
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BlockTruth:
    name: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int
    skips: list[str]


@dataclasses.dataclass(frozen=True)
class Truth:
    params: int
    params_unused: int
    macs: int
    blocks: list[BlockTruth]
    outputs: list[tuple[str, tuple[int, ...]]]  # (path, shape) of every output tensor
    leaf_macs: dict[str, int]  # every leaf module that ran: its MACs (all calls)
    unused_names: list[str]  # parameter names whose grad stayed None


def tensors(value: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of an output nest, with its path (dict keys, indices, dataclass fields)."""
    if isinstance(value, torch.Tensor):
        yield path, value
        return
    join = (lambda k: f"{path}.{k}") if path else str
    if isinstance(value, dict):  # transformers' ModelOutput is an OrderedDict of its set fields
        for k, v in value.items():
            yield from tensors(v, join(k))
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from tensors(v, join(i))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from tensors(getattr(value, f.name), join(f.name))


def _first(value: Any) -> torch.Tensor:
    return next(t for _, t in tensors(value))


def truth(
    model: nn.Module,
    input_shape: tuple[int, ...],
    block: str,
    seed: int = 0,
    skip_rule: Callable[[nn.Module], list[str]] = structural_skips,
) -> Truth:
    """Trace ``model`` by torch's own means: hooks, ``FlopCounterMode``, a real backward.

    ``skip_rule`` reads a block's residual adds off its structure (the corpus' classes by default).
    """
    model.eval()
    model.zero_grad(set_to_none=True)
    blocks = [(n, m) for n, m in model.named_modules() if type(m).__name__ == block]
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    handles = []
    for n, m in blocks:

        def hook(mod, args, out, n=n):
            shapes[n] = (tuple(_first(args).shape), tuple(_first(out).shape))

        handles.append(m.register_forward_hook(hook))
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(seed))
    root = type(model).__name__
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
            out = model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
        for h in handles:
            h.remove()
    counts = fc.get_flop_counts()
    outs = list(tensors(out))
    loss = sum(t.float().sum() for _, t in outs if t.is_floating_point())
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    unused_params = sum(p.numel() for p in model.parameters() if p.grad is None)
    model.zero_grad(set_to_none=True)
    leaf_macs = {}
    for n, m in model.named_modules():
        key = f"{root}.{n}" if n else root
        if not list(m.children()) and key in counts:
            leaf_macs[n] = sum(counts[key].values()) // 2
    return Truth(
        params=sum(p.numel() for p in model.parameters()),
        params_unused=unused_params,
        macs=fc.get_total_flops() // 2,
        blocks=[
            BlockTruth(
                name=n,
                in_shape=shapes[n][0],
                out_shape=shapes[n][1],
                params=sum(p.numel() for p in m.parameters()),
                macs=sum(counts.get(f"{root}.{n}", {}).values()) // 2,
                skips=skip_rule(m),
            )
            for n, m in blocks
        ],
        outputs=[(p, tuple(t.shape)) for p, t in outs],
        leaf_macs=leaf_macs,
        unused_names=unused,
    )
