"""Reading what users give us: checkpoints, arrays and images, checked before they are read.

Every file is untrusted data (docs/security.md). Before a byte of it is read into memory:
it must be a regular file (not a device, FIFO or socket, directly or through a symlink); its
size, and the size its header or zip directory declares, go through the memory guard; and a
tensor's materialised size is checked before it is copied. Nothing is ever unpickled unsafely.
"""

from __future__ import annotations

import os
import pickle
import re
import stat
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BufferedReader
from pathlib import Path

import torch

from resnet_trace.errors import UsageError
from resnet_trace.memory import check_read, human
from resnet_trace.records import Device, Variant
from resnet_trace.spec import ModelSpec

WRAPPERS = ("state_dict", "model", "model_state_dict", "net")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: More entries than a zip of any real checkpoint holds (one per storage): refused unread.
MAX_ZIP_ENTRIES = 100_000
_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _name(path: Path, what: str) -> str:
    return f"{what} {str(path)!r}"


def checked_file(path: Path, what: str) -> tuple[Path, os.stat_result]:
    """The regular file ``path`` is (its symlinks resolved) and its ``stat``, or a UsageError why not."""
    try:
        st = os.stat(path)  # follows symlinks: what would be read
    except FileNotFoundError:
        if os.path.islink(path):
            raise UsageError(f"{_name(path, what)} is a symlink to nothing") from None
        raise UsageError(f"{_name(path, what)} does not exist") from None
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{_name(path, what)} cannot be read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
        via = " (through a symlink)" if os.path.islink(path) else ""
        raise UsageError(f"{_name(path, what)} is {kind}{via}, not a regular file; it was not read")
    return Path(os.path.realpath(path)), st


@contextmanager
def open_checked(path: Path, what: str) -> Iterator[tuple[BufferedReader, os.stat_result]]:
    """Open a checked regular file without blocking, and make sure it is still the file checked."""
    real, st = checked_file(path, what)
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise UsageError(f"{_name(path, what)} cannot be read: {exc.strerror or exc}") from None
    fh = os.fdopen(fd, "rb")
    with fh:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise UsageError(f"{_name(path, what)} changed while it was being opened; it was not read")
        yield fh, now


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


def _zip_declared(path: Path, size: int, what: str) -> int:
    """Bytes the zip's entries declare, uncompressed; refuse what torch.save never writes."""
    name = _name(path, what)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise UsageError(f"{name} is not a readable torch file: {str(exc)[:200]}") from None
    if len(infos) > MAX_ZIP_ENTRIES:
        raise UsageError(f"{name} holds {len(infos):,} zip entries, more than {MAX_ZIP_ENTRIES:,}; not read")
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise UsageError(
                f"{name} was refused: its entry {info.filename!r} is compressed (torch.save stores entries "
                f"uncompressed, and compressed data can inflate beyond any limit)"
            )
        if info.file_size > size:
            raise UsageError(
                f"{name} was refused: its entry {info.filename!r} declares {human(info.file_size)}, "
                f"more than the file's {human(size)}"
            )
        total += info.file_size
    if total > size:
        raise UsageError(
            f"{name} was refused: its entries declare {human(total)} in all, more than the file's "
            f"{human(size)} (overlapping entries)"
        )
    return total


