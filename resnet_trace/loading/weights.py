"""``--weights``: a checkpoint's state_dict, its tensors and size checked, loaded strictly into the
model; the seed's configuration it holds, and the flags that fit when it is not the model's."""

from __future__ import annotations

from pathlib import Path

import torch

from resnet_trace.errors import UsageError
from resnet_trace.loading.torchfiles import safe_torch_load, tensor_problem
from resnet_trace.memory import check_read
from resnet_trace.records import Variant
from resnet_trace.spec import SeedConfig

WRAPPERS = ("state_dict", "model", "model_state_dict", "net")


def unwrap_state_dict(obj: object, path: Path, *, guard: bool = True) -> dict[str, torch.Tensor]:
    """Accept a bare ``state_dict`` or one wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``.

    Every tensor is checked, and with ``guard`` their materialised size goes through the memory
    guard, before floating tensors are made contiguous (a copy only where they are not).
    """
    return {
        k: v.contiguous() if v.is_floating_point() else v for k, v in _state_dict(obj, path, guard).items()
    }


def _state_dict(obj: object, path: Path, guard: bool) -> dict[str, torch.Tensor]:
    """The state_dict in ``obj``, its tensors checked (no data read); with ``guard``, their size too."""
    if isinstance(obj, dict):
        for key in WRAPPERS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(
            f"--weights {str(path)!r} holds no state_dict (expected a dict of tensors, "
            f"bare or under 'state_dict' or 'model')"
        )
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    need = 0
    for key, t in sd.items():
        problem = tensor_problem(t)
        if problem:
            raise UsageError(f"--weights {str(path)!r} was refused: {key!r} is {problem}")
        need += t.numel() * t.element_size()
    # The materialised size (an expanded stride-0 tensor's is far more than its storage) before any copy.
    if guard:
        check_read(need, f"--weights {str(path)!r}")
    return sd


def checkpoint_config(sd: dict[str, torch.Tensor]) -> SeedConfig | None:
    """base_dim, num_classes and variant read from a seed checkpoint's tensor shapes."""
    stem, fc = sd.get("layer_1.0.weight"), sd.get("fc_layer.weight")
    if stem is None or fc is None or stem.dim() != 4 or fc.dim() != 2:
        return None
    variant = Variant.SEED if "layer_2.1.dim_equalizer.weight" in sd else Variant.FIXED
    return SeedConfig(base_dim=int(stem.shape[0]), num_classes=int(fc.shape[0]), variant=variant)


def load_weights(path: Path, model: torch.nn.Module, spec: SeedConfig) -> None:
    """Load a checkpoint strictly into ``model``; name the flags that fit when it does not.

    Its tensors, their size and the configuration they hold are checked on the file's map, then
    read into private memory (:func:`safe_torch_load`): the model never holds pages of the file.
    """

    def check(mapped: object) -> None:
        _fits(_state_dict(mapped, path, guard=True), path, spec)

    # Checked above, unchanged since (else safe_torch_load says so): not through the guard twice,
    # since the memory the copy took is no longer available to it.
    sd = unwrap_state_dict(safe_torch_load(path, "--weights", check), path, guard=False)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
        raise UsageError(f"--weights {str(path)!r} does not fit this model: {detail[:240]}") from None


def _fits(sd: dict[str, torch.Tensor], path: Path, spec: SeedConfig) -> None:
    """A seed checkpoint's configuration must be ``spec``'s: else the flags that fit, named."""
    held = checkpoint_config(sd)
    if held is not None and (held.base_dim, held.num_classes, held.variant) != (
        spec.base_dim,
        spec.num_classes,
        spec.variant,
    ):
        from resnet_trace.spec import MAX_BASE_DIM, MAX_NUM_CLASSES

        holds = (
            f"--weights {str(path)!r} holds base_dim {held.base_dim}, num_classes {held.num_classes}"
            f" ({held.variant} variant), not base_dim {spec.base_dim}, num_classes {spec.num_classes}"
            f" ({spec.variant})"
        )
        if not (1 <= held.base_dim <= MAX_BASE_DIM and 1 <= held.num_classes <= MAX_NUM_CLASSES):
            # advice names only values the tool accepts
            raise UsageError(
                f"{holds}; no seed this tool builds has that shape (base_dim 1-{MAX_BASE_DIM:,}, "
                f"num_classes 1-{MAX_NUM_CLASSES:,})"
            )
        flags = f"--base-dim {held.base_dim} --num-classes {held.num_classes}"
        if held.variant is not Variant.SEED:
            flags += f" --variant {held.variant}"
        raise UsageError(f"{holds}: run with {flags}")
