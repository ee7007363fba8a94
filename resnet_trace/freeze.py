"""A finished forward's recorder frozen into records: rows in forward order, totals, outputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from resnet_trace.modtree import ParamIndex, param_count
from resnet_trace.recorder import OpenRow, Recorder, row_keys
from resnet_trace.records import ConvInfo, Depth, Kind, OutputInfo, Row, Shape, Totals, Trace
from resnet_trace.target import Target


def _conv_info(module: nn.Module | None) -> ConvInfo | None:
    if not isinstance(module, nn.Conv2d):
        return None
    padding = module.padding if not isinstance(module.padding, str) else (0, 0)
    return ConvInfo(
        kernel=(int(module.kernel_size[0]), int(module.kernel_size[1])),
        stride=(int(module.stride[0]), int(module.stride[1])),
        padding=(int(padding[0]), int(padding[1])),
        weight_shape=tuple(int(d) for d in module.weight.shape),
        bias=module.bias is not None,
    )


def freeze_rows(
    target: Target,
    rec: Recorder,
    times: dict[tuple[str, int], float | None] | None = None,
    *,
    timed: bool = True,
) -> tuple[Row, ...]:
    """Finished rows in forward order.

    Stage rows are kept only where they are some block's stage; rows under a dropped one move
    up. A module called several times at stage or block depth gets ``NAME (call k/n)``.
    """
    done = [r for r in rec.rows if r.done]
    keys = dict(zip((id(r) for r in rec.rows), row_keys(rec.rows)))
    stages = {id(r.stage) for r in done if r.kind is Kind.BLOCK and r.stage is not None}
    kept = [r for r in done if r.kind is not Kind.STAGE or id(r) in stages]
    kept_ids = {id(r) for r in kept}

    def parent_of(r: OpenRow) -> OpenRow | None:
        p = r.parent
        while p is not None and id(p) not in kept_ids:
            p = p.parent
        return p

    # A module called n > 1 times gets "NAME (call k/n)": across the trace at stage and block
    # depth, and within its row at layer depth (a leaf called twice inside one block).
    def scope(r: OpenRow) -> tuple:
        return (r.name, r.own) if r.depth is not Depth.LAYER else (r.name, r.own, id(parent_of(r)))

    names: dict[int, str] = {}
    counts: dict[tuple, int] = {}
    for r in kept:
        counts[scope(r)] = counts.get(scope(r), 0) + 1
    seen: dict[tuple, int] = {}
    calls: dict[int, tuple[int, int]] = {}
    for r in kept:
        n = counts[scope(r)]
        if n > 1:
            seen[scope(r)] = seen.get(scope(r), 0) + 1
            names[id(r)] = f"{r.name} (call {seen[scope(r)]}/{n})"
            calls[id(r)] = (seen[scope(r)], n)
        else:
            names[id(r)] = r.name
    blocks_per_stage: dict[int, int] = {}
    for r in kept:
        if r.kind is Kind.BLOCK and r.stage is not None:
            blocks_per_stage[id(r.stage)] = blocks_per_stage.get(id(r.stage), 0) + 1
    index = ParamIndex(rec.read)
    rows = []
    for r in kept:
        parent = parent_of(r)
        depth = r.depth
        if (
            r.depth is Depth.BLOCK
            and r.kind is not Kind.BLOCK
            and (parent is None or parent.kind is not Kind.STAGE)
        ):
            depth = Depth.STAGE  # a frame whose stage was dropped is a top-level row
        if r.depth is Depth.STAGE and r.kind is not Kind.STAGE and parent is not None:
            depth = Depth.BLOCK
        if r.kind is Kind.BLOCK and (r.stage is None or id(r.stage) not in kept_ids) and parent is None:
            depth = Depth.STAGE  # a block with no stage around it is a top-level row
        t = times.get(keys[id(r)]) if times is not None else (r.seconds() if timed else None)
        module = r.module
        skips = tuple(r.skips) if r.skips is not None else None
        if skips is not None and target.skip_override:
            ran = [n for n in target.skip_override if id(getattr(module, n, None)) in rec.ran]
            skips = tuple(ran[:1]) if ran else skips
        call, n_calls = calls.get(id(r), (1, 1))
        rows.append(
            Row(
                name=names[id(r)],
                kind=r.kind,
                depth=depth,
                in_shape=r.in_shape,
                out_shape=r.out_shape,
                params=0 if module is None else index.count(module, recurse=not r.own),
                macs=r.macs,
                parent=names[id(parent)] if parent is not None else None,
                stage=names.get(id(r.stage)) if r.stage is not None and id(r.stage) in kept_ids else None,
                down=r.down,
                skip=("+".join(skips) if skips else "none") if skips is not None else None,
                skips=skips,
                params_unused=0 if module is None else index.unread(module, recurse=not r.own),
                module_type=type(module).__name__ if module is not None else None,
                conv=_conv_info(module) if r.depth is Depth.LAYER and not r.own else None,
                blocks=blocks_per_stage.get(id(r)) if r.kind is Kind.STAGE else None,
                time_ms=None if t is None else max(t, 0.0) * 1000.0,
                activation=r.activation,
                call=call,
                calls=n_calls,
                saved_bytes=sum(r.saved.values()) if r.saved is not None else (0 if rec.train else None),
                out_bytes=r.out_bytes,
            )
        )
    return tuple(rows)


class Sharing:
    """Equal parts of many shape-only traces held once: a sweep's deep rows repeat (a stage at
    ``ceil(h/32)`` sees 32 heights alike), ten thousand ``-i`` flags of one shape are one trace's
    rows ten thousand times. Values are kept by equality: a row, a shape, a name, a ``ConvInfo``, a
    trace's rows. (Shape-only rows hold no floats, so equal values print alike.) The tables live
    as long as the object: one per run of inputs."""

    def __init__(self) -> None:
        self._values: dict[object, object] = {}
        self._rows: dict[Row, Row] = {}

    def value(self, value: Any) -> Any:
        """``value``, or an equal one seen before."""
        return value if value is None else self._values.setdefault(value, value)

    def row(self, row: Row) -> Row:
        """``row``, or an equal one seen before, its parts shared."""
        hit = self._rows.get(row)
        if hit is None:
            hit = self._parts(row, _ROW_PARTS)
            self._rows[hit] = hit
        return hit

    def trace(self, trace: Trace) -> Trace:
        """``trace`` with its rows and other records shared with the traces seen before."""
        rows = self.value(tuple(self.row(r) for r in trace.rows))
        return dataclasses.replace(self._parts(trace, _TRACE_PARTS), rows=rows)

    def _parts(self, record: Any, parts: tuple[str, ...]) -> Any:
        return dataclasses.replace(record, **{f: self.value(getattr(record, f)) for f in parts})


#: The parts of a row and of a trace that equal ones of other inputs share.
_ROW_PARTS = ("name", "in_shape", "out_shape", "parent", "stage", "skip", "skips", "module_type", "conv")
_TRACE_PARTS = (
    "model", "input_shape", "output_shape", "totals", "error", "accepted_sizes", "outputs", "notes", "inputs",
)  # fmt: skip


def unused_modules(model: nn.Module, read: set[int]) -> list[tuple[str, int]]:
    """Modules holding parameters of their own that no operation read, with those parameters' counts."""
    out = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        unread = 0
        for p in module.parameters(recurse=False):
            if id(p) not in read and id(p) not in seen:
                seen.add(id(p))
                unread += p.numel()
        if unread:
            out.append((name, unread))
    return out