def safe_torch_load(path: Path, what: str) -> object:
    """``torch.load(weights_only=True, mmap=True)`` of a checked file whose zip directory was bounded.

    A pickle that would run code is refused, unrun; so is PyTorch's legacy (pre-1.6, non-zip)
    format, whose storages declare sizes that cannot be checked before torch allocates them.
    """
    name = _name(path, what)
    with open_checked(path, what) as (fh, st):
        if st.st_size == 0:
            raise UsageError(f"{name} is empty, not a torch file")
        check_read(st.st_size, name)
        try:
            head = fh.read(4)
        except OSError as exc:
            raise UsageError(f"{name} cannot be read: {exc.strerror or exc}") from None
        real = Path(os.path.realpath(path))
        if not head.startswith(_ZIP_MAGIC):
            if head[:1] == bytes([_PICKLE_PROTO]):
                raise UsageError(
                    f"{name} was refused: it is a bare pickle or a checkpoint in PyTorch's legacy (pre-1.6) "
                    f"format, which could run code and whose size cannot be checked before loading "
                    f"(save it again with torch.save from PyTorch 1.6 or later)"
                )
            raise UsageError(f"{name} is not a file written by torch.save")
        _zip_declared(real, st.st_size, what)
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": we print one line of our own instead.
            warnings.simplefilter("ignore")
            return torch.load(real, map_location=Device.CPU, weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise UsageError(
            f"{name} was refused: only weights-only files (tensors and dicts of tensors) "
            f"are loaded, since unpickling anything else could run code ({_refusal(exc)})"
        ) from None
    except MemoryError:
        raise UsageError(f"{name} does not fit in memory") from None
    except Exception as exc:  # whatever torch.load makes of a damaged file, it is the file's fault
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{name} is not a readable torch file: {first[:200]}") from None


_READABLE = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
)


def tensor_problem(t: torch.Tensor) -> str | None:
    """Why ``t`` cannot become a dense float tensor, in words; None when it can."""
    if t.is_quantized:
        return "a quantized tensor"
    if t.is_sparse or t.layout != torch.strided:
        return f"a {str(t.layout).removeprefix('torch.')} (sparse) tensor"
    if getattr(t, "is_nested", False):
        return "a nested tensor"
    if t.is_meta or t.device.type != Device.CPU:
        return f"a tensor on the {t.device.type} device, with no data"
    if t.is_complex():
        return "complex numbers, not real ones"
    if t.dtype not in _READABLE:
        return f"{str(t.dtype).removeprefix('torch.')} data, which is not read"
    return None


def _shape(shape: tuple[int, ...] | torch.Size) -> str:
    return "x".join(map(str, shape)) or "a scalar"


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
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    need = 0
    for key, t in sd.items():
        problem = tensor_problem(t)
        if problem:
            raise UsageError(f"--weights {str(path)!r} was refused: {key!r} is {problem}")
        need += t.numel() * t.element_size()
    # The materialised size (an expanded stride-0 tensor's is far more than its storage) before any copy.
    check_read(need, f"--weights {str(path)!r}")
    return {k: v.contiguous() if v.is_floating_point() else v for k, v in sd.items()}


def checkpoint_config(sd: dict[str, torch.Tensor]) -> ModelSpec | None:
    """base_dim, num_classes and variant read from a seed checkpoint's tensor shapes."""
    stem, fc = sd.get("layer_1.0.weight"), sd.get("fc_layer.weight")
    if stem is None or fc is None or stem.dim() != 4 or fc.dim() != 2:
        return None
    variant = Variant.SEED if "layer_2.1.dim_equalizer.weight" in sd else Variant.FIXED
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
        if held.variant is not Variant.SEED:
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


