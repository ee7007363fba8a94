"""The recorder of one forward: module calls become rows; operations (from :mod:`resnet_trace.ops`) fill them.

A :class:`Recorder` is made by its hook session (:mod:`resnet_trace.recorder.session`), which
feeds it every module call and, through the operation mode, every operation.

What becomes a row (forward order, one row per call):

* a **block**: a call of one of the target's block classes;
* a **stage**: the innermost non-block call around a block (the seed's ``layer_2``);
* a **frame** row: a call outside every block that holds no block (the seed's ``layer_1``,
  ``avgpool``, ``fc_layer``); work done directly in a module's own ``forward`` outside
  every block (a functional ``matmul`` in the model's ``forward``) becomes a frame row
  named after that module, so that row MACs always add up to the total;
* a **layer** row: a leaf-module call inside a block or frame row, or the work done
  directly in a non-leaf module's own ``forward`` there (attention's products).

Skip paths come from the dataflow (:mod:`resnet_trace.recorder.dataflow`): a block's skips are
the adds that join its stream with a branch it computed on it (a residual), and the
concatenations onto its stream (``concat identity``, ``concat down_blocks.1``), in forward order.
The recorder keeps shapes, counts and weak references, never tensors.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from resnet_trace.ops import is_fake, tensors_in
from resnet_trace.recorder.dataflow import Dataflow, Joiner, OpFacts, Scope, op_facts
from resnet_trace.recorder.nesting import NestingError, nesting_problem
from resnet_trace.recorder.stats import ActivationStats
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


class HookFailure(Exception):
    """A bug inside our own hooks; never blamed on the model."""


def _plain(args: tuple, kwargs: dict) -> bool:
    """A call of tensors alone (the common case): nothing to walk."""
    return not kwargs and all(isinstance(a, torch.Tensor) for a in args)


def _shape(tensors: list[Any]) -> Shape | None:
    """Shape of the first of ``tensors`` (tensors, or their stand-ins on a replay)."""
    return tuple(int(d) for d in tensors[0].shape) if tensors else None


def first_shape(value: object) -> Shape | None:
    """Shape of the first tensor in a value (a tensor, a nest of them, a ``ModelOutput``)."""
    for t in tensors_in(value):
        return tuple(int(d) for d in t.shape)
    return None


def nbytes(value: object) -> int:
    return sum(t.numel() * t.element_size() for t in tensors_in(value))


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
    block: Scope | None = None  # the call's dataflow scope (a block's; any non-leaf's when finding blocks)
    own_saved: dict[int, int] | None = None  # --train: saved while this call was innermost


@dataclass
class Recorder:
    """State shared by the hooks and the operation mode of one forward."""

    model: nn.Module
    block_types: tuple[type[nn.Module], ...]
    stats: bool = False  # activation statistics of stage, block and frame rows
    leaf_stats: bool = False  # ... and of every leaf call (run --depth layer)
    events: bool = False  # time rows with CUDA events
    find_blocks: bool = False  # every non-leaf call is a scope: which modules join their own stream
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
    saved_all: dict[int, int] = field(default_factory=dict)
    log: Any = None  # a :class:`~resnet_trace.recorder.replay.Log` of the forward's events, when kept
    flow: Dataflow = field(init=False)

    def __post_init__(self) -> None:
        # ``names``, ``structural`` and ``params`` come from the HookSession that makes every
        # recorder: it reads them once for all its forwards.
        if self.train:  # only saved tensors are compared with the parameters' storage
            self.param_storages = {_storage_key(p) for p in self.params.values()}
        self.flow = Dataflow(self.stack, find=self.find_blocks)

    @property
    def joiners(self) -> list[Joiner]:
        """With ``find_blocks``: the calls that joined their own stream (see :mod:`.dataflow`)."""
        return self.flow.joiners

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
        if not _plain(args, kwargs):
            problem = nesting_problem((args, kwargs))
            if problem is not None:  # the caller's doing: it stops there, in words about the input
                raise NestingError(f"the input it passed to {self._name(module) or 'the model'} {problem}")
        try:
            in_shape = first_shape(args) or first_shape(kwargs)
            leaf = next(iter(module.children()), None) is None

            def tensors() -> list[Any]:
                return list(tensors_in((args, kwargs)))

            if self.log is not None:
                self.log.pre(module, leaf, in_shape, tensors())
            row = self._pre(module, leaf, in_shape, tensors)
        except Exception as exc:  # pragma: no cover - a bug of ours
            raise HookFailure(f"{type(exc).__name__}: {exc}") from exc
        if self.events and row is not None:
            row.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            row.events[0].record()
        t_out = time.perf_counter()
        self.overhead += t_out - t_in
        if row is not None:
            row.t0, row.overhead0 = t_out, self.overhead

    def _pre(
        self, module: nn.Module, leaf: bool, in_shape: Shape | None, tensors: Callable[[], list[Any]]
    ) -> OpenRow | None:
        name = self._name(module)
        self.ran.add(id(module))
        open_row = self._open_row()
        kind: tuple[Kind, Depth] | None = None  # the row this call opens, if it opens one
        extra: dict[str, Any] = {}
        is_block = isinstance(module, self.block_types) if self.block_types else False
        if is_block:
            self.first_block_seen = True
            down = getattr(module, "down", None)
            kind = Kind.BLOCK, Depth.BLOCK
            extra = {
                "stage": next(
                    (c.row for c in reversed(self.stack) if c.row and c.row.kind is Kind.STAGE), None
                ),
                "down": bool(down) if isinstance(down, bool) else None,
                "skips": [],
            }
        elif id(module) in self.structural and self.stack and not self._in_block():
            kind = Kind.STAGE, Depth.STAGE
        elif self.stack and (open_row is None or open_row.kind is Kind.STAGE) and not self._in_block():
            kind = self._frame_kind(module), Depth.STAGE if open_row is None else Depth.BLOCK
        elif leaf and open_row is not None and open_row.kind is not Kind.STAGE:
            kind = Kind.LAYER, Depth.LAYER
        row = None
        if kind is not None:
            row = self._new_row(
                name=name,
                kind=kind[0],
                depth=kind[1],
                module=module,
                parent=open_row,
                in_shape=in_shape,
                **extra,
            )
        call = _Call(module=module, name=name, row=row, leaf=leaf)
        self.stack.append(call)
        if len(self.stack) == 1:
            self.flow.inputs(tensors())
        if is_block or (self.find_blocks and not leaf and len(self.stack) > 1):
            call.block = self.flow.open(module, name, len(self.stack) - 1, tensors())
        return row

    def _in_block(self) -> bool:
        return any(c.row is not None and c.row.kind is Kind.BLOCK for c in self.stack)

    def post(self, module: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
        t_in = time.perf_counter()
        if not isinstance(out, torch.Tensor):
            problem = nesting_problem(out)
            if problem is not None:  # the module's doing: it stops here, in words about its output
                raise NestingError(f"its output {problem}")
        try:
            outs = list(tensors_in(out))

            def tensors() -> list[Any]:
                return list(tensors_in((args, kwargs)))

            if self.log is not None:
                self.log.post(outs, tensors())
            self._post(outs, tensors, out, t_in)
        except Exception as exc:  # pragma: no cover - a bug of ours
            raise HookFailure(f"{type(exc).__name__}: {exc}") from exc
        self.overhead += time.perf_counter() - t_in

    def _post(self, outs: list[Any], tensors: Callable[[], list[Any]], out: object, t_in: float) -> None:
        """The innermost call returned ``out`` (``outs``: its tensors; ``tensors()``: its arguments')."""
        call = self.stack.pop()
        module = call.module
        row = call.row
        if row is not None:
            row.out_shape = _shape(outs)
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
            found = self.flow.close(call.block, outs)
            if row is not None and row.kind is Kind.BLOCK:
                row.skips = found
        self.flow.made(len(self.stack), call.name or type(module).__name__, tensors, outs)
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
        op = op_facts(func, args, kwargs, out, macs, reads, inputs)
        if self.log is not None:
            self.log.op(op)
        self._op(op)

    def _op(self, op: OpFacts) -> None:
        macs = op.macs
        own = self._own_row(op.outs, op.inputs) if (macs or op.reads) else None
        if macs:
            self.macs += macs
            for call in self.stack:
                if call.row is not None:
                    call.row.macs += macs
            if own is not None:
                own.macs += macs
        self.flow.on_op(op)

    def _own_row(self, outs: list[Any], inputs: list[Any]) -> OpenRow | None:
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
                in_shape=_shape(inputs),
                own=True,
                done=True,
            )
        shape = _shape(outs)
        if (
            shape is not None
        ):  # an operation answering a number (a fake tensor's size query) keeps the last shape
            call.own_row.out_shape = shape
        return call.own_row

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


def _storage_key(t: torch.Tensor) -> int:
    storage = t.untyped_storage()
    if t.is_meta or is_fake(t):  # no data: the storage object is the identity
        return int(storage._cdata)
    return int(storage.data_ptr()) or int(storage._cdata)


def _no_modes() -> contextlib.AbstractContextManager[object]:
    from torch.utils._python_dispatch import _disable_current_modes

    return _disable_current_modes()


def row_keys(rows: list[OpenRow]) -> list[tuple[str, int]]:
    """(name, occurrence) of each row: the same key in every pass of the same forward."""
    seen: dict[tuple[str, bool], int] = {}
    keys = []
    for r in rows:
        seen[(r.name, r.own)] = seen.get((r.name, r.own), 0) + 1
        keys.append((r.name + ("#own" if r.own else ""), seen[(r.name, r.own)]))
    return keys
