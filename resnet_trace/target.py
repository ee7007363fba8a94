"""What to trace: a model, what its blocks are, and what its source knows about its failures.

:func:`build` turns a :class:`~resnet_trace.choice.ModelChoice` into a :class:`Target`: the
built-in seed, a user's ``PATH.py:NAME`` reference, or a module passed as it is. The tracer
reads nothing else. Seed-specific advice (the sizes its ``AvgPool2d(7, 1)`` head accepts) is
supplied here by the built-in target, not hard-coded in the tracer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from resnet_trace.errors import UsageError
from resnet_trace.records import CUSTOM, Device, Head, InputTensor, ModelInfo, Shape, Variant, shape_text

if TYPE_CHECKING:
    from resnet_trace.choice import ModelChoice

#: ``build(choice, device=FAKE)``: a user's model built on fake tensors (no memory, CPU semantics).
FAKE = "fake"

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
    # Elements of the largest output any module produces for an input shape, where the model's
    # source can say without a trace (the memory guard's term; None: take it from a shape trace).
    largest_output: Callable[[Shape], int] | None = None
    # Shape-only forwards run under FakeTensorMode (:func:`resnet_trace.tracer.shape_mode`): every
    # model but the built-in one, whose meta trace answers its few operations directly.
    fake: bool = False
    fake_mode: Any = None  # the mode a model built on fake tensors belongs to


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

    mode = None
    if device == Device.META:
        with MetaBuild():
            model = ResNet(base_dim, num_classes, variant=variant, head=head)
    elif device == FAKE:  # fake tensors on the CPU: what torch.autocast sees as CPU tensors
        from torch._subclasses.fake_tensor import FakeTensorMode

        mode = FakeTensorMode(allow_non_fake_inputs=True)
        with mode:
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
        fake=mode is not None,
        fake_mode=mode,
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


def build(
    choice: ModelChoice, *, device: str = Device.META, init_seed: int | None = None, fake_seed: bool = False
) -> Target:
    """The model ``choice`` names, built on ``device`` (``meta``: no weights, no memory).

    A user's model without ``block`` gets its blocks found later, once the input is known
    (:func:`resnet_trace.prepare.with_blocks`). ``device=FAKE`` builds a user's model on fake
    tensors, and the seed on ``meta`` unless ``fake_seed`` (autocast needs CPU tensors, fake ones).
    """
    if choice.builtin:
        device = Device.META if device == FAKE and not fake_seed else device
        seed = choice.seed_config()  # the choice checked its values when it was made
        target = builtin_target(
            seed.base_dim, seed.num_classes, seed.variant, seed.head, device=device, init_seed=init_seed
        )
        if choice.block is not None and tuple(choice.block) != ("BottleNeck",):
            target = dataclasses.replace(target, block_types=resolve_blocks(target.model, choice.block)[0])
    elif choice.reference is not None:
        from resnet_trace.usermodel import build_model

        kwargs = dict(choice.args)
        for name in ("base_dim", "num_classes"):
            if getattr(choice, name) is not None:
                kwargs[name] = getattr(choice, name)
        mode = None
        if device == FAKE:
            from torch._subclasses.fake_tensor import FakeTensorMode

            mode = FakeTensorMode(allow_non_fake_inputs=True)
            try:
                with mode:
                    model = build_model(choice.reference, kwargs, device=Device.CPU)
            except UsageError:
                # code that cannot build on fake tensors (it reads a value): built on meta instead,
                # traced on fake inputs all the same
                mode = None
                model = build_model(choice.reference, kwargs, device=Device.META)
        else:
            model = build_model(choice.reference, kwargs, device=device, init_seed=init_seed)
        target = model_target(
            model,
            block=choice.block,
            source=choice.reference,
            args=tuple((k, repr(v)) for k, v in kwargs.items()),
        )
        info = dataclasses.replace(target.info, base_dim=choice.base_dim, num_classes=choice.num_classes)
        target = dataclasses.replace(target, info=info, fake_mode=mode)
    else:
        if not isinstance(choice.model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, not {type(choice.model).__name__}")
        target = model_target(choice.model, block=choice.block)
    if choice.skip:
        target = dataclasses.replace(target, skip_override=tuple(choice.skip))
    return target


def model_target(
    model: nn.Module,
    *,
    block: str | type[nn.Module] | Sequence[str | type[nn.Module]] | None = None,
    source: str = "python",
    args: tuple[tuple[str, str], ...] = (),
) -> Target:
    """A target for any ``nn.Module``. ``block`` names the block class(es); without it they are
    found from the dataflow once the input is known."""
    block_types, found = resolve_blocks(model, block)
    return Target(
        model=model,
        info=ModelInfo(
            base_dim=None,
            num_classes=None,
            variant=CUSTOM,
            head=CUSTOM,
            source=source,
            block=",".join(t.__name__ for t in block_types),
            skip=(),
            model_class=type(model).__name__,
            model_params=sum(p.numel() for p in model.parameters()),
            args=args,
            block_found=found,
        ),
        block_types=block_types,
        channels=first_conv_channels(model),
        fake=True,
    )


def resolve_blocks(
    model: nn.Module, block: str | type[nn.Module] | Sequence[str | type[nn.Module]] | None
) -> tuple[tuple[type[nn.Module], ...], bool]:
    """The block classes ``block`` names in ``model``, and whether they are still to be found."""
    if block is None:
        return (), True
    wanted: list[Any] = [block] if isinstance(block, (str, type)) else list(block)
    types: list[type[nn.Module]] = []
    for w in wanted:
        if isinstance(w, type):
            types.append(w)
            continue
        matches = {type(m) for m in model.modules() if type(m).__name__ == w}
        if not matches:
            classes = sorted({type(m).__name__ for m in model.modules()})
            raise UsageError(
                f"the model has no module of class {w!r} (its classes: {', '.join(classes[:12])}"
                f"{', ...' if len(classes) > 12 else ''})"
            )
        types.extend(sorted(matches, key=lambda t: t.__qualname__))
    return tuple(types), False


def default_input(target: Target) -> Shape:
    """1 x the model's channels x 224 x 224 (3 channels when the model does not say)."""
    return (1, target.channels or 3, 224, 224)


