"""What to trace: a model, what its blocks are, and what its source knows about its failures.

The built-in seed and a user's model both become a :class:`Target`; the tracer reads
nothing else. Seed-specific advice (the sizes its ``AvgPool2d(7, 1)`` head accepts) is
supplied here by the built-in target, not hard-coded in the tracer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from resnet_trace.records import Device, Head, ModelInfo, Shape, Variant

#: ``advice(module, in_shape)`` -> a hint for a failure in ``module``, or None for the generic one.
Advice = Callable[[nn.Module, Shape | None], str | None]


@dataclass(frozen=True)
class Target:
    """A model to trace and how to read it."""

    model: nn.Module
    info: ModelInfo
    block_types: tuple[type[nn.Module], ...]
    accepted_sizes: tuple[int, int] | None = None
    channels: int | None = None  # input channels the model takes, when known
    advice: Advice | None = None
    skip_override: tuple[str, ...] | None = None  # --skip: names to report instead of the dataflow's
    # On meta, route attention to the CPU's kernel (ops.CpuAttentionOnMeta). The function mode that
    # does it costs every torch call of a forward (40% of the seed's shape-only trace), so only a
    # model known to have no attention, the built-in one, goes without it.
    attention: bool = True
    # Elements of the largest output any module produces for an input shape, where the model's
    # source can say without a trace (the memory guard's term; None: take it from a shape trace).
    largest_output: Callable[[Shape], int] | None = None


def builtin_target(
    base_dim: int,
    num_classes: int,
    variant: Variant,
    head: Head,
    *,
    device: str = Device.META,
    init_seed: int | None = None,
) -> Target:
    """The seed's model. On ``meta`` no weights are initialised and no memory is spent.

    Elsewhere the weights get PyTorch's default initialisation on the CPU under ``init_seed``
    and are then moved, so a seed gives the same model on every device.
    """
    import torch

    from resnet_trace.layout import STEM_CHANNELS, accepted_sizes, largest_output
    from resnet_trace.model import BottleNeck, ResNet
    from resnet_trace.ops import MetaBuild

    if device == Device.META:
        with MetaBuild():
            model = ResNet(base_dim, num_classes, variant=variant, head=head)
    else:
        if init_seed is not None:
            torch.manual_seed(init_seed)
        model = ResNet(base_dim, num_classes, variant=variant, head=head).to(device)
    params = sum(p.numel() for p in model.parameters())
    info = ModelInfo(
        base_dim,
        num_classes,
        variant,
        head,
        model_class="ResNet",
        model_params=params,
    )
    acc = accepted_sizes() if head is Head.AVGPOOL7 else None

    def advice(module: nn.Module, in_shape: Shape | None) -> str | None:
        if acc and isinstance(module, (nn.AvgPool2d, nn.Linear)):
            return (
                f"H and W must each be in {acc[0]}-{acc[1]} for the seed's AvgPool2d(7, 1) head "
                f"(e.g. 1x3x224x224), or use the adaptive head"
            )
        return None

    return Target(
        model=model,
        info=info,
        block_types=(BottleNeck,),
        accepted_sizes=acc,
        channels=STEM_CHANNELS,
        advice=advice,
        attention=False,  # convolutions, pools and a linear head only
        largest_output=lambda shape: largest_output(
            shape, base_dim, num_classes, adaptive=head is Head.ADAPTIVE
        ),
    )


def first_conv_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first convolution, or None when it has none."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return int(m.in_channels)
        if isinstance(m, nn.Linear):
            return None
    return None
