"""Reading what users give us: checkpoints, arrays and images, checked before they are read.

Every file is untrusted data (docs/security.md). Before a byte of it is read into memory:
it must be a regular file (not a device, FIFO or socket, directly or through a symlink); its
size, and the size its header or zip directory declares, go through the memory guard; and a
tensor's materialised size is checked before it is copied. Nothing is ever unpickled unsafely.
"""

from __future__ import annotations

import io
import keyword
import math
import os
import pickle
import re
import stat
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from io import BufferedReader
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch

from resnet_trace.errors import UsageError
from resnet_trace.memory import check_read, human
from resnet_trace.records import Device, Variant
from resnet_trace.spec import ModelSpec

if TYPE_CHECKING:
    from resnet_trace.records import InputTensor

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


_NPY_MAGIC = b"\x93NUMPY"
#: Bytes a .npy header may declare before it is read (numpy then refuses over 10,000 characters).
_NPY_MAX_HEADER = 65_536
_CHUNK = 16 * 2**20


def _numpy() -> Any:
    try:
        import numpy as np
    except ImportError:
        raise UsageError("--input-file: reading .npy and .npz needs numpy (pip install numpy)") from None
    return np


def _read_exact(fh: IO[bytes], n: int, name: str, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise UsageError(f"{name} is not a readable .npy file: it ends inside its {what}")
    return data


def _npy_header(fh: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, Any, int]:
    """Shape, Fortran order, dtype and header length of the .npy at ``fh``'s start; data left unread.

    The header's declared length is bounded before it is read; numpy's own parser reads the
    header (literals only). Dtypes that are not plain numbers are refused here.
    """
    from numpy.lib import format as npy

    magic = _read_exact(fh, 8, name, "magic string")
    if not magic.startswith(_NPY_MAGIC):
        raise UsageError(f"{name} is not a readable .npy file: it does not start with numpy's magic string")
    version = (magic[6], magic[7])
    if version not in ((1, 0), (2, 0)):
        raise UsageError(
            f"{name} is not a readable .npy file: format version {version[0]}.{version[1]} is not read"
        )
    size_bytes = _read_exact(fh, 2 if version == (1, 0) else 4, name, "header length")
    length = int.from_bytes(size_bytes, "little")
    if length > _NPY_MAX_HEADER:
        raise UsageError(
            f"{name} was refused: its header declares {length:,} bytes, more than {_NPY_MAX_HEADER:,}"
        )
    header = _read_exact(fh, length, name, "header")
    reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
    try:
        with warnings.catch_warnings():  # "created on Python 2": the header still parses
            warnings.simplefilter("ignore")
            shape, fortran, dtype = reader(io.BytesIO(size_bytes + header))
    except (ValueError, OSError, EOFError, SyntaxError, RecursionError, TypeError, MemoryError) as exc:
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
    if any(d < 0 for d in shape):
        raise UsageError(f"{name} declares a negative dimension: {_shape(shape)}")
    return tuple(shape), bool(fortran), dtype, len(magic) + len(size_bytes) + length


def _npy_data(fh: IO[bytes], name: str, shape: tuple[int, ...], fortran: bool, dtype: Any) -> Any:
    """The array's bytes read into private memory (a bytearray, never the file's pages), as stored."""
    np = _numpy()
    nbytes = math.prod(shape) * dtype.itemsize
    data = bytearray(nbytes)  # writable, so that torch may share it without a warning
    view, pos = memoryview(data), 0
    try:
        while pos < nbytes:
            got = fh.readinto(view[pos : pos + _CHUNK])  # type: ignore[attr-defined]
            if not got:
                break
            pos += got
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        detail = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{name} cannot be read: {str(detail)[:200]}") from None
    if pos != nbytes:
        raise UsageError(f"{name} ended before its {human(nbytes)} of data")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _npy(path: Path, check_shape: Callable[[tuple[int, ...]], object] | None) -> torch.Tensor:
    """A ``.npy`` array as float32 NxCxHxW: header parsed and checked before any data is read."""
    name = _name(path, "--input-file")
    np = _numpy()
    with open_checked(path, "--input-file") as (fh, st):
        if st.st_size == 0:
            raise UsageError(f"{name} is empty, not a .npy file")
        shape, fortran, dtype, offset = _npy_header(fh, name)
        x_shape = _input_shape(shape, name)
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        left = st.st_size - offset
        if nbytes > left:  # a header that lies about the file is refused before any other question
            raise UsageError(
                f"{name} was refused: its header declares {_shape(shape)} {dtype} ({human(nbytes)}), "
                f"but the file holds {human(max(left, 0))} of data"
            )
        if check_shape is not None:
            check_shape(x_shape)
        check_read(nbytes + 4 * count, f"{name} ({_shape(shape)} {dtype})")
        arr = _npy_data(fh, name, shape, fortran, dtype)
    # Any byte order numpy knows converts exactly; the result is native float32.
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


#: The most tensors one ``--input-file`` may hold (a .npz's members, a .pt dict's entries).
MAX_INPUTS = 64
#: Deflate never expands more than about 1032 to 1: a member declaring more is not what it says.
_DEFLATE_RATIO = 1032
#: The zip directory of MAX_INPUTS members, with room to spare: a larger one is refused unparsed.
_MAX_NPZ_DIRECTORY = 2**20
_TORCH_OF_NUMPY = {
    ("b", 1): torch.bool,
    ("u", 1): torch.uint8,
    ("i", 1): torch.int8,
    ("i", 2): torch.int16,
    ("i", 4): torch.int32,
    ("i", 8): torch.int64,
    ("f", 2): torch.float16,
    ("f", 4): torch.float32,
    ("f", 8): torch.float64,
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
Check = Callable[[tuple["InputTensor", ...]], object]


def _quoted(key: str) -> str:
    return repr(key) if len(key) <= 80 else repr(key[:60]) + f"... ({len(key):,} characters)"


def _input_name(key: str, name: str, what: str) -> str:
    """``key`` when it can be a keyword argument (an ASCII Python name, not a keyword), else a UsageError."""
    if not _NAME.match(key) or keyword.iskeyword(key):
        raise UsageError(
            f"{name} was refused: {what} {_quoted(key)} is not a Python name, so it names no input"
        )
    return key


def _dims(shape: tuple[int, ...] | torch.Size, name: str) -> tuple[int, ...]:
    """The shape of one input: at least one dimension, none of them 0 or negative."""
    dims = tuple(int(d) for d in shape)
    if not dims:
        raise UsageError(f"{name} holds a scalar (0-d) tensor; save it with shape 1")
    if any(d < 0 for d in dims):
        raise UsageError(f"{name} declares a negative dimension: {_shape(dims)}")
    if 0 in dims:
        raise UsageError(f"{name} holds an empty tensor of shape {_shape(dims)}")
    return dims


def _kept_dtype(dtype: Any, name: str) -> torch.dtype:
    """The torch dtype a numpy array of ``dtype`` keeps (byte order aside), or a UsageError."""
    kept = _TORCH_OF_NUMPY.get((dtype.kind, dtype.itemsize))
    if kept is None:
        raise UsageError(
            f"{name} holds {dtype.name} data, which torch does not take as an input "
            f"(save it as int64, int32, int16, int8, uint8, bool or float)"
        )
    return kept


def _records(found: list[tuple[str | None, tuple[int, ...], torch.dtype]]) -> tuple[InputTensor, ...]:
    from resnet_trace.records import InputTensor

    return tuple(InputTensor(n, shape, str(dt).removeprefix("torch.")) for n, shape, dt in found)


def _native(arr: Any) -> torch.Tensor:
    """A C-contiguous native-endian tensor of ``arr``'s dtype; bool bytes other than 0 and 1 become True."""
    np = _numpy()
    if arr.dtype.kind == "b":
        arr = arr.view(np.uint8) != 0
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("=")))


