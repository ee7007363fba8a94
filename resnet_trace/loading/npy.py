"""numpy's ``.npy`` format without numpy's loader: the header's declared length bounded before it is
read, only plain numbers, the data read into private memory; the torch dtype each numpy dtype keeps."""

from __future__ import annotations

import io
import math
import warnings
import zipfile
import zlib
from typing import IO, Any

import torch

from resnet_trace.errors import UsageError
from resnet_trace.loading.files import dims_text
from resnet_trace.memory import human

_NPY_MAGIC = b"\x93NUMPY"
#: Bytes a .npy header may declare before it is read (numpy then refuses over 10,000 characters).
_NPY_MAX_HEADER = 65_536
_CHUNK = 16 * 2**20
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


def numpy_module() -> Any:
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


def npy_header(fh: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, Any, int]:
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
        raise UsageError(f"{name} declares a negative dimension: {dims_text(shape)}")
    return tuple(shape), bool(fortran), dtype, len(magic) + len(size_bytes) + length


def npy_data(fh: IO[bytes], name: str, shape: tuple[int, ...], fortran: bool, dtype: Any) -> Any:
    """The array's bytes read into private memory (a bytearray, never the file's pages), as stored."""
    np = numpy_module()
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


def kept_dtype(dtype: Any, name: str) -> torch.dtype:
    """The torch dtype a numpy array of ``dtype`` keeps (byte order aside), or a UsageError."""
    kept = _TORCH_OF_NUMPY.get((dtype.kind, dtype.itemsize))
    if kept is None:
        raise UsageError(
            f"{name} holds {dtype.name} data, which torch does not take as an input "
            f"(save it as int64, int32, int16, int8, uint8, bool or float)"
        )
    return kept


def native(arr: Any) -> torch.Tensor:
    """A C-contiguous native-endian tensor of ``arr``'s dtype; bool bytes other than 0 and 1 become True."""
    np = numpy_module()
    if arr.dtype.kind == "b":
        arr = arr.view(np.uint8) != 0
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("=")))


def copies_to_convert(dtype: Any, fortran: bool, shape: tuple[int, ...]) -> bool:
    """Whether making the stored array native and C-ordered copies it (its bytes counted twice)."""
    return not dtype.isnative or dtype.kind == "b" or (fortran and sum(d > 1 for d in shape) > 1)
