"""A ``.pt`` read weights-only: checked on a map of the open file (a zip whose entries are bounded,
no pickle that runs code, the caller's own checks), then read into private memory."""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable
from io import BufferedReader
from pathlib import Path
from typing import IO

import torch

from resnet_trace.errors import UsageError
from resnet_trace.loading.files import changed, described, file_change, open_unchanged
from resnet_trace.memory import check_read, human
from resnet_trace.records import Device

#: More entries than a zip of any real checkpoint holds (one per storage): refused unread.
MAX_ZIP_ENTRIES = 100_000
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
        return _load_checked(fh, st, path, described(path, what), check)


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