def _conversion(dtype: Any, fortran: bool, shape: tuple[int, ...]) -> bool:
    """Whether making the stored array native and C-ordered copies it (its bytes counted twice)."""
    return not dtype.isnative or dtype.kind == "b" or (fortran and sum(d > 1 for d in shape) > 1)


def _pt_inputs(path: Path, check: Check | None) -> list[tuple[str | None, torch.Tensor]]:
    name = _name(path, "--input-file")
    obj = safe_torch_load(path, "--input-file")
    held: list[tuple[str | None, torch.Tensor]]
    if isinstance(obj, torch.Tensor):
        held = [(None, obj)]
    elif isinstance(obj, dict):
        if not obj:
            raise UsageError(f"{name} holds an empty dict; expected a tensor or a dict of named tensors")
        if len(obj) > MAX_INPUTS:
            raise UsageError(f"{name} holds {len(obj):,} entries, more than {MAX_INPUTS} inputs; not read")
        held = []
        for key, value in obj.items():
            if not isinstance(key, str):
                raise UsageError(
                    f"{name} was refused: a key is of type {type(key).__name__}, not a str naming an input"
                )
            _input_name(key, name, "the key")
            if not isinstance(value, torch.Tensor):
                raise UsageError(
                    f"{name} was refused: {_quoted(key)} is of type {type(value).__name__}, not a tensor "
                    f"(expected a tensor or a dict of str -> tensor)"
                )
            held.append((key, value))
    else:
        raise UsageError(f"{name} holds a {type(obj).__name__}; expected a tensor or a dict of str -> tensor")
    found = []
    for key, t in held:
        label = name if key is None else f"{name} (entry {_quoted(key)})"
        problem = tensor_problem(t)
        if problem:
            raise UsageError(f"{label} was refused: it holds {problem}")
        found.append((key, _dims(t.shape, label), t.dtype))
    if check is not None:
        check(_records(found))
    # The materialised sizes (a stride-0 tensor's is far more than its storage) and the mapped storages.
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for _, t in held}
    need = sum(t.numel() * t.element_size() for _, t in held) + sum(storages.values())
    check_read(need, f"{name} ({len(held)} tensor{'s' if len(held) > 1 else ''})")
    out: list[tuple[str | None, torch.Tensor]] = []
    with torch.no_grad():
        for key, t in held:
            copy = torch.empty(t.shape, dtype=t.dtype)  # private memory, never the file's mapped pages
            if t.dtype == torch.bool:
                torch.ne(t.view(torch.uint8), 0, out=copy)
            else:
                copy.copy_(t)
            out.append((key, copy))
    return out


