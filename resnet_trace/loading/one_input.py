"""``--input-file`` for a model of one input: a ``.pt`` tensor, a ``.npy`` array or an image, as
contiguous float32 NxCxHxW, its shape checked (and the caller's guard called) before any copy."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from resnet_trace.errors import UsageError
from resnet_trace.loading.files import check_sizes, described, dims_text, open_unchanged
from resnet_trace.loading.npy import npy_data, npy_header, numpy_module
from resnet_trace.loading.torchfiles import safe_torch_load, tensor_problem
from resnet_trace.memory import check_read, human

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _npy(path: Path, check_shape: Callable[[tuple[int, ...]], object] | None) -> torch.Tensor:
    """A ``.npy`` array as float32 NxCxHxW: header parsed and checked before any data is read."""
    name = described(path, "--input-file")
    np = numpy_module()
    with open_unchanged(path, "--input-file") as (fh, st):
        if st.st_size == 0:
            raise UsageError(f"{name} is empty, not a .npy file")
        shape, fortran, dtype, offset = npy_header(fh, name)
        x_shape = _input_shape(shape, name)
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        left = st.st_size - offset
        if nbytes > left:  # a header that lies about the file is refused before any other question
            raise UsageError(
                f"{name} was refused: its header declares {dims_text(shape)} {dtype} ({human(nbytes)}), "
                f"but the file holds {human(max(left, 0))} of data"
            )
        if check_shape is not None:
            check_shape(x_shape)
        check_read(nbytes + 4 * count, f"{name} ({dims_text(shape)} {dtype})")
        arr = npy_data(fh, name, shape, fortran, dtype)
    # Any byte order numpy knows converts exactly; the result is native float32.
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).reshape(x_shape)


def _one_tensor(obj: object, name: str) -> torch.Tensor:
    """The tensor a ``.pt`` input holds: bare, or the one value of a dict."""
    if isinstance(obj, dict) and len(obj) == 1:
        obj = next(iter(obj.values()))
    if not isinstance(obj, torch.Tensor):
        raise UsageError(f"{name} holds a {type(obj).__name__}, not a tensor")
    return obj


def _input_shape(shape: tuple[int, ...] | torch.Size, name: str) -> tuple[int, ...]:
    """NxCxHxW (a CxHxW gains a batch axis) with no empty dimension, or a UsageError."""
    dims = tuple(int(d) for d in shape)
    if len(dims) == 3:
        dims = (1, *dims)
    if len(dims) != 4:
        raise UsageError(f"{name} holds a tensor of shape {dims_text(shape)}; expected NxCxHxW (or CxHxW)")
    return check_sizes(dims, name, tuple(shape))


def load_input(
    path: Path, channels: int | None = None, check_shape: Callable[[tuple[int, ...]], object] | None = None
) -> torch.Tensor:
    """A ``.pt`` tensor (weights-only), a ``.npy`` array (no pickles) or an image, as contiguous float32.

    A 3-D tensor gains a batch axis: the result is NxCxHxW, whatever C is (the caller checks it
    against the model). An image (PNG, JPEG, WebP, BMP, through Pillow) becomes 1xCxHxW in
    [0, 1]: grayscale when ``channels`` is 1, else RGB. ``check_shape`` (the run's memory guard)
    is called with the NxCxHxW shape once it is known from the header, before any copy is made.
    """
    name = described(path, "--input-file")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):

        def check(mapped: object) -> None:
            t = _one_tensor(mapped, name)
            problem = tensor_problem(t)
            if problem:
                raise UsageError(f"{name} was refused: it holds {problem}")
            dims = _input_shape(t.shape, name)
            if check_shape is not None:
                check_shape(dims)
            # What the float copy will take (a stride-0 tensor's is far more than its storage) before it is made.
            check_read(4 * t.numel() + t.untyped_storage().nbytes(), f"{name} ({dims_text(t.shape)})")

        obj = _one_tensor(safe_torch_load(path, "--input-file", check), name)
        dims = _input_shape(obj.shape, name)
        x = torch.empty(dims, dtype=torch.float32)
        x.copy_(obj.reshape(dims))
        return x
    if suffix == ".npy":
        return _npy(path, check_shape)
    if suffix in IMAGE_SUFFIXES:
        from resnet_trace.images import read_image

        with open_unchanged(path, "--input-file") as (fh, st):
            if st.st_size == 0:
                raise UsageError(f"{name} is empty, not an image")
            return read_image(fh, path, channels, check_shape=check_shape)
    raise UsageError(f"{name}: expected a .pt tensor, a .npy array or an image (.png, .jpg, .webp, .bmp)")