def default_call(target: Target) -> tuple[InputTensor, ...]:
    """The input a model is traced with when none is given, from what its first layer takes.

    A transformers model says itself (its ``main_input_name`` and config); otherwise the first
    module holding parameters decides: an embedding takes ``1x128`` token ids, a recurrent layer a
    sequence of 16 steps, a linear layer one vector, an N-d convolution ``1xCx`` 224-wide
    (16 frames of 112 for 3-d); anything else the seed's ``1x3x224x224``.
    """
    model = target.model
    if target.info.source != "builtin" and hasattr(model, "main_input_name") and hasattr(model, "config"):
        from resnet_trace.hfconfig import example_inputs

        return tuple(InputTensor(name, tuple(shape), dtype) for name, shape, dtype in example_inputs(model))
    first = next((m for m in model.modules() if next(m.parameters(recurse=False), None) is not None), None)
    if isinstance(first, nn.Embedding):
        return (InputTensor(None, (1, 128), "int64"),)
    if isinstance(first, nn.RNNBase):
        steps, size = 16, int(first.input_size)
        return (InputTensor(None, (1, steps, size) if first.batch_first else (steps, 1, size)),)
    if isinstance(first, nn.Linear):
        return (InputTensor(None, (1, int(first.in_features))),)
    if isinstance(first, nn.Conv1d):
        return (InputTensor(None, (1, int(first.in_channels), 1024)),)
    if isinstance(first, nn.Conv3d):
        return (InputTensor(None, (1, int(first.in_channels), 16, 112, 112)),)
    return (InputTensor(None, default_input(target)),)


def check_channels(target: Target, shape: Shape, *, what: str | None = None) -> None:
    """The seed's stem takes 3 channels: say so before tracing; other models say it themselves."""
    if target.info.source == "builtin" and target.channels is not None and len(shape) > 1:
        if shape[1] != target.channels:
            n, c, *rest = shape
            fixed = shape_text((n, target.channels, *rest))
            plural = "s" if c != 1 else ""
            if what is not None:
                raise UsageError(
                    f"{what} holds a {shape_text(shape)} tensor with {c} channel{plural}; "
                    f"the seed's stem takes {target.channels} (expected {fixed})"
                )
            raise UsageError(
                f"--input {shape_text(shape)} has {c} channel{plural}; the seed's "
                f"stem takes {target.channels} (try {fixed})"
            )