def _npy_input(path: Path, check: Check | None) -> list[tuple[str | None, torch.Tensor]]:
    name = _name(path, "--input-file")
    _numpy()
    with open_checked(path, "--input-file") as (fh, st):
        if st.st_size == 0:
            raise UsageError(f"{name} is empty, not a .npy file")
        shape, fortran, dtype, offset = _npy_header(fh, name)
        kept = _kept_dtype(dtype, name)
        dims = _dims(shape, name)
        nbytes = math.prod(dims) * dtype.itemsize
        left = st.st_size - offset
        if nbytes > left:
            raise UsageError(
                f"{name} was refused: its header declares {_shape(dims)} {dtype} ({human(nbytes)}), "
                f"but the file holds {human(max(left, 0))} of data"
            )
        if check is not None:
            check(_records([(None, dims, kept)]))
        check_read(
            nbytes * (2 if _conversion(dtype, fortran, dims) else 1), f"{name} ({_shape(dims)} {dtype})"
        )
        arr = _npy_data(fh, name, dims, fortran, dtype)
    return [(None, _native(arr))]


def _zip_directory(fh: IO[bytes], size: int, name: str) -> None:
    """Refuse, before zipfile parses it, a zip directory declaring more members than an input holds.

    The end record is found as zipfile finds it (the last one in the file's final 64 KiB), and
    a zip64 end record before it overrides it, as in zipfile; anything unreadable is left to zipfile.
    """
    tail_len = min(size, 22 + 65_535 + 20 + 56)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = len(tail) - 22
    if not (at >= 0 and tail[at : at + 4] == b"PK\x05\x06" and tail[-2:] == b"\0\0"):
        at = tail.rfind(b"PK\x05\x06", max(0, len(tail) - 22 - 65_535))
    if at < 0 or len(tail) - at < 22:
        return
    entries = int.from_bytes(tail[at + 10 : at + 12], "little")
    directory = int.from_bytes(tail[at + 12 : at + 16], "little")
    record = at - 20 - 56
    if at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07" and record >= 0:
        if tail[record : record + 4] == b"PK\x06\x06":
            entries = int.from_bytes(tail[record + 32 : record + 40], "little")
            directory = int.from_bytes(tail[record + 40 : record + 48], "little")
    if entries > MAX_INPUTS:
        raise UsageError(f"{name} holds {entries:,} members, more than {MAX_INPUTS} inputs; not read")
    if directory > _MAX_NPZ_DIRECTORY:
        raise UsageError(
            f"{name} was refused: its zip directory declares {human(directory)}, far more than "
            f"{MAX_INPUTS} members need"
        )


