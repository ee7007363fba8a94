"""The hook recorder: module calls become rows; operations (from :mod:`resnet_trace.ops`) fill them.

``hook_session(...)`` (and ``hooked(...)``, one forward of it) is the one place hooks live. Its
``finally`` removes every handle and restores every submodule's own ``training`` flag, whether
the forwards succeeded or raised.

What becomes a row (forward order, one row per call):

* a **block**: a call of one of the target's block classes;
* a **stage**: the innermost non-block call around a block (the seed's ``layer_2``);
* a **frame** row: a call outside every block that holds no block (the seed's ``layer_1``,
  ``avgpool``, ``fc_layer``); work done directly in a module's own ``forward`` outside
  every block (a functional ``matmul`` in the model's ``forward``) becomes a frame row
  named after that module, so that row MACs always add up to the total;
* a **layer** row: a leaf-module call inside a block or frame row, or the work done
  directly in a non-leaf module's own ``forward`` there (attention's products).

Skip paths come from the dataflow: every tensor carries, for each open *fork* (a block's
input, or any tensor computed inside it), the work done on its way from that fork. An add
whose two operands descend from one fork is a residual add: the nearest such fork is where
the two paths split, and the side that does less work from there is the skip.
The recorder keeps shapes, counts and weak references, never tensors.
"""

from __future__ import annotations

import contextlib
import math
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from resnet_trace.ops import ADDS, CpuAttentionOnMeta, OpMode, tensors_in
from resnet_trace.records import Activation, Depth, Kind, Shape

POOL_TYPES = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool2d,
)
IDENTITY = "identity"


class HookFailure(Exception):
    """A bug inside our own hooks; never blamed on the model."""


def first_shape(value: object) -> Shape | None:
    """Shape of the first tensor in a value (a tensor, a nest of them, a ``ModelOutput``)."""
    for t in tensors_in(value):
        return tuple(int(d) for d in t.shape)
    return None


def nbytes(value: object) -> int:
    return sum(t.numel() * t.element_size() for t in tensors_in(value))


#: Values per pass through the scratch buffer: 1 MiB of float32, which stays in a core's cache
#: between the write and the read, and is allocated (and page-faulted) once, not per row. It also
#: keeps counting with a float dot product exact: every partial sum is an integer below 2**24.
_CHUNK = 2**18
#: Values per row when summing squares as row norms: each row's float32 error stays near 1e-7.
_ROW = 1024
#: Above this mean**2 / variance, the one-pass variance loses digits: centre the values first.
_CANCELLATION = 16.0
#: Largest magnitudes whose squares, 1024 at a time, stay normal float32 numbers: outside (or for a
#: zero tensor, NaN or infinity), std is taken in float64 instead.
_SQUARES_FIT = (1e-15, 1e17)


def _sum_of_squares(flat: torch.Tensor) -> float:
    """Sum of squares in float64, from the float32 norms of rows of 1024 values (then a float64 dot).

    As close as a cascade sum (relative error about 1e-7 on millions of values, where a single
    BLAS dot drifts by 1e-4), in one read of the values and no write.
    """
    n = flat.numel()
    rows = n // _ROW
    total = 0.0
    if rows:
        norms = torch.linalg.vector_norm(flat[: rows * _ROW].view(rows, _ROW), dim=1).double()
        total += float(torch.dot(norms, norms))
    if rows * _ROW < n:
        tail = flat[rows * _ROW :].double()
        total += float(torch.dot(tail, tail))
    return total


