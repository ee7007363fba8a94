"""Forward hooks on a model, turned into frozen records.

``hooked(...)`` is the one place hooks live: it registers a pre- and a post-hook
on every module, and its ``finally`` removes every handle and restores
``model.training``, whether the forward succeeded or raised. The recorder keeps
shapes and counts only, never tensors.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from resnet_trace.records import (
    Activation,
    ConvInfo,
    Depth,
    ModelInfo,
    Row,
    Shape,
    Totals,
    TraceError,
    TreeNode,
    shape_text,
)

POOL_TYPES = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class Target:
    """A model to trace and how to read it: which class is a block, which children are skips."""

    model: nn.Module
    info: ModelInfo
    block_type: type[nn.Module]
    skip_names: tuple[str, ...] = ("downsample", "dim_equalizer")
    accepted_sizes: tuple[int, int] | None = None


class HookFailure(Exception):
    """A bug inside our own hooks; never blamed on the model."""


def _shape(value: object) -> Shape | None:
    if isinstance(value, torch.Tensor):
        return tuple(int(d) for d in value.shape)
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return tuple(int(d) for d in value[0].shape)
    return None


def call_macs(module: nn.Module, out: object) -> int:
    """Multiply-accumulates of one call: ``Conv2d`` and ``Linear`` only, whole batch, no bias.

    Conv: every output element takes ``in_channels / groups * kh * kw`` products.
    Linear: every output element takes ``in_features`` products.
    """
    if not isinstance(out, torch.Tensor):
        return 0
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0


def _stats(out: object) -> Activation | None:
    """Mean, std (unbiased, as ``Tensor.std``), min, max and fraction of zeros: three passes."""
    if not isinstance(out, torch.Tensor) or out.is_meta or out.numel() == 0:
        return None
    with torch.no_grad():
        t = out.detach()
        if t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        std, mean = torch.std_mean(t) if t.numel() > 1 else (torch.zeros(()), t.reshape(()))
        low, high = torch.aminmax(t)
        zeros = t.numel() - torch.count_nonzero(t)
        values = torch.stack([mean, std, low, high]).tolist()
        return Activation(
            mean=values[0],
            std=values[1],
            min=values[2],
            max=values[3],
            zero_fraction=zeros.item() / t.numel(),
        )


@dataclass
class _Open:
    """A row being recorded (mutable, private); frozen into a :class:`Row` at the end."""

    index: int
    name: str
    kind: str
    depth: Depth
    module: nn.Module
    parent: str | None
    in_shape: Shape | None
    stage: str | None = None
    down: bool | None = None
    skip: str | None = None
    macs: int = 0
    out_shape: Shape | None = None
    activation: Activation | None = None
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
class Recorder:
    """State shared by the hooks of one forward."""

    target: Target
    stats: bool = False  # activation statistics of stage, block and frame rows
    leaf_stats: bool = False  # ... and of every leaf call (run --depth layer)
    events: bool = False  # time rows with CUDA events
    names: dict[int, list[str]] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)  # id -> stage | block | frame
    stack: list[tuple[nn.Module, str, _Open | None]] = field(default_factory=list)
    rows: list[_Open] = field(default_factory=list)
    ran: set[int] = field(default_factory=set)
    macs: int = 0
    overhead: float = 0.0  # seconds spent inside our hooks, subtracted from row times
    output_shape: Shape | None = None
    failure: tuple[str, Shape | None, nn.Module | None] | None = None
    first_block_seen: bool = False  # rows before the first block are the stem

    def __post_init__(self) -> None:
        model = self.target.model
        for name, module in model.named_modules(remove_duplicate=False):
            self.names.setdefault(id(module), []).append(name)
        blocks = [m for m in model.modules() if isinstance(m, self.target.block_type)]
        in_blocks = {id(sub) for b in blocks for sub in b.modules()}
        for b in blocks:
            self.roles[id(b)] = "block"
        for child in model.children():
            if id(child) in in_blocks:
                continue  # e.g. the seed's shared act_fn, which only runs inside blocks
            if any(id(sub) in self.roles for sub in child.modules()):
                self.roles[id(child)] = "stage"
            else:
                self.roles[id(child)] = "frame"

    # -- naming -------------------------------------------------------------
    def _name(self, module: nn.Module) -> str:
        """The alias of ``module`` under the innermost running module (resolves shared modules)."""
        aliases = self.names.get(id(module), [""])
        if len(aliases) == 1 or not self.stack:
            return aliases[0]
        parent = self.stack[-1][1]
        prefix = parent + "." if parent else ""
        best = [a for a in aliases if a.startswith(prefix) and "." not in a[len(prefix) :]]
        return best[0] if best else aliases[0]

    def _open_rows(self) -> Iterator[_Open]:
        for _, _, row in self.stack:
            if row is not None:
                yield row

    def _kind(self, module: nn.Module, role: str) -> str:
        if role == "block":
            return "bottleneck"
        if role == "stage":
            return "stage"
        if isinstance(module, POOL_TYPES):
            return "pool"
        if isinstance(module, nn.Linear):
            return "fc"
        return "module" if self.first_block_seen else "stem"

    # -- hooks ----------------------------------------------------------------
    def pre(self, module: nn.Module, args: tuple) -> None:
        t_in = time.perf_counter()
        try:
            self._pre(module, args)
        except Exception as exc:  # pragma: no cover - a bug of ours
            raise HookFailure(f"{type(exc).__name__}: {exc}") from exc
        row = self.stack[-1][2]
        if self.events and row is not None:
            row.events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            row.events[0].record()
        t_out = time.perf_counter()
        self.overhead += t_out - t_in
        if row is not None:
            row.t0, row.overhead0 = t_out, self.overhead

    def _pre(self, module: nn.Module, args: tuple) -> None:
        name = self._name(module)
        self.ran.add(id(module))
        role = self.roles.get(id(module))
        open_rows = list(self._open_rows())
        parent_row = open_rows[-1] if open_rows else None
        row: _Open | None = None
        if role is not None:
            kind = self._kind(module, role)
            if role == "block":
                self.first_block_seen = True
            depth = Depth.BLOCK if role == "block" else Depth.STAGE
            row = _Open(
                index=len(self.rows),
                name=name,
                kind=kind,
                depth=depth,
                module=module,
                parent=parent_row.name if parent_row else None,
                in_shape=_shape(args[0]) if args else None,
            )
            if role == "block":
                row.stage = parent_row.name if parent_row else name.rpartition(".")[0] or None
                down = getattr(module, "down", None)
                row.down = bool(down) if isinstance(down, bool) else None
                row.skip = "identity"
        elif parent_row is not None and not any(True for _ in module.children()):
            row = _Open(
                index=len(self.rows),
                name=name,
                kind="layer",
                depth=Depth.LAYER,
                module=module,
                parent=parent_row.name,
                in_shape=_shape(args[0]) if args else None,
            )
        if row is not None:
            self.rows.append(row)
        self.stack.append((module, name, row))

    def post(self, module: nn.Module, args: tuple, out: object) -> None:
        t_in = time.perf_counter()
        try:
            self._post(module, out, t_in)
        except Exception as exc:  # pragma: no cover - a bug of ours
            raise HookFailure(f"{type(exc).__name__}: {exc}") from exc
        self.overhead += time.perf_counter() - t_in

    def _post(self, module: nn.Module, out: object, t_in: float) -> None:
        _, name, row = self.stack.pop()
        macs = call_macs(module, out)
        if macs:
            self.macs += macs
            for open_row in self._open_rows():
                open_row.macs += macs
        if row is not None:
            row.macs += macs
            row.out_shape = _shape(out)
            row.time_s = (t_in - row.t0) - (self.overhead - row.overhead0)
            if row.events is not None:
                row.events[1].record()
            row.done = True
            if self.stats and (row.depth is not Depth.LAYER or self.leaf_stats):
                row.activation = _stats(out)
        # Which skip module ran: attribute it to the innermost open block.
        for open_row in reversed(list(self._open_rows())):
            if open_row.kind == "bottleneck":
                for skip in self.target.skip_names:
                    if getattr(open_row.module, skip, None) is module:
                        open_row.skip = skip
                break
        if not self.stack:
            self.output_shape = _shape(out)

    def failing_module(self) -> tuple[str, Shape | None, nn.Module | None]:
        """Innermost module that had started and not finished: where the forward stopped."""
        if not self.stack:
            return "", None, None
        module, name, row = self.stack[-1]
        return name, row.in_shape if row else None, module


@contextlib.contextmanager
def hooked(
    target: Target,
    *,
    stats: bool = False,
    events: bool = False,
    leaves: bool = True,
    leaf_stats: bool = False,
) -> Iterator[Recorder]:
    """Hook the modules of ``target.model``; always remove the hooks and restore ``training``.

    ``leaves=False`` hooks only the row modules (stages, blocks, stem, head): the light
    hooks of timed passes, which then record no layer rows, MACs or skip paths.
    """
    model = target.model
    recorder = Recorder(target, stats=stats, events=events, leaf_stats=leaf_stats)
    training = model.training
    handles = []
    modules = list(model.modules())
    if not leaves:
        modules = [m for m in modules if id(m) in recorder.roles]
    try:
        for module in modules:
            handles.append(module.register_forward_pre_hook(recorder.pre))
            handles.append(module.register_forward_hook(recorder.post))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def unused_modules(model: nn.Module, ran: set[int]) -> list[tuple[str, int]]:
    """Modules holding parameters of their own that never ran, with their parameter counts."""
    out = []
    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if own and id(module) not in ran:
            out.append((name, own))
    return out


def _unused_under(module: nn.Module, ran: set[int]) -> int:
    seen: set[int] = set()
    total = 0
    for sub in module.modules():
        if id(sub) in ran:
            continue
        for p in sub.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def _conv_info(module: nn.Module) -> ConvInfo | None:
    if not isinstance(module, nn.Conv2d):
        return None
    return ConvInfo(
        kernel=tuple(module.kernel_size),  # type: ignore[arg-type]
        stride=tuple(module.stride),  # type: ignore[arg-type]
        padding=tuple(module.padding) if not isinstance(module.padding, str) else (0, 0),  # type: ignore[arg-type]
        weight_shape=tuple(int(d) for d in module.weight.shape),
        bias=module.bias is not None,
    )


def freeze_rows(
    recorder: Recorder, times: list[float | None] | None = None, *, timed: bool = True
) -> tuple[Row, ...]:
    """Finished rows in forward order; blocks count how many ran under each stage."""
    ran = recorder.ran
    done = [r for r in recorder.rows if r.done]
    blocks_per_stage: dict[str, int] = {}
    for r in done:
        if r.kind == "bottleneck" and r.parent:
            blocks_per_stage[r.parent] = blocks_per_stage.get(r.parent, 0) + 1
    rows = []
    for r in done:
        t = times[r.index] if times is not None else (r.seconds() if timed else None)
        rows.append(
            Row(
                name=r.name,
                kind=r.kind,
                depth=r.depth,
                in_shape=r.in_shape,
                out_shape=r.out_shape,
                params=param_count(r.module),
                macs=r.macs,
                parent=r.parent,
                stage=r.stage,
                down=r.down,
                skip=r.skip,
                params_unused=_unused_under(r.module, ran),
                module_type=type(r.module).__name__,
                conv=_conv_info(r.module) if r.depth is Depth.LAYER else None,
                blocks=blocks_per_stage.get(r.name) if r.kind == "stage" else None,
                time_ms=None if t is None else max(t, 0.0) * 1000.0,
                activation=r.activation,
            )
        )
    return tuple(rows)


def totals(recorder: Recorder) -> Totals:
    model = recorder.target.model
    unused = unused_modules(model, recorder.ran)
    return Totals(
        params=param_count(model),
        params_unused=sum(n for _, n in unused),
        unused_modules=tuple(name for name, _ in unused),
        macs=recorder.macs,
    )


def run_forward(
    target: Target,
    x: torch.Tensor,
    *,
    stats: bool = False,
    shape_only: bool = False,
    leaf_stats: bool = False,
) -> tuple[Recorder, torch.Tensor | None, BaseException | None]:
    """One hooked forward under ``no_grad`` and ``eval()``; returns what it saw and any failure."""
    from resnet_trace.shapes import ShapeMode

    out = None
    failure: BaseException | None = None
    with hooked(target, stats=stats, leaf_stats=leaf_stats) as rec:
        target.model.eval()
        mode = ShapeMode() if shape_only else contextlib.nullcontext()
        try:
            with torch.no_grad(), mode:
                out = target.model(x)
        except HookFailure:
            raise
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # the model rejected this input
            failure = exc
            rec.failure = rec.failing_module()
    return rec, out, failure


def row_keys(rows: list[_Open]) -> list[tuple[str, int]]:
    """(name, occurrence) of each row: the same key in every pass of the same forward."""
    seen: dict[str, int] = {}
    keys = []
    for r in rows:
        seen[r.name] = seen.get(r.name, 0) + 1
        keys.append((r.name, seen[r.name]))
    return keys


def timed_forwards(
    target: Target,
    x: torch.Tensor,
    repeat: int,
    progress: Callable[[int], None] | None = None,
    *,
    leaves: bool = False,
) -> tuple[list[dict[tuple[str, int], float | None]], list[float], list[float]]:
    """``repeat`` hooked and ``repeat`` plain forwards, alternated; per-row times and walls.

    Rows are keyed by (name, occurrence). Without ``leaves`` only the row modules are hooked,
    so the hooks cost little next to the blocks they time.
    """
    device = x.device.type
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    per_row: list[dict[tuple[str, int], float | None]] = []
    hooked_walls: list[float] = []
    plain_walls: list[float] = []
    model = target.model
    training = model.training
    try:
        for i in range(repeat):
            _timed_pair(target, x, leaves, sync, per_row, hooked_walls, plain_walls)
            if progress:
                progress(i + 1)
    finally:
        model.train(training)
    return per_row, hooked_walls, plain_walls


def _timed_pair(
    target: Target,
    x: torch.Tensor,
    leaves: bool,
    sync: Callable[[], None],
    per_row: list[dict[tuple[str, int], float | None]],
    hooked_walls: list[float],
    plain_walls: list[float],
) -> None:
    """One hooked and one plain forward, both in ``eval()`` under ``no_grad``."""
    model = target.model
    with hooked(target, events=x.device.type == "cuda", leaves=leaves) as rec, torch.no_grad():
        model.eval()
        sync()
        t0 = time.perf_counter()
        model(x)
        sync()
        hooked_walls.append(time.perf_counter() - t0)
    per_row.append(dict(zip(row_keys(rec.rows), (r.seconds() for r in rec.rows))))
    model.eval()  # hooked() restored the caller's flag
    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        model(x)
        sync()
        plain_walls.append(time.perf_counter() - t0)


def diagnose(target: Target, recorder: Recorder, exc: BaseException, rows: tuple[Row, ...]) -> TraceError:
    """Turn a forward failure into one plain sentence, a hint and the module it stopped in."""
    name, in_shape, module = recorder.failure or ("", None, None)
    label = name or type(target.model).__name__
    raw = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    acc = target.accepted_sizes
    head_failure = acc is not None and isinstance(module, (nn.AvgPool2d, nn.Linear))
    hint = (
        f"H and W must each be in {acc[0]}-{acc[1]} for the seed's AvgPool2d(7, 1) head "
        f"(e.g. 1x3x224x224), or use --head adaptive"
        if head_failure and acc
        else "check the input shape against what this model accepts"
    )
    message = f"{label} ({type(module).__name__ if module is not None else 'forward'}): {raw}"
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)) and in_shape and len(in_shape) == 4:
        k = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
        h, w = in_shape[2], in_shape[3]
        if h < k[0] or w < k[1]:
            message = (
                f"{label} received a {h}x{w} map, smaller than its {k[0]}x{k[1]} kernel "
                f"(input {shape_text(rows[0].in_shape) if rows else '?'})"
            )
    elif isinstance(module, nn.Linear) and in_shape:
        got = in_shape[-1]
        message = f"{label} takes {module.in_features} features but received {got}"
        pools = [r for r in rows if r.kind == "pool" and r.in_shape and r.out_shape]
        if pools and len(pools[-1].in_shape or ()) == 4:
            p = pools[-1]
            c, ih, iw = p.in_shape[1], p.in_shape[2], p.in_shape[3]  # type: ignore[index]
            oh, ow = p.out_shape[2], p.out_shape[3]  # type: ignore[index]
            message = (
                f"{label} takes {module.in_features} features but received {got:,}: "
                f"{p.name} pooled the {ih}x{iw} map to {oh}x{ow}, and {c} channels x {oh}x{ow} = {got:,}"
            )
    return TraceError(module=label, message=message, hint=hint, in_shape=in_shape)


def module_tree(model: nn.Module, ran: set[int]) -> TreeNode:
    """The module tree as frozen records; a shared module is expanded once, then shown as an alias."""
    first: dict[int, str] = {}

    def node(module: nn.Module, name: str, attr: str) -> TreeNode:
        alias = first.get(id(module))
        if alias is None:
            first[id(module)] = name
        children = (
            ()
            if alias is not None
            else tuple(node(child, f"{name}.{a}" if name else a, a) for a, child in module.named_children())
        )
        return TreeNode(
            name=name,
            attr=attr,
            type=type(module).__name__,
            params=param_count(module),
            own_params=sum(p.numel() for p in module.parameters(recurse=False)),
            ran=id(module) in ran,
            alias_of=alias,
            children=children,
        )

    return node(model, "", "")