def _npz_members(zf: zipfile.ZipFile, size: int, name: str) -> list[tuple[str, zipfile.ZipInfo]]:
    """Each member's input name and entry, their declared sizes bounded by the file and by deflate."""
    infos = zf.infolist()
    if not infos:
        raise UsageError(f"{name} holds no arrays")
    if len(infos) > MAX_INPUTS:
        raise UsageError(f"{name} holds {len(infos):,} members, more than {MAX_INPUTS} inputs; not read")
    members: list[tuple[str, zipfile.ZipInfo]] = []
    seen: set[str] = set()
    stored = declared = 0
    for info in infos:
        member = f"its member {_quoted(info.filename)}"
        if not info.filename.endswith(".npy"):
            raise UsageError(f"{name} was refused: {member} is not a .npy array")
        key = _input_name(info.filename.removesuffix(".npy"), name, "the member")
        if key in seen:
            raise UsageError(f"{name} was refused: it holds two members named {key!r}")
        seen.add(key)
        if info.flag_bits & 0x1:
            raise UsageError(f"{name} was refused: {member} is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise UsageError(
                    f"{name} was refused: {member} is stored uncompressed but declares "
                    f"{human(info.file_size)} from {human(info.compress_size)}"
                )
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > info.compress_size * _DEFLATE_RATIO + 4096:
                raise UsageError(
                    f"{name} was refused: {member} declares {human(info.file_size)} inflated from "
                    f"{human(info.compress_size)}, more than deflate can expand (a zip bomb)"
                )
        else:
            raise UsageError(
                f"{name} was refused: {member} is compressed with zip method {info.compress_type}, "
                f"which numpy never writes (only stored or deflated)"
            )
        if info.compress_size > size:
            raise UsageError(
                f"{name} was refused: {member} declares {human(info.compress_size)}, "
                f"more than the file's {human(size)}"
            )
        stored += info.compress_size
        declared += info.file_size
        members.append((key, info))
    if stored > size:
        raise UsageError(
            f"{name} was refused: its members declare {human(stored)} in all, more than the file's "
            f"{human(size)} (overlapping members)"
        )
    # What inflating every member would take, from the directory alone, before a byte is inflated.
    check_read(declared, f"{name} ({len(members)} members, {human(declared)} uncompressed)")
    return members


_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    RuntimeError,
    NotImplementedError,
    KeyError,
)


def _npz_inputs(path: Path, check: Check | None) -> list[tuple[str | None, torch.Tensor]]:
    """Each member of numpy's .npz zip as a keyword input: headers first, then ``check``, then data."""
    name = _name(path, "--input-file")
    _numpy()
    with open_checked(path, "--input-file") as (fh, st), ExitStack() as stack:
        if st.st_size == 0:
            raise UsageError(f"{name} is empty, not a .npz file")
        try:
            _zip_directory(fh, st.st_size, name)
            fh.seek(0)
        except OSError as exc:
            raise UsageError(f"{name} cannot be read: {exc.strerror or exc}") from None
        try:
            zf = stack.enter_context(zipfile.ZipFile(fh))
        except _ZIP_ERRORS as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UsageError(f"{name} is not a readable .npz file: {first[:200]}") from None
        members = _npz_members(zf, st.st_size, name)
        found: list[tuple[str | None, tuple[int, ...], torch.dtype]] = []
        opened = []
        need = 0
        for key, info in members:
            label = f"{name} (member {_quoted(info.filename)})"
            try:
                stream = stack.enter_context(zf.open(info))
            except _ZIP_ERRORS as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise UsageError(f"{label} cannot be read: {first[:200]}") from None
            try:
                shape, fortran, dtype, offset = _npy_header(stream, label)
            except _ZIP_ERRORS as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise UsageError(f"{label} cannot be read: {first[:200]}") from None
            kept = _kept_dtype(dtype, label)
            dims = _dims(shape, label)
            nbytes = math.prod(dims) * dtype.itemsize
            if nbytes != info.file_size - offset:  # a header that lies about its member
                raise UsageError(
                    f"{label} was refused: its header declares {_shape(dims)} {dtype} ({human(nbytes)}), "
                    f"but the member holds {human(max(info.file_size - offset, 0))} of data"
                )
            need += nbytes * (2 if _conversion(dtype, fortran, dims) else 1)
            found.append((key, dims, kept))
            opened.append((key, label, stream, dims, fortran, dtype))
        if check is not None:
            check(_records(found))
        check_read(need, f"{name} ({len(found)} arrays)")
        return [(key, _native(_npy_data(s, label, dims, f, dt))) for key, label, s, dims, f, dt in opened]


def load_inputs(path: Path, check: Check | None = None) -> list[tuple[str | None, torch.Tensor]]:
    """The tensors of one call of a model, from ``--input-file``: ``(name, tensor)``, name None positional.

    * ``.pt``/``.pth`` (weights-only): one tensor (positional) or a dict of str -> tensor, each a
      keyword input in the dict's order;
    * ``.npz``: each member a keyword input named by the member (less ``.npy``), in the zip's order;
    * ``.npy``: one positional tensor.

    Dtypes are kept (integers, bool, float16/32/64); nothing is unpickled but weights-only
    torch data. ``check`` (the caller's memory guard) is called with every tensor's name, shape
    and dtype word before any data is copied; the tensors returned are private copies.
    """
    name = _name(path, "--input-file")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return _pt_inputs(path, check)
    if suffix == ".npz":
        return _npz_inputs(path, check)
    if suffix == ".npy":
        return _npy_input(path, check)
    raise UsageError(
        f"{name}: expected a .pt tensor or dict of named tensors, a .npz of named arrays or a .npy array"
    )
