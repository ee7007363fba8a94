"""Reading what users give us: checkpoints, arrays and images, checked before they are read.

Every file is untrusted data (docs/security.md). Before a byte of it is read into memory:
it must be a regular file (not a device, FIFO or socket, directly or through a symlink); its
size, and the size its header or zip directory declares, go through the memory guard; and a
tensor's materialised size is checked before it is copied. Nothing is ever unpickled unsafely.

Nothing returned is ever pages of the file: a ``.pt`` is checked on a map of the file and then
read into private memory (:func:`safe_torch_load`), arrays are read with ``read``, so another
process truncating or replacing a file once it is read cannot touch a running forward. A file
that changes while it is read (its size, modification time or inode, or a read that comes up
short) is a UsageError saying so.
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


def _zip_declared(fh: IO[bytes], size: int, name: str) -> int:
    """Bytes the zip's entries declare, uncompressed; refuse what torch.save never writes."""
    try:
        fh.seek(0)
        with zipfile.ZipFile(fh) as zf:  # the open file checked, not its path again
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


#: What a file that changed between its check and the end of its read is told (one line).
CHANGED = "changed while it was being read"


def file_change(fh: IO[bytes], path: Path, st: os.stat_result) -> str | None:
    """How the file opened as ``fh`` (``st`` when it was checked) has changed since, in words; None
    when it has not: what ``path`` names now, the file's size, its modification or status time."""
    try:
        there = os.stat(path)
    except OSError:
        return "it was removed or renamed"
    if (there.st_dev, there.st_ino) != (st.st_dev, st.st_ino):
        return "another file replaced it"
    now = os.fstat(fh.fileno())
    if now.st_size != st.st_size:
        return f"its size went from {st.st_size:,} to {now.st_size:,} bytes"
    if now.st_mtime_ns != st.st_mtime_ns:
        return "it was written to"
    if now.st_ctime_ns != st.st_ctime_ns:  # a writer that set the old modification time back
        return "its status changed: written to, or its times set"
    return None


def changed(name: str, how: str) -> UsageError:
    """The one line of a file that changed while it was read (exit 2)."""
    return UsageError(f"{name} {CHANGED} ({how}); it was not used")


@contextmanager
def open_unchanged(path: Path, what: str) -> Iterator[tuple[BufferedReader, os.stat_result]]:
    """:func:`open_checked`, and the file must still be as it was checked when the read ends
    (:func:`file_change`): else, and when a read failed or came up short meanwhile, the
    UsageError says that it changed while it was being read."""
    name = _name(path, what)
    with open_checked(path, what) as (fh, st):
        try:
            yield fh, st
        except UsageError:
            how = file_change(fh, path, st)
            if how is None:
                raise
            raise changed(name, how) from None
        how = file_change(fh, path, st)
        if how is not None:
            raise changed(name, how)


def _layout(obj: object, depth: int = 0) -> object:
    """What a loaded object holds, data aside: containers, keys, and every tensor's class, dtype,
    shape, strides, offset and storage (size, and which tensors share it). Equal for the map
    that was checked and the private copy read after it, unless the file changed in between."""
    storages: dict[int, int] = {}

    def walk(o: object, depth: int) -> object:
        if depth > 64:
            return type(o).__name__
        if isinstance(o, torch.Tensor):
            try:
                st = o.untyped_storage()
                n = st.nbytes()  # an empty storage has no address of its own to share
                where = (storages.setdefault(st.data_ptr(), len(storages)) if n else -1), n
                form: object = (tuple(o.stride()), o.storage_offset(), where)
            except (RuntimeError, NotImplementedError, TypeError):  # sparse, quantized: no plain storage
                form = None
            return (type(o).__name__, str(o.dtype), tuple(o.shape), str(o.layout), form)
        if isinstance(o, dict):
            return (type(o).__name__, tuple((repr(k), walk(v, depth + 1)) for k, v in o.items()))
        if isinstance(o, (list, tuple)):
            return (type(o).__name__, tuple(walk(v, depth + 1) for v in o))
        if isinstance(o, (str, bytes, int, float, bool, complex)) or o is None:
            return o
        return type(o).__name__

    return walk(obj, depth)


def _torch_load(source: str | IO[bytes], name: str, *, mmap: bool) -> object:
    """``torch.load(weights_only=True)`` whatever a damaged or hostile file makes of it: a UsageError."""
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": we print one line of our own instead.
            warnings.simplefilter("ignore")
            return torch.load(source, map_location=Device.CPU, weights_only=True, mmap=mmap)
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


def _proc_path(fh: IO[bytes], real: Path) -> str:
    """A path naming the very file open as ``fh`` (Linux's ``/proc/self/fd``), else its resolved path."""
    proc = f"/proc/self/fd/{fh.fileno()}"
    return proc if os.path.exists(proc) else str(real)


def safe_torch_load(path: Path, what: str, check: Callable[[object], object] | None = None) -> object:
    """A checked torch file's contents, weights-only, in private memory.

    The file is opened once and checked (a regular file, its size through the guard, a zip whose
    entries are bounded). A pickle that would run code is refused, unrun; so is PyTorch's legacy
    (pre-1.6, non-zip) format, whose storages declare sizes that cannot be checked before torch
    allocates them. Then two reads of that one open file:

    * ``torch.load(mmap=True)``: the tensors are pages of the file, none read yet, and ``check``
      (the caller's dtypes, shapes and memory guard) is called with them. It must not read any
      tensor's data;
    * ``torch.load`` without ``mmap``: every storage read into private memory, never the file's
      pages, so a forward never depends on a file another process may truncate or replace.

    At the end the file must be as it was checked (size, modification time, inode; its path
    still naming it) and hold the same tensors (:func:`_layout`): otherwise, or when a read comes
    up short, a UsageError says that it changed while it was being read.
    """
    with open_unchanged(path, what) as (fh, st):
        return _load_checked(fh, st, path, _name(path, what), check)