class ActivationStats:
    """Mean, std (unbiased, as ``Tensor.std``), min, max and fraction of zeros of a first output tensor.

    Vectorised reductions, reading the values four times and writing once, the write through a
    1 MiB scratch buffer reused chunk by chunk (:data:`_CHUNK`):

    - ``sum`` and ``aminmax``;
    - the sum of squares as row norms (:func:`_sum_of_squares`), giving the variance in one pass
      as (sum of squares - n mean**2) / (n - 1), in float64. Where that would lose digits (mean**2
      over 16 times the variance) the values are centred first, a two-pass variance. Either way
      std agrees with ``Tensor.std`` to about 1e-6. Values whose squares would leave float32's
      normal range (or a NaN or an infinity) take ``Tensor.std`` in float64 instead;
    - ``sign(x)``, whose ``dot`` with itself counts the non-zeros. That count is exact: each chunk's
      partial sums stay below 2**24, where float arithmetic on integers is exact. It is skipped
      when min > 0 or max < 0, and a tensor with a NaN (``torch.sign`` maps NaN to 0) is counted
      with ``eq`` instead. ``eq`` and a sum, used before, took several times longer than all the
      other passes together on the CPU.

    The last result is kept for the tensor it came from (held weakly) until the next operation of
    the model (the recorder calls :meth:`forget`), so a stage whose output is its last block's
    output, with nothing run in between, is not measured twice. (A version counter would miss a
    write through ``.data`` and does not exist on inference tensors.)
    """

    def __init__(self) -> None:
        self._scratch: torch.Tensor | None = None
        self._last: tuple[weakref.ref[torch.Tensor], Activation] | None = None

    def _chunks(self, flat: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``flat`` in chunks of :data:`_CHUNK` values, each with a scratch slice of its size."""
        s = self._scratch
        if s is None or s.dtype != flat.dtype or s.device != flat.device:
            s = self._scratch = torch.empty(_CHUNK, dtype=flat.dtype, device=flat.device)
        for chunk in flat.split(_CHUNK):
            yield chunk, s[: chunk.numel()]

    def __call__(self, out: object) -> Activation | None:
        t = next(tensors_in(out), None)
        if t is None or t.is_meta or t.numel() == 0 or t.is_complex():
            return None
        last = self._last
        if last is not None and last[0]() is t:
            return last[1]
        with torch.no_grad():
            a = self._measure(t.detach())
        self._last = (weakref.ref(t), a)
        return a

    def forget(self) -> None:
        """An operation ran: the last result may no longer describe its tensor."""
        self._last = None

    def _measure(self, t: torch.Tensor) -> Activation:
        if t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        flat = t.reshape(-1)
        n = flat.numel()
        low, high = torch.aminmax(flat)
        total, low_f, high_f = torch.stack([flat.sum(), low, high]).tolist()
        mean = total / n
        std = 0.0
        scale = max(abs(low_f), abs(high_f))
        if n > 1 and not _SQUARES_FIT[0] <= scale <= _SQUARES_FIT[1]:
            # squares would underflow or overflow float32 (or there is a NaN or an infinity)
            std = float(flat.double().std())
        elif n > 1:
            var = (_sum_of_squares(flat) - n * mean * mean) / (n - 1)
            if not (var > 0 and mean * mean <= _CANCELLATION * var):
                squares = 0.0
                for chunk, buf in self._chunks(flat):
                    squares += _sum_of_squares(torch.sub(chunk, mean, out=buf))
                var = squares / (n - 1)
            std = math.sqrt(var)
        if mean != mean:  # torch.sign(NaN) is 0, which would count a NaN as a zero
            zeros = int(flat.eq(0).sum(dtype=torch.int64).item())
        elif low_f > 0 or high_f < 0:
            zeros = 0
        else:  # the sign's squares count the non-zeros, exactly
            counts = [torch.dot(buf, buf) for buf in (torch.sign(c, out=b) for c, b in self._chunks(flat))]
            zeros = n - sum(int(c) for c in torch.stack(counts).tolist())
        return Activation(mean=mean, std=std, min=low_f, max=high_f, zero_fraction=zeros / n)


@dataclass
class OpenRow:
    """A row being recorded (mutable, private to the tracer); frozen into a ``Row`` at the end."""

    index: int
    name: str
    kind: Kind
    depth: Depth
    module: nn.Module | None
    parent: OpenRow | None
    in_shape: Shape | None
    own: bool = False  # work done directly in the module's own forward, not a call of it
    stage: OpenRow | None = None
    down: bool | None = None
    skips: list[str] | None = None
    macs: int = 0
    out_shape: Shape | None = None
    out_bytes: int | None = None
    activation: Activation | None = None
    saved: dict[int, int] | None = None  # storage key -> bytes
    t0: float = 0.0
    overhead0: float = 0.0
    time_s: float | None = None
    events: tuple | None = None  # CUDA start/end events when timing on a GPU
    done: bool = False

    def seconds(self) -> float | None:
        """Wall time of this call without our hooks' own time (GPU time from CUDA events)."""
        if self.events is not None:
            return self.events[0].elapsed_time(self.events[1]) / 1000.0
        return self.time_s


@dataclass
class _Call:
    """One open module call."""

    module: nn.Module
    name: str
    row: OpenRow | None  # the row this call opened, if any
    leaf: bool
    own_row: OpenRow | None = None  # the row collecting this call's own operations
    block: _BlockCtx | None = None
    own_saved: dict[int, int] | None = None  # --train: saved while this call was innermost


@dataclass
class _BlockCtx:
    """An open block call (or, when finding blocks, any non-leaf call): its forks."""

    call: _Call
    depth: int  # index of the call on the stack
    forks: set[int] = field(default_factory=set)
    found: list[str] = field(default_factory=list)  # skip of each residual add, in order


# work on a path from a fork: (MACs, operations, child modules passed)
_Path = tuple[int, int, frozenset[str]]


@dataclass
class Recorder:
    """State shared by the hooks and the operation mode of one forward."""

    model: nn.Module
    block_types: tuple[type[nn.Module], ...]
    stats: bool = False  # activation statistics of stage, block and frame rows
    leaf_stats: bool = False  # ... and of every leaf call (run --depth layer)
    events: bool = False  # time rows with CUDA events
    find_blocks: bool = False  # every non-leaf call owns forks: which modules add onto their input
    train: bool = False  # record saved activations (saved_tensors_hooks)
    names: dict[int, list[str]] = field(default_factory=dict)
    structural: set[int] = field(default_factory=set)  # modules holding a block
    stack: list[_Call] = field(default_factory=list)
    rows: list[OpenRow] = field(default_factory=list)
    ran: set[int] = field(default_factory=set)
    read: set[int] = field(default_factory=set)  # ids of parameters some operation read
    params: dict[int, nn.Parameter] = field(default_factory=dict)
    param_storages: set[int] = field(default_factory=set)
    macs: int = 0
    measure: ActivationStats = field(default_factory=ActivationStats)
    overhead: float = 0.0  # seconds spent inside our hooks, subtracted from row times
    output: Any = None
    failure: tuple[str, Shape | None, nn.Module | None] | None = None
    first_block_seen: bool = False
    residual_adders: dict[int, nn.Module] = field(default_factory=dict)  # find_blocks: id -> module
    saved_all: dict[int, int] = field(default_factory=dict)
    _lineage: dict[int, tuple[weakref.ref, dict[int, _Path]]] = field(default_factory=dict)
    _fork_owner: dict[int, _BlockCtx] = field(default_factory=dict)
    _next_fork: int = 0
    _blocks: list[_BlockCtx] = field(default_factory=list)

    def __post_init__(self) -> None:
        # ``names``, ``structural`` and ``params`` come from the HookSession that makes every
        # recorder: it reads them once for all its forwards.
        if self.train:  # only saved tensors are compared with the parameters' storage
            self.param_storages = {_storage_key(p) for p in self.params.values()}

    # -- naming -------------------------------------------------------------
    def _name(self, module: nn.Module) -> str:
        """The alias of ``module`` under the innermost running module (resolves shared modules)."""
        aliases = self.names.get(id(module), [""])
        if len(aliases) == 1 or not self.stack:
            return aliases[0]
        parent = self.stack[-1].name
        prefix = parent + "." if parent else ""
        best = [a for a in aliases if a.startswith(prefix) and "." not in a[len(prefix) :]]
        return best[0] if best else aliases[0]

    def _open_row(self) -> OpenRow | None:
        for call in reversed(self.stack):
            if call.row is not None:
                return call.row
        return None

    def _open_rows(self) -> Iterator[OpenRow]:
        for call in self.stack:
            if call.row is not None:
                yield call.row

    def _frame_kind(self, module: nn.Module | None) -> Kind:
        if isinstance(module, POOL_TYPES):
            return Kind.POOL
        if isinstance(module, nn.Linear):
            return Kind.FC
        return Kind.MODULE if self.first_block_seen else Kind.STEM

    def _new_row(self, **kw: Any) -> OpenRow:
        row = OpenRow(index=len(self.rows), **kw)
        self.rows.append(row)
        return row

    # -- hooks ----------------------------------------------------------------
    def pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        t_in = time.perf_counter()
        try:
            row = self._pre(module, args, kwargs)
        except Exception as exc:  # pragma: no cover - a bug of ours
            raise HookFailure(f"{type(exc).__name__}: {exc}") from exc
        if self.events and row is not None:
            row.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            row.events[0].record()
        t_out = time.perf_counter()
        self.overhead += t_out - t_in
        if row is not None:
            row.t0, row.overhead0 = t_out, self.overhead

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> OpenRow | None:
        name = self._name(module)
        self.ran.add(id(module))
        leaf = next(iter(module.children()), None) is None
        in_shape = first_shape(args) or first_shape(kwargs)
        open_row = self._open_row()
        row: OpenRow | None = None
        is_block = isinstance(module, self.block_types) if self.block_types else False
        if is_block:
            self.first_block_seen = True
            stage = next((c.row for c in reversed(self.stack) if c.row and c.row.kind is Kind.STAGE), None)
            down = getattr(module, "down", None)
            row = self._new_row(
                name=name,
                kind=Kind.BLOCK,
                depth=Depth.BLOCK,
                module=module,
                parent=open_row,
                in_shape=in_shape,
                stage=stage,
                down=bool(down) if isinstance(down, bool) else None,
                skips=[],
            )
        elif id(module) in self.structural and self.stack and not self._in_block():
            row = self._new_row(
                name=name,
                kind=Kind.STAGE,
                depth=Depth.STAGE,
                module=module,
                parent=open_row,
                in_shape=in_shape,
            )
        elif self.stack and (open_row is None or open_row.kind is Kind.STAGE) and not self._in_block():
            row = self._new_row(
                name=name,
                kind=self._frame_kind(module),
                depth=Depth.STAGE if open_row is None else Depth.BLOCK,
                module=module,
                parent=open_row,
                in_shape=in_shape,
            )
        elif leaf and open_row is not None and open_row.kind is not Kind.STAGE:
            row = self._new_row(
                name=name,
                kind=Kind.LAYER,
                depth=Depth.LAYER,
                module=module,
                parent=open_row,
                in_shape=in_shape,
            )
        call = _Call(module=module, name=name, row=row, leaf=leaf)
        self.stack.append(call)
        if is_block or (self.find_blocks and not leaf and len(self.stack) > 1):
            ctx = _BlockCtx(call=call, depth=len(self.stack) - 1)
            call.block = ctx
            self._blocks.append(ctx)
            for t in tensors_in((args, kwargs)):
                self._set_lineage(t, {**self._get_lineage(t), self._fork(ctx): (0, 0, frozenset())})
        return row

    def _in_block(self) -> bool:
        return any(c.row is not None and c.row.kind is Kind.BLOCK for c in self.stack)

    def post(self, module: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
        t_in = time.perf_counter()
        try:
            self._post(module, out, t_in)
        except Exception as exc:  # pragma: no cover - a bug of ours
            raise HookFailure(f"{type(exc).__name__}: {exc}") from exc
        self.overhead += time.perf_counter() - t_in

    def _post(self, module: nn.Module, out: object, t_in: float) -> None:
        call = self.stack.pop()
        row = call.row
        if row is not None:
            row.out_shape = first_shape(out)
            row.time_s = (t_in - row.t0) - (self.overhead - row.overhead0)
            if row.events is not None:
                row.events[1].record()
            row.done = True
            if self.train:
                row.out_bytes = nbytes(out)
            if self.stats and (row.depth is not Depth.LAYER or self.leaf_stats):
                with _no_modes():  # our own arithmetic is not the model's: unobserved, at full speed
                    row.activation = self.measure(out)
        if call.own_row is not None and call.own_saved:
            call.own_row.saved = {**(call.own_row.saved or {}), **call.own_saved}
        if call.block is not None:
            ctx = self._blocks.pop()
            for f in ctx.forks:
                self._fork_owner.pop(f, None)
            if row is not None and row.kind is Kind.BLOCK:
                row.skips = list(ctx.found)
            elif ctx.found and self.find_blocks:
                self.residual_adders[id(module)] = module
        if not self.stack:
            self.output = out

    def failing_module(self) -> tuple[str, Shape | None, nn.Module | None]:
        """Innermost module that had started and not finished: where the forward stopped."""
        if not self.stack:
            return "", None, None
        call = self.stack[-1]
        return call.name, call.row.in_shape if call.row else None, call.module

    # -- operations -------------------------------------------------------------
    def on_op(self, func: Any, args: tuple, kwargs: dict, out: Any, macs: int) -> None:
        self.measure.forget()
        try:
            self._on_op(func, args, kwargs, out, macs)
        except Exception as exc:  # pragma: no cover - a bug of ours
            raise HookFailure(f"{type(exc).__name__}: {exc}") from exc

    def _on_op(self, func: Any, args: tuple, kwargs: dict, out: Any, macs: int) -> None:
        reads = False
        inputs = list(tensors_in(args)) + list(tensors_in(kwargs))
        for t in inputs:
            # a parameter the model made during this forward is not in ``params`` (read before it)
            if id(t) in self.params or isinstance(t, nn.Parameter):
                self.read.add(id(t))
                reads = True
        own = self._own_row(out, inputs) if (macs or reads) else None
        if macs:
            self.macs += macs
            for call in self.stack:
                if call.row is not None:
                    call.row.macs += macs
            if own is not None:
                own.macs += macs
        if self._blocks:
            self._flow(func, args, inputs, out, macs)

    def _own_row(self, out: Any, inputs: list[torch.Tensor]) -> OpenRow | None:
        """The row for work done directly in the innermost call's own forward, outside its children.

        None when that call is a leaf with a row of its own. Inside a block or frame row this is
        a layer row of the call (one per call); outside them a frame row, one per run of
        consecutive operations.
        """
        if not self.stack:
            return None
        call = self.stack[-1]
        if call.leaf and call.row is not None:
            return None
        open_row = self._open_row()
        inside = open_row is not None and open_row.kind is not Kind.STAGE
        if call.own_row is None or (not inside and self.rows[-1] is not call.own_row):
            call.own_row = self._new_row(
                name=call.name or type(call.module).__name__,
                kind=Kind.LAYER if inside else (Kind.MODULE if self.first_block_seen else Kind.STEM),
                depth=Depth.LAYER if inside else (Depth.STAGE if open_row is None else Depth.BLOCK),
                module=call.module,
                parent=open_row,
                in_shape=first_shape(inputs),
                own=True,
                done=True,
            )
        call.own_row.out_shape = first_shape(out)
        return call.own_row

    # -- dataflow ---------------------------------------------------------------
    def _fork(self, ctx: _BlockCtx) -> int:
        self._next_fork += 1
        ctx.forks.add(self._next_fork)
        self._fork_owner[self._next_fork] = ctx
        return self._next_fork

    def _get_lineage(self, t: torch.Tensor) -> dict[int, _Path]:
        entry = self._lineage.get(id(t))
        if entry is None or entry[0]() is not t:
            return {}
        return {f: p for f, p in entry[1].items() if f in self._fork_owner}

    def _set_lineage(self, t: torch.Tensor, lineage: dict[int, _Path]) -> None:
        if lineage:
            self._lineage[id(t)] = (weakref.ref(t), lineage)
        else:
            self._lineage.pop(id(t), None)

    def _child(self, ctx: _BlockCtx) -> str | None:
        """The block's child module running now (relative to the block), if any."""
        if len(self.stack) <= ctx.depth + 1:
            return None
        parent, child = self.stack[ctx.depth].name, self.stack[ctx.depth + 1].name
        return child[len(parent) + 1 :] if parent and child.startswith(parent + ".") else child

    def _flow(self, func: Any, args: tuple, inputs: list[torch.Tensor], out: Any, macs: int) -> None:
        lineages = [self._get_lineage(t) for t in inputs]
        merged: dict[int, _Path] = {}
        for lin in lineages:
            for f, (m, n, mods) in lin.items():
                old = merged.get(f)
                merged[f] = (
                    (max(m, old[0]), max(n, old[1]), mods | old[2]) if old is not None else (m, n, mods)
                )
        children = {id(ctx): self._child(ctx) for ctx in self._blocks}
        result: dict[int, _Path] = {}
        for f, (m, n, mods) in merged.items():
            child = children.get(id(self._fork_owner[f]))
            result[f] = (m + macs, n + 1, mods | {child} if child else mods)
        if func in ADDS and len(args) >= 2 and all(isinstance(a, torch.Tensor) for a in args[:2]):
            a, b = args[0], args[1]
            self._residual(a, b, self._get_lineage(a), self._get_lineage(b))
        # Every result is a fork of its own: the fork of an add is then its operands' nearest
        # common ancestor (the block's input, an earlier residual sum, a norm's output...).
        result[self._fork(self._blocks[-1])] = (0, 0, frozenset())
        for t in tensors_in(out):
            self._set_lineage(t, result)

    def _residual(
        self, a: torch.Tensor, b: torch.Tensor, lin_a: dict[int, _Path], lin_b: dict[int, _Path]
    ) -> _BlockCtx | None:
        """If ``a + b`` joins two paths from one fork, record its skip side and return the block."""
        call = self.stack[-1] if self.stack else None
        if call is None or (call.leaf and call.block is None) or tuple(a.shape) != tuple(b.shape):
            return None
        common = set(lin_a) & set(lin_b)
        if not common:
            return None
        fork = max(common)  # the most recent fork both descend from
        ctx = self._fork_owner[fork]
        pa, pb = lin_a[fork], lin_b[fork]
        skip = pa if (pa[0], pa[1]) < (pb[0], pb[1]) else pb
        ctx.found.append("+".join(sorted(skip[2])) if skip[2] else IDENTITY)
        return ctx

    # -- saved activations (--train) ------------------------------------------------
    def pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in self.param_storages:
            size = t.untyped_storage().nbytes()
            self.saved_all[key] = size
            for row in self._open_rows():
                if row.saved is None:
                    row.saved = {}
                row.saved[key] = size
            call = self.stack[-1] if self.stack else None
            if call is not None and not (call.leaf and call.row is not None):
                if call.own_saved is None:
                    call.own_saved = {}
                call.own_saved[key] = size  # the call's own operations (an own-row, if it gets one)
        return t


_STRUCTURE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[int, list[str]], set[int]]] = (
    weakref.WeakKeyDictionary()
)


