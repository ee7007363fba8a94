"""A run's full output tensors, written to a file: ``.npy`` for one tensor, ``.pt`` for a nest.

``save_outputs(path, outputs)`` is what ``run --save-output FILE`` calls; a Python user calls it
with whatever a model returned. Both formats are written through the one atomic writer
(:func:`resnet_trace.atomic.write_atomically`), so a failure or a signal leaves the file as it
was and no temporary file behind.

- ``.npy``: one tensor (or a nest holding exactly one), through numpy's own ``.npy`` writer, read
  back with ``numpy.load``. numpy is not a dependency: without it, one line says so. A dtype numpy
  has no type for (``bfloat16``, the ``float8`` types) is refused with a pointer to ``.pt``.
- ``.pt``: a tensor or a nest of dicts, lists and tuples, through ``torch.save``, read back with
  ``torch.load(path, weights_only=True)``. Containers become plain ones (a ``dict`` subclass such
  as a transformers ``ModelOutput`` a ``dict``, a ``namedtuple`` a ``dict`` of its fields, a
  ``deque`` a ``list``); leaves are tensors, ``None``, numbers, strings, bytes, ``torch.Size``,
  dtypes and devices; a numpy array becomes a tensor. Anything else is refused, naming where it is.

Tensors are written as their values, on the CPU: a view (a slice, a transpose, an ``expand()``)
is written as the tensor it looks like, never as the storage behind it. ``.npy`` streams a view in
chunks, so a broadcast view costs memory only for its storage; ``.pt`` copies such a view into a
tensor of its own first, and that copy is checked against the memory guard's limit
(:func:`resnet_trace.memory.available_bytes`, ``RESNET_TRACE_MEMORY_LIMIT``) before it is made.
Either way the file holds every logical element, so its size is checked against the free space
of the target's folder first.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from resnet_trace.atomic import writable_target, write_atomically
from resnet_trace.errors import UsageError
from resnet_trace.memory import SHARE, available_bytes, physical_bytes
from resnet_trace.units import human

SUFFIXES = (".npy", ".pt")
#: Containers nested deeper than this are refused (``torch.save`` pickles them recursively).
MAX_DEPTH = 100
_LEAVES = (type(None), bool, int, float, complex, str, bytes)


@dataclass(frozen=True, slots=True)
class SavedOutputs:
    """What :func:`save_outputs` wrote: the file, its format, how many tensors and their bytes."""

    path: str
    suffix: str
    tensors: int
    nbytes: int


def save_outputs(path: str | os.PathLike[str], outputs: Any, *, label: str | None = None) -> SavedOutputs:
    """Write ``outputs`` (a tensor, or a nest of them) to ``path`` (``.npy`` or ``.pt``), atomically.

    ``label`` is how error lines name the file (the CLI passes ``--save-output 'FILE'``).
    Refusals are :class:`~resnet_trace.errors.UsageError` (exit 2), one line each.
    """
    path = Path(path)
    label = label if label is not None else repr(str(path))
    suffix, real, st = check_save_path(path, label)  # refused before any copy is made
    plain, tensors = _plain(outputs)
    for where, t in tensors:
        _check_has_values(where, t)
    one = _one_tensor(tensors, label) if suffix == ".npy" else None  # what numpy lacks: said first
    nbytes = sum(_file_bytes(t) for _, t in tensors)
    if st is None or stat.S_ISREG(st.st_mode):
        _check_disk(real, nbytes, label)  # before any copy: a view or a GPU tensor is copied to write it
    if one is not None:
        _write_npy(path, _as_array(one), label)
    else:
        _write_pt(path, plain, tensors, label)
    return SavedOutputs(path=str(path), suffix=suffix, tensors=len(tensors), nbytes=nbytes)


def check_save_path(path: str | os.PathLike[str], label: str) -> tuple[str, Path, os.stat_result | None]:
    """Refuse a file :func:`save_outputs` could not write (its suffix, its folder, a protected
    file) before any work: its suffix, the real target and that target's status."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(
            f"{label}: outputs are saved as .npy (one tensor) or .pt (a nest of tensors); "
            f"name a file ending in one of {', '.join(SUFFIXES)}"
        )
    real, st = writable_target(path, label)
    return suffix, real, st