def _load_checked(
    fh: BufferedReader, st: os.stat_result, path: Path, name: str, check: Callable[[object], object] | None
) -> object:
    if st.st_size == 0:
        raise UsageError(f"{name} is empty, not a torch file")
    check_read(st.st_size, name)
    try:
        head = fh.read(4)
    except OSError as exc:
        raise UsageError(f"{name} cannot be read: {exc.strerror or exc}") from None
    if not head.startswith(_ZIP_MAGIC):
        if head[:1] == bytes([_PICKLE_PROTO]):
            raise UsageError(
                f"{name} was refused: it is a bare pickle or a checkpoint in PyTorch's legacy (pre-1.6) "
                f"format, which could run code and whose size cannot be checked before loading "
                f"(save it again with torch.save from PyTorch 1.6 or later)"
            )
        raise UsageError(f"{name} is not a file written by torch.save")
    _zip_declared(fh, st.st_size, name)
    mapped = _torch_load(_proc_path(fh, Path(os.path.realpath(path))), name, mmap=True)
    if check is not None:
        check(mapped)
    layout = _layout(mapped)
    del mapped  # the map goes with its last tensor: nothing of the file stays mapped
    how = file_change(fh, path, st)
    if how is not None:
        raise changed(name, how)
    try:
        fh.seek(0)
    except OSError as exc:
        raise UsageError(f"{name} cannot be read: {exc.strerror or exc}") from None
    obj = _torch_load(fh, name, mmap=False)
    if file_change(fh, path, st) is None and _layout(obj) != layout:  # else open_unchanged says how
        raise changed(name, "it holds other tensors than when it was checked")
    return obj


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


def checkpoint_config(sd: dict[str, torch.Tensor]) -> ModelSpec | None:
    """base_dim, num_classes and variant read from a seed checkpoint's tensor shapes."""
    stem, fc = sd.get("layer_1.0.weight"), sd.get("fc_layer.weight")
    if stem is None or fc is None or stem.dim() != 4 or fc.dim() != 2:
        return None
    variant = Variant.SEED if "layer_2.1.dim_equalizer.weight" in sd else Variant.FIXED
    return ModelSpec(base_dim=int(stem.shape[0]), num_classes=int(fc.shape[0]), variant=variant)


def load_weights(path: Path, model: torch.nn.Module, spec: ModelSpec) -> None:
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


def _fits(sd: dict[str, torch.Tensor], path: Path, spec: ModelSpec) -> None:
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
    if not isinstance(shape, tuple) or any(isinstance(d, bool) or not isinstance(d, int) for d in shape):
        raise UsageError(
            f"{name} is not a readable .npy file: its header's shape {shape!r} is not whole numbers"[:300]
        )
    if not isinstance(fortran, bool):
        raise UsageError(
            f"{name} is not a readable .npy file: its header's fortran_order is not true or false"
        )
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
    with open_unchanged(path, "--input-file") as (fh, st):
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

        def check(mapped: object) -> None:
            t = _one_tensor(mapped, name)
            problem = tensor_problem(t)
            if problem:
                raise UsageError(f"{name} was refused: it holds {problem}")
            dims = _input_shape(t.shape, name)
            if check_shape is not None:
                check_shape(dims)
            # What the float copy will take (a stride-0 tensor's is far more than its storage) before it is made.
            check_read(4 * t.numel() + t.untyped_storage().nbytes(), f"{name} ({_shape(t.shape)})")

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

    def checked(mapped: object) -> None:
        held = _pt_held(mapped, name)
        found = []
        for key, t in held:
            label = name if key is None else f"{name} (entry {_quoted(key)})"
            problem = tensor_problem(t)
            if problem:
                raise UsageError(f"{label} was refused: it holds {problem}")
            found.append((key, _dims(t.shape, label), t.dtype))
        if check is not None:
            check(_records(found))
        # The materialised sizes (a stride-0 tensor's is far more than its storage) and the storages.
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for _, t in held}
        need = sum(t.numel() * t.element_size() for _, t in held) + sum(storages.values())
        check_read(need, f"{name} ({len(held)} tensor{'s' if len(held) > 1 else ''})")

    held = _pt_held(safe_torch_load(path, "--input-file", checked), name)
    out: list[tuple[str | None, torch.Tensor]] = []
    with torch.no_grad():
        for key, t in held:
            copy = torch.empty(t.shape, dtype=t.dtype)  # contiguous, bool bytes made 0 or 1
            if t.dtype == torch.bool:
                torch.ne(t.view(torch.uint8), 0, out=copy)
            else:
                copy.copy_(t)
            out.append((key, copy))
    return out


def _pt_held(obj: object, name: str) -> list[tuple[str | None, torch.Tensor]]:
    """The named tensors of a ``.pt`` input: one tensor (positional) or a dict of str -> tensor."""
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
    return held


def _npy_input(path: Path, check: Check | None) -> list[tuple[str | None, torch.Tensor]]:
    name = _name(path, "--input-file")
    _numpy()
    with open_unchanged(path, "--input-file") as (fh, st):
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
    with open_unchanged(path, "--input-file") as (fh, st), ExitStack() as stack:
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
