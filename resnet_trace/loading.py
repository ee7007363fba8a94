"""Reading what users give us: checkpoints and input tensors, never unpickled unsafely."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from resnet_trace.errors import UsageError
from resnet_trace.spec import ModelSpec

WRAPPERS = ("state_dict", "model", "model_state_dict", "net")


def _readable(path: Path, what: str) -> Path:
    if not path.exists():
        raise UsageError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a directory, not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise UsageError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    return path


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_PROTO = 0x80  # first byte of a pickle of protocol 2 or later (torch's legacy format)
_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


def _refusal(exc: BaseException) -> str:
    """The one informative line of PyTorch's long weights-only refusal."""
    text = str(exc)
    m = _GLOBAL.search(text)
    if m:
        return f"it would import {m.group(1)}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("Unsupported", "Trying to", "Unpickler")) or "error:" in ln.lower():
            return ln.rstrip(":")[:160]
    return (lines[0] if lines else type(exc).__name__)[:160]


def safe_torch_load(path: Path, what: str) -> object:
    """``torch.load`` with ``weights_only=True``: a pickle that would run code is refused, unrun."""
    _readable(path, what)
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise UsageError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if not head:
        raise UsageError(f"{what} {str(path)!r} is empty, not a torch file")
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": we print one line of our own instead.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if _GLOBAL.search(str(exc)) is None and not (head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTO):
            raise UsageError(f"{what} {str(path)!r} is not a file written by torch.save") from None
        raise UsageError(
            f"{what} {str(path)!r} was refused: only weights-only files (tensors and dicts of tensors) "
            f"are loaded, since unpickling anything else could run code ({_refusal(exc)})"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:  # whatever torch.load makes of a damaged file, it is the file's fault
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{what} {str(path)!r} is not a readable torch file: {first[:200]}") from None


def unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare ``state_dict`` or one wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``."""
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
    return {k.removeprefix("module."): v for k, v in obj.items()}


def checkpoint_config(sd: dict[str, torch.Tensor]) -> ModelSpec | None:
    """base_dim, num_classes and variant read from a seed checkpoint's tensor shapes."""
    stem, fc = sd.get("layer_1.0.weight"), sd.get("fc_layer.weight")
    if stem is None or fc is None or stem.dim() != 4 or fc.dim() != 2:
        return None
    variant = "seed" if "layer_2.1.dim_equalizer.weight" in sd else "fixed"
    return ModelSpec(base_dim=int(stem.shape[0]), num_classes=int(fc.shape[0]), variant=variant)


def load_weights(path: Path, model: torch.nn.Module, spec: ModelSpec) -> None:
    """Load a checkpoint strictly into ``model``; name the flags that fit when it does not."""
    sd = unwrap_state_dict(safe_torch_load(path, "--weights"), path)
    held = checkpoint_config(sd)
    if held is not None and (held.base_dim, held.num_classes, held.variant) != (
        spec.base_dim,
        spec.num_classes,
        spec.variant,
    ):
        flags = f"--base-dim {held.base_dim} --num-classes {held.num_classes}"
        if held.variant != "seed":
            flags += f" --variant {held.variant}"
        raise UsageError(
            f"--weights {str(path)!r} holds base_dim {held.base_dim}, num_classes {held.num_classes}"
            f" ({held.variant} variant), not base_dim {spec.base_dim}, num_classes {spec.num_classes}"
            f" ({spec.variant}): run with {flags}"
        )
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
        raise UsageError(f"--weights {str(path)!r} does not fit this model: {detail[:240]}") from None


def load_input(path: Path) -> torch.Tensor:
    """A ``.pt`` tensor (weights-only), a ``.npy`` array (no pickles) or a ``.png`` image.

    A 3-D tensor gains a batch axis; an image becomes 1x3xHxW with values in [0, 1].
    """
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        obj = safe_torch_load(path, "--input-file")
        if isinstance(obj, dict) and len(obj) == 1:
            obj = next(iter(obj.values()))
        if not isinstance(obj, torch.Tensor):
            raise UsageError(f"--input-file {str(path)!r} holds a {type(obj).__name__}, not a tensor")
        x = obj
    elif suffix == ".npy":
        _readable(path, "--input-file")
        try:
            import numpy as np
        except ImportError:
            raise UsageError("--input-file: reading .npy needs numpy (pip install numpy)") from None
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise UsageError(f"--input-file {str(path)!r} was refused: {exc}") from None
        except OSError as exc:
            raise UsageError(f"--input-file {str(path)!r} is not a readable .npy file: {exc}") from None
        if arr.dtype.kind not in "fiub":
            raise UsageError(f"--input-file {str(path)!r} holds {arr.dtype} data, not numbers")
        x = torch.from_numpy(np.ascontiguousarray(arr))
    elif suffix == ".png":
        from resnet_trace.png import PNGError, read_png

        _readable(path, "--input-file")
        try:
            height, width, rgb = read_png(path.read_bytes())
        except PNGError as exc:
            raise UsageError(f"--input-file {str(path)!r}: {exc}") from None
        # HWC bytes -> 1x3xHxW floats in [0, 1]; the seed defines no other preprocessing.
        pixels = torch.frombuffer(bytearray(rgb), dtype=torch.uint8).reshape(height, width, 3)
        x = pixels.permute(2, 0, 1).unsqueeze(0).float().div(255.0)
    else:
        raise UsageError(
            f"--input-file {str(path)!r}: expected a .pt tensor, a .npy array or a .png image "
            "(JPEG is not read: convert it to PNG or .npy first)"
        )
    if x.is_complex():
        raise UsageError(f"--input-file {str(path)!r} holds complex numbers, not real ones")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise UsageError(
            f"--input-file {str(path)!r} holds a tensor of shape {'x'.join(map(str, x.shape))}; "
            "expected Nx3xHxW (or 3xHxW)"
        )
    if x.numel() == 0:
        raise UsageError(
            f"--input-file {str(path)!r} holds an empty tensor of shape {'x'.join(map(str, x.shape))}"
        )
    if not x.is_floating_point():
        x = x.float()
    return x