# -- the nest, as plain containers ----------------------------------------------------------------
def _plain(outputs: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """``outputs`` as plain dicts, lists and tuples, and its tensors in order with where they are."""
    import torch

    tensors: list[tuple[str, Any]] = []
    seen: dict[int, Any] = {}  # a tensor met twice is one tensor (saved once, shared)
    inside: set[int] = set()  # the containers on the path from the top: a cycle is refused

    def walk(value: Any, where: str, depth: int) -> Any:
        if isinstance(value, torch.Tensor):
            if id(value) not in seen:
                seen[id(value)] = value
                tensors.append((where, value))
            return value
        if type(value).__module__ == "numpy":  # first: np.float64 and np.str_ are also float and str
            converted = _from_numpy(value, where)
            if converted is not value:
                return walk(converted, where, depth)
        if type(value) in _LEAVES or isinstance(value, (torch.Size, torch.dtype, torch.device)):
            return value
        for leaf in _LEAVES[2:]:  # a subclass (an IntEnum, a str of its own) pickles as itself: its base
            if isinstance(value, leaf):
                return leaf(value)  # type: ignore[arg-type]  # value is a leaf's subclass
        if depth >= MAX_DEPTH:
            raise UsageError(
                f"the output is nested deeper than {MAX_DEPTH} containers (at {where}); it was not saved"
            )
        if id(value) in inside:
            raise UsageError(f"the output holds itself ({where} is a container around it); it was not saved")
        inside.add(id(value))
        try:
            if isinstance(value, Mapping):
                out: Any = {}
                for key, item in value.items():
                    if not isinstance(key, _LEAVES):
                        raise UsageError(
                            f"{where} has a key of type {type(key).__name__}, which a .pt file read "
                            "with weights_only cannot hold; it was not saved"
                        )
                    out[key] = walk(item, f"{where}[{key!r}]", depth + 1)
                return out
            if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple: its fields by name
                return {f: walk(getattr(value, f), f"{where}.{f}", depth + 1) for f in value._fields}
            if isinstance(value, (tuple, list, deque)):
                items = [walk(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
                return tuple(items) if isinstance(value, tuple) else items
        finally:
            inside.discard(id(value))
        raise UsageError(
            f"{where} is a {type(value).__name__}, which a .pt file read with weights_only cannot hold "
            "(tensors, numbers, strings and None can be saved, in dicts, lists and tuples); it was not saved"
        )

    return walk(outputs, "outputs", 0), tensors


def _from_numpy(value: Any, where: str) -> Any:
    """A numpy array as a tensor, a numpy scalar as its Python number; anything else of numpy's as is."""
    import numpy
    import torch

    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, numpy.ndarray):
        if not value.dtype.isnative:  # big-endian data: torch holds native byte order only
            value = value.astype(value.dtype.newbyteorder("="))
        try:
            return torch.from_numpy(numpy.array(value, copy=not value.flags.writeable))
        except (TypeError, ValueError):
            raise UsageError(
                f"{where} is a numpy array of {value.dtype}, which torch has no type for"
            ) from None
    return value


def _check_has_values(where: str, t: Any) -> None:
    from resnet_trace.ops.fake import is_fake

    if t.device.type == "meta" or is_fake(t):
        raise UsageError(
            f"{where} has a shape but no values (a shape-only trace); run the model to save them"
        )


def _file_bytes(t: Any) -> int:
    """The bytes of ``t``'s values as the file holds them: every logical element of a strided
    tensor (a view is written as its values), a sparse tensor's indices and values alone."""
    import torch

    parts: tuple[Any, ...]
    if t.layout == torch.sparse_coo:
        parts = (t._indices(), t._values())
    elif t.layout in (torch.sparse_csr, torch.sparse_bsr):
        parts = (t.crow_indices(), t.col_indices(), t.values())
    elif t.layout in (torch.sparse_csc, torch.sparse_bsc):
        parts = (t.ccol_indices(), t.row_indices(), t.values())
    else:
        parts = (t,)
    return sum(p.numel() * p.element_size() for p in parts)


def _check_disk(real: Path, nbytes: int, label: str) -> None:
    """Refuse before writing what the folder cannot take (``nbytes``: the values the file holds)."""
    folder = real.parent if str(real.parent) else Path(".")
    try:
        st = os.statvfs(folder)
    except (AttributeError, OSError):  # no statvfs (Windows), or nothing to ask: the write will say
        return
    free = st.f_bavail * st.f_frsize
    if nbytes > free:
        raise UsageError(
            f"{label} would hold {human(nbytes)} of tensor values, over the {human(free)} free in "
            f"{str(folder)!r}; it was not written"
        )


# -- .npy ---------------------------------------------------------------------------------------
def _one_tensor(tensors: list[tuple[str, Any]], label: str) -> Any:
    """The one tensor of a ``.npy`` file, refused when numpy cannot hold it; nothing is copied yet."""
    if len(tensors) != 1:
        where = ", ".join(w for w, _ in tensors[:3]) + (", ..." if len(tensors) > 3 else "")
        held = f"holds {len(tensors)} tensors ({where})" if tensors else "holds no tensor"
        raise UsageError(f"{label}: a .npy file holds one tensor and this output {held}; name a .pt file")
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise UsageError(
            f"{label}: writing .npy needs numpy, which is not installed (pip install numpy); or name a .pt file"
        ) from None
    import torch

    where, t = tensors[0]
    if t.layout != torch.strided or t.is_quantized:
        kind = "quantized" if t.is_quantized else str(t.layout).removeprefix("torch.")
        raise UsageError(f"{label}: {where} is a {kind} tensor; name a .pt file")
    try:
        torch.empty(0, dtype=t.dtype).numpy()  # the dtype asked of numpy on an empty tensor
    except (TypeError, RuntimeError):
        name = str(t.dtype).removeprefix("torch.")
        raise UsageError(
            f"{label}: numpy has no type for {name} ({where}'s dtype); name a .pt file to keep it"
        ) from None
    return t


def _as_array(t: Any) -> Any:
    """``t`` as a numpy array over the same memory where it can be (a CPU view stays one)."""
    import torch

    t = t.detach()
    if type(t) is not torch.Tensor:
        t = t.as_subclass(torch.Tensor)
    return t.cpu().resolve_conj().resolve_neg().numpy()


def _write_npy(path: Path, array: Any, label: str) -> None:
    from numpy.lib import format as npy

    # write_array streams an array that is not contiguous (an expand()'s zero strides) in chunks.
    write_atomically(path, lambda fh: npy.write_array(fh, array, allow_pickle=False), label)


# -- .pt ----------------------------------------------------------------------------------------
def _write_pt(path: Path, plain: Any, tensors: list[tuple[str, Any]], label: str) -> None:
    import torch

    copies = sum(t.numel() * t.element_size() for _, t in tensors if not _compact(t))
    _check_memory(copies, label)
    own = {id(t): _own(t) for _, t in tensors}

    def swap(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return own[id(value)]
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            items = [swap(v) for v in value]
            return tuple(items) if isinstance(value, tuple) else items
        return value

    data = swap(plain)

    def write(fh: IO[bytes]) -> None:
        torch.save(data, fh)

    write_atomically(path, write, label)


def _compact(t: Any) -> bool:
    """A strided CPU tensor whose storage is exactly its own values (``torch.save`` writes storages)."""
    import torch

    if t.layout != torch.strided:
        return True
    return bool(
        t.is_contiguous()
        and t.untyped_storage().nbytes() == t.numel() * t.element_size()
        and t.device.type == "cpu"
    )


def _own(t: Any) -> Any:
    """``t`` detached, on the CPU, a plain tensor holding exactly its own values."""
    import torch

    t = t.detach()
    if type(t) is not torch.Tensor:
        t = t.as_subclass(torch.Tensor)
    if t.layout != torch.strided:
        return t.cpu()
    t = t.resolve_conj().resolve_neg()
    if _compact(t):
        return t
    return t.to("cpu").clone(memory_format=torch.contiguous_format)


def _check_memory(need: int, label: str) -> None:
    """The copies ``.pt`` makes of views, refused when over the guard's share of what is available."""
    if need <= 0:
        return
    avail = available_bytes()
    if avail is None:
        avail = physical_bytes()
    if avail is not None and need > SHARE * avail:
        raise UsageError(
            f"{label}: the output's views (a slice, an expand()) take {human(need)} as tensors of their "
            f"own, over the limit of {human(SHARE * max(avail, 0))} ({SHARE:.0%} of the "
            f"{human(max(avail, 0))} of memory available); name a .npy file, which streams a view"
        )