def _structure(
    model: nn.Module,
    pairs: list[tuple[str, nn.Module]],
    tree: tuple[tuple[str, int], ...],
    block_types: tuple[type[nn.Module], ...],
) -> tuple[dict[int, list[str]], set[int]]:
    """Every module's names (a shared module has several) and the modules holding a block.

    ``pairs``: ``model.named_modules(remove_duplicate=False)``, ``tree`` their names and ids (the
    caller has both). Computed once per model and block classes (each ``run --repeat`` pass and
    ``--train`` step opens a session of its own); recomputed when the module tree changed.
    """
    key = (block_types, tree)
    cached = _STRUCTURE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    names: dict[int, list[str]] = {}
    by_name: dict[str, nn.Module] = {}
    for name, module in pairs:
        names.setdefault(id(module), []).append(name)
        by_name[name] = module
    structural: set[int] = set()
    for name, module in pairs:
        if block_types and isinstance(module, block_types):
            parts = name.split(".") if name else []
            for i in range(len(parts)):
                holder = by_name.get(".".join(parts[:i]))
                if holder is not None and holder is not module:
                    structural.add(id(holder))
    _STRUCTURE[model] = (key, names, structural)
    return names, structural


def _storage_key(t: torch.Tensor) -> int:
    storage = t.untyped_storage()
    return int(storage._cdata) if t.is_meta else int(storage.data_ptr()) or int(storage._cdata)