def totals(model: nn.Module, rec: Recorder) -> Totals:
    """Params from ``model.parameters()`` (each tensor once, after the forward), never summed from rows."""
    unused = unused_modules(model, rec.read)
    return Totals(
        params=param_count(model),
        params_unused=sum(n for _, n in unused),
        unused_modules=tuple(name for name, _ in unused),
        macs=rec.macs,
        activations_bytes=sum(rec.saved_all.values()) if rec.train else None,
        unread_params=tuple(name for name, p in model.named_parameters() if id(p) not in rec.read),
    )


def outputs(value: Any) -> tuple[OutputInfo, ...]:
    """Every tensor in a model's output nest, with its path (``logits``, ``0``, ``hidden_states.2``)."""
    return tuple(
        OutputInfo(path=path, shape=tuple(int(d) for d in t.shape), dtype=str(t.dtype).removeprefix("torch."))
        for path, t in output_tensors(value)
    )


def output_tensors(value: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(path, tensor)`` for every tensor in a model's output nest, in order."""
    if isinstance(value, torch.Tensor):
        yield path, value
        return
    join = (lambda k: f"{path}.{k}") if path else (lambda k: str(k))
    if isinstance(value, dict):
        for k, v in value.items():
            yield from output_tensors(v, join(k))
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from output_tensors(v, join(i))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from output_tensors(getattr(value, f.name), join(f.name))


def first_tensor(value: Any) -> torch.Tensor | None:
    from resnet_trace.ops import tensors_in

    if dataclasses.is_dataclass(value) and not isinstance(value, (type, dict)):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    return next(tensors_in(value), None)


def output_shape(value: Any) -> Shape | None:
    infos = outputs(value)
    return infos[0].shape if infos else None
