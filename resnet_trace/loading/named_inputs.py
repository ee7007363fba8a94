"""``--input-file`` for one call of any model: a ``.pt`` tensor or dict of named tensors, a ``.npz`` of
named arrays or a ``.npy`` array, dtypes kept; every name, shape and size checked before data is copied."""

from __future__ import annotations

import keyword
import math
import re
import zipfile
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING

import torch

from resnet_trace.errors import UsageError
from resnet_trace.loading.files import check_sizes, described, dims_text, open_unchanged
from resnet_trace.loading.npy import copies_to_convert, kept_dtype, native, npy_data, npy_header, numpy_module
from resnet_trace.loading.torchfiles import safe_torch_load, tensor_problem
from resnet_trace.memory import check_read, human

if TYPE_CHECKING:
    from resnet_trace.records import InputTensor

#: The most tensors one ``--input-file`` may hold (a .npz's members, a .pt dict's entries).
MAX_INPUTS = 64
#: Deflate never expands more than about 1032 to 1: a member declaring more is not what it says.
_DEFLATE_RATIO = 1032
#: The zip directory of MAX_INPUTS members, with room to spare: a larger one is refused unparsed.
_MAX_NPZ_DIRECTORY = 2**20
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
    return check_sizes(dims, name, dims)


def _records(found: list[tuple[str | None, tuple[int, ...], torch.dtype]]) -> tuple[InputTensor, ...]:
    from resnet_trace.records import InputTensor

    return tuple(InputTensor(n, shape, str(dt).removeprefix("torch.")) for n, shape, dt in found)


def _pt_inputs(path: Path, check: Check | None) -> list[tuple[str | None, torch.Tensor]]:
    name = described(path, "--input-file")

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
    name = described(path, "--input-file")
    numpy_module()
    with open_unchanged(path, "--input-file") as (fh, st):
        if st.st_size == 0:
            raise UsageError(f"{name} is empty, not a .npy file")
        shape, fortran, dtype, offset = npy_header(fh, name)
        kept = kept_dtype(dtype, name)
        dims = _dims(shape, name)
        nbytes = math.prod(dims) * dtype.itemsize
        left = st.st_size - offset
        if nbytes > left:
            raise UsageError(
                f"{name} was refused: its header declares {dims_text(dims)} {dtype} ({human(nbytes)}), "
                f"but the file holds {human(max(left, 0))} of data"
            )
        if check is not None:
            check(_records([(None, dims, kept)]))
        check_read(
            nbytes * (2 if copies_to_convert(dtype, fortran, dims) else 1),
            f"{name} ({dims_text(dims)} {dtype})",
        )
        arr = npy_data(fh, name, dims, fortran, dtype)
    return [(None, native(arr))]


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
    name = described(path, "--input-file")
    numpy_module()
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
                shape, fortran, dtype, offset = npy_header(stream, label)
            except _ZIP_ERRORS as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise UsageError(f"{label} cannot be read: {first[:200]}") from None
            kept = kept_dtype(dtype, label)
            dims = _dims(shape, label)
            nbytes = math.prod(dims) * dtype.itemsize
            if nbytes != info.file_size - offset:  # a header that lies about its member
                raise UsageError(
                    f"{label} was refused: its header declares {dims_text(dims)} {dtype} ({human(nbytes)}), "
                    f"but the member holds {human(max(info.file_size - offset, 0))} of data"
                )
            need += nbytes * (2 if copies_to_convert(dtype, fortran, dims) else 1)
            found.append((key, dims, kept))
            opened.append((key, label, stream, dims, fortran, dtype))
        if check is not None:
            check(_records(found))
        check_read(need, f"{name} ({len(found)} arrays)")
        return [(key, native(npy_data(s, label, dims, f, dt))) for key, label, s, dims, f, dt in opened]


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
    name = described(path, "--input-file")
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