@contextlib.contextmanager
def keep_training_flags(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's own ``training`` flag, exactly, on the way out."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for m, flag in flags:
            if m.training is not flag:  # Module.__setattr__ is slow: set only what changed
                m.training = flag


class HookSession:
    """The hooks of one :func:`hook_session`, for one forward after another.

    Each :meth:`recording` starts a fresh :class:`Recorder` and, for that forward only, the
    operation mode and the saved-tensor hooks (work between forwards, such as making the next
    input or freezing rows, is not the model's). Tracing one model at many input sizes then
    registers its hooks and reads its structure once, not once per size; a forward that changes
    the model (a lazy module, a submodule built in ``forward``) has them read again.
    """

    def __init__(
        self,
        model: nn.Module,
        block_types: tuple[type[nn.Module], ...],
        *,
        only: set[int] | None,
        ops: bool,
        cpu_attention: bool,
        options: dict[str, bool],
    ) -> None:
        self.model = model
        self.block_types = block_types
        self.only = only
        self.ops = ops
        self.cpu_attention = cpu_attention
        self.options = options  # the recorders' flags: stats, events, leaf_stats, find_blocks, train
        self.recorder: Recorder | None = None
        self._handles: list[Any] = []
        self._key: tuple | None = None
        self._names: dict[int, list[str]] = {}
        self._structural: set[int] = set()
        self._params: dict[int, nn.Parameter] = {}

    def _hook(self) -> None:
        """Register the hooks and read names and parameters, unless the model is as when last read."""
        pairs = list(self.model.named_modules(remove_duplicate=False))
        params = {id(p): p for p in self.model.parameters()}
        key = (tuple((name, id(m)) for name, m in pairs), tuple(params))
        if key == self._key:
            return
        self.remove()
        self._key, self._params = key, params
        self._names, self._structural = _structure(self.model, pairs, key[0], self.block_types)
        only = self.only
        for module in self.model.modules():
            if only is None or id(module) in only or module is self.model:
                self._handles.append(module.register_forward_pre_hook(self.pre, with_kwargs=True))
                self._handles.append(module.register_forward_hook(self.post, with_kwargs=True))

    def remove(self) -> None:
        """Remove every hook this session registered."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._key = None

    @contextlib.contextmanager
    def recording(self) -> Iterator[Recorder]:
        """A fresh recorder, with the operation modes on, for one forward."""
        self._hook()
        o = self.options
        recorder = Recorder(
            self.model,
            self.block_types,
            stats=o["stats"],
            events=o["events"],
            leaf_stats=o["leaf_stats"],
            find_blocks=o["find_blocks"],
            train=o["train"],
            names=self._names,
            structural=self._structural,
            params=self._params,
        )
        with contextlib.ExitStack() as stack:
            if self.ops:
                stack.enter_context(_mha_fastpath_off())
                first = next(self.model.parameters(), None)
                on_meta = first is None or first.is_meta  # a real device runs its own kernel already
                if on_meta and self.cpu_attention:
                    stack.enter_context(CpuAttentionOnMeta())
                stack.enter_context(OpMode(recorder, shortcuts=True))
            if recorder.train:
                stack.enter_context(torch.autograd.graph.saved_tensors_hooks(recorder.pack, _unpack))
            outer, self.recorder = self.recorder, recorder
            try:
                yield recorder
            finally:
                self.recorder = outer

    def pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.recorder is not None:  # a module called outside a recording is not traced
            self.recorder.pre(module, args, kwargs)

    def post(self, module: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
        if self.recorder is not None:
            self.recorder.post(module, args, kwargs, out)


@contextlib.contextmanager
def hook_session(
    model: nn.Module,
    block_types: tuple[type[nn.Module], ...],
    *,
    stats: bool = False,
    events: bool = False,
    only: set[int] | None = None,
    leaf_stats: bool = False,
    ops: bool = True,
    find_blocks: bool = False,
    train: bool = False,
    cpu_attention: bool = True,
) -> Iterator[HookSession]:
    """Hook the modules of ``model`` (or just those in ``only``) for as many forwards as the caller
    runs, each inside :meth:`HookSession.recording`, which with ``ops`` also watches its operations.

    On a ``meta`` model, ``cpu_attention`` routes attention to the CPU's kernel
    (:class:`~resnet_trace.ops.CpuAttentionOnMeta`). Always removes the hooks and restores every
    ``training`` flag.
    """
    options = dict(stats=stats, events=events, leaf_stats=leaf_stats, find_blocks=find_blocks, train=train)
    session = HookSession(
        model, block_types, only=only, ops=ops, cpu_attention=cpu_attention, options=options
    )
    with keep_training_flags(model):
        try:
            yield session
        finally:
            session.remove()


@contextlib.contextmanager
def hooked(model: nn.Module, block_types: tuple[type[nn.Module], ...], **options: Any) -> Iterator[Recorder]:
    """One forward's :func:`hook_session` (same options): its recorder, operation modes on."""
    with hook_session(model, block_types, **options) as session, session.recording() as recorder:
        yield recorder


def _no_modes() -> contextlib.AbstractContextManager[object]:
    from torch.utils._python_dispatch import _disable_current_modes

    return _disable_current_modes()


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """``nn.MultiheadAttention``'s fused CPU fast path hides its products in one kernel: take the plain path."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    was = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was)


def row_keys(rows: list[OpenRow]) -> list[tuple[str, int]]:
    """(name, occurrence) of each row: the same key in every pass of the same forward."""
    seen: dict[tuple[str, bool], int] = {}
    keys = []
    for r in rows:
        seen[(r.name, r.own)] = seen.get((r.name, r.own), 0) + 1
        keys.append((r.name + ("#own" if r.own else ""), seen[(r.name, r.own)]))
    return keys