def _npy(path: Path, check_shape: Callable[[tuple[int, ...]], object] | None) -> torch.Tensor:
    """A ``.npy`` array: header parsed and its shape and dtype checked before any data is read."""
    name = _name(path, "--input-file")
    try:
        import numpy as np
        from numpy.lib import format as npy
    except ImportError:
        raise UsageError("--input-file: reading .npy needs numpy (pip install numpy)") from None
    with open_checked(path, "--input-file") as (fh, st):
        if st.st_size == 0:
            raise UsageError(f"{name} is empty, not a .npy file")
        try:
            version = npy.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(fh)
            else:
                raise ValueError(f"format version {version[0]}.{version[1]} is not read")
        except (ValueError, OSError, EOFError, SyntaxError, RecursionError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"{name} is not a readable .npy file: {first[:200]}") from None
        if dtype.hasobject:
            raise UsageError(
                f"{name} was refused: it holds Python objects, which are pickles that could run code"
            )
        if dtype.fields is not None or dtype.subdtype is not None:
            raise UsageError(f"{name} holds structured {dtype} records, not numbers")
        if dtype.kind == "c":
            raise UsageError(f"{name} holds complex numbers ({dtype}), not real ones")
        if dtype.kind == "f" and dtype.itemsize > 8:
            raise UsageError(f"{name} holds long double ({dtype}) numbers, which torch cannot hold")
        if dtype.kind not in "biuf":
            raise UsageError(f"{name} holds {dtype} data, not numbers")
        x_shape = _input_shape(shape, name)
        count = 1
        for d in shape:
            count *= d
        nbytes = count * dtype.itemsize
        left = st.st_size - fh.tell()
        if nbytes > left:  # a header that lies about the file is refused before any other question
            raise UsageError(
                f"{name} was refused: its header declares {_shape(shape)} {dtype} ({human(nbytes)}), "
                f"but the file holds {human(max(left, 0))} of data"
            )
        if check_shape is not None:
            check_shape(x_shape)
        check_read(nbytes + 4 * count, f"{name} ({_shape(shape)} {dtype})")
        data = bytearray(nbytes)  # writable, so that torch may share it without a warning
        try:
            got = fh.readinto(data)
        except OSError as exc:
            raise UsageError(f"{name} cannot be read: {exc.strerror or exc}") from None
        if got != nbytes:
            raise UsageError(f"{name} ended before its {human(nbytes)} of data")
    # Any byte order numpy knows converts exactly; the result is native float32.
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).reshape(x_shape)


def _input_shape(shape: tuple[int, ...] | torch.Size, name: str) -> tuple[int, ...]:
    """NxCxHxW (a CxHxW gains a batch axis) with no empty dimension, or a UsageError."""
    dims = tuple(int(d) for d in shape)
    if len(dims) == 3:
        dims = (1, *dims)
    if len(dims) != 4:
        raise UsageError(f"{name} holds a tensor of shape {_shape(shape)}; expected NxCxHxW (or CxHxW)")
    if any(d < 0 for d in dims):
        raise UsageError(f"{name} declares a negative dimension: {_shape(shape)}")
    if 0 in dims:
        raise UsageError(f"{name} holds an empty tensor of shape {_shape(shape)}")
    return dims


def load_input(
    path: Path, channels: int | None = None, check_shape: Callable[[tuple[int, ...]], object] | None = None
) -> torch.Tensor:
    """A ``.pt`` tensor (weights-only), a ``.npy`` array (no pickles) or an image, as contiguous float32.

    A 3-D tensor gains a batch axis: the result is NxCxHxW, whatever C is (the caller checks it
    against the model). An image (PNG, JPEG, WebP, BMP, through Pillow) becomes 1xCxHxW in
    [0, 1]: grayscale when ``channels`` is 1, else RGB. ``check_shape`` (the run's memory guard)
    is called with the NxCxHxW shape once it is known from the header, before any copy is made.
    """
    name = _name(path, "--input-file")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        obj = safe_torch_load(path, "--input-file")
        if isinstance(obj, dict) and len(obj) == 1:
            obj = next(iter(obj.values()))
        if not isinstance(obj, torch.Tensor):
            raise UsageError(f"{name} holds a {type(obj).__name__}, not a tensor")
        problem = tensor_problem(obj)
        if problem:
            raise UsageError(f"{name} was refused: it holds {problem}")
        dims = _input_shape(obj.shape, name)
        if check_shape is not None:
            check_shape(dims)
        # What the float copy will take (a stride-0 tensor's is far more than its storage) before it is made.
        count = obj.numel()
        check_read(4 * count + obj.untyped_storage().nbytes(), f"{name} ({_shape(obj.shape)})")
        x = torch.empty(dims, dtype=torch.float32)
        x.copy_(obj.reshape(dims))
        return x
    if suffix == ".npy":
        return _npy(path, check_shape)
    if suffix in IMAGE_SUFFIXES:
        from resnet_trace.images import read_image

        with open_checked(path, "--input-file") as (fh, st):
            if st.st_size == 0:
                raise UsageError(f"{name} is empty, not an image")
            return read_image(fh, path, channels, check_shape=check_shape)
    raise UsageError(f"{name}: expected a .pt tensor, a .npy array or an image (.png, .jpg, .webp, .bmp)")
