"""One hooked forward, turned into frozen records: rows, totals, outputs.

The recorder (:mod:`resnet_trace.recorder`) watches module calls and operations; this
module runs the forward under it and freezes what it saw.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from resnet_trace.modtree import ParamIndex, param_count
from resnet_trace.recorder import HookFailure, HookSession, OpenRow, Recorder, hook_session, row_keys
from resnet_trace.records import ConvInfo, Depth, Kind, OutputInfo, Row, Shape, Totals
from resnet_trace.target import Target


@dataclass
class Forward:
    """What one hooked forward saw: the recorder, the output and the failure, if any."""

    recorder: Recorder
    output: Any
    failure: BaseException | None


@contextlib.contextmanager
def forward_session(
    target: Target,
    *,
    stats: bool = False,
    leaf_stats: bool = False,
    train: bool = False,
    find_blocks: bool = False,
    block_types: tuple[type[nn.Module], ...] | None = None,
) -> Iterator[HookSession]:
    """The hooks of :func:`run_forward`, for several forwards of ``target`` (one per input size);
    every training flag is restored afterwards."""
    with hook_session(
        target.model,
        target.block_types if block_types is None else block_types,
        stats=stats,
        leaf_stats=leaf_stats,
        train=train,
        find_blocks=find_blocks,
        cpu_attention=target.attention,
    ) as session:
        yield session


def run_forward(
    target: Target,
    x: Any,
    *,
    stats: bool = False,
    leaf_stats: bool = False,
    train: bool = False,
    find_blocks: bool = False,
    block_types: tuple[type[nn.Module], ...] | None = None,
    session: HookSession | None = None,
) -> Forward:
    """One hooked forward. ``eval()`` under ``no_grad``, or with ``train`` in ``train()`` with autograd
    recording what it saves. Any exception from the model's code is the model's failure;
    a bug in our hooks is raised.

    ``session``: a :func:`forward_session` of ``target`` opened with these same options and kept
    open across forwards; without it, one is opened for this forward.
    """
    blocks = target.block_types if block_types is None else block_types
    if session is None:
        with forward_session(
            target,
            stats=stats,
            leaf_stats=leaf_stats,
            train=train,
            find_blocks=find_blocks,
            block_types=blocks,
        ) as own:
            return _forward(target, x, own, train)
    wanted = dict(stats=stats, events=False, leaf_stats=leaf_stats, find_blocks=find_blocks, train=train)
    if session.options != wanted or session.block_types != blocks or session.model is not target.model:
        raise ValueError("run_forward: the session was opened for another target or other options")
    return _forward(target, x, session, train)


def _forward(target: Target, x: Any, session: HookSession, train: bool) -> Forward:
    out = None
    failure: BaseException | None = None
    # Every forward, as a fresh trace would: the model's code (or a failed forward) may have
    # changed a flag, and a module's own train() may do more than set it.
    target.model.train(train)
    with session.recording() as rec:
        grad = torch.enable_grad() if train else torch.no_grad()
        try:
            with grad:
                out = target.model(**x) if isinstance(x, dict) else target.model(x)
        except (HookFailure, KeyboardInterrupt):
            raise
        except BaseException as exc:  # the model's own code failed on this input (SystemExit too)
            failure = exc
            rec.failure = rec.failing_module()
    return Forward(rec, out, failure)


def find_block_types(target: Target, x: Any) -> tuple[type[nn.Module], ...]:
    """The classes of the innermost modules that add onto their own input (a residual add).

    Failing that, the most repeated child class of the model's longest ``Sequential`` or ``ModuleList``.
    """
    fwd = run_forward(target, x, find_blocks=True, block_types=())
    found: list[type[nn.Module]] = []
    for module in fwd.recorder.residual_adders.values():
        if type(module) not in found:
            found.append(type(module))
    if found:
        return tuple(found)
    longest: list[nn.Module] = []
    for m in target.model.modules():
        if isinstance(m, (nn.Sequential, nn.ModuleList)) and len(m) > len(longest):
            longest = list(m)
    if len(longest) < 2:
        return ()
    counts: dict[type[nn.Module], int] = {}
    for m in longest:
        counts[type(m)] = counts.get(type(m), 0) + 1
    best = max(counts, key=lambda k: counts[k])
    return (best,) if counts[best] > 1 else ()


# -- freezing ---------------------------------------------------------------------------------
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
    )


def outputs(value: Any) -> tuple[OutputInfo, ...]:
    """Every tensor in a model's output nest, with its path (``logits``, ``0``, ``hidden_states.2``)."""
    return tuple(_walk(value, ""))


def _walk(value: Any, path: str) -> Iterator[OutputInfo]:
    if isinstance(value, torch.Tensor):
        yield OutputInfo(
            path=path, shape=tuple(int(d) for d in value.shape), dtype=str(value.dtype).removeprefix("torch.")
        )
        return
    join = (lambda k: f"{path}.{k}") if path else (lambda k: str(k))
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, join(k))
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _walk(v, join(i))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _walk(getattr(value, f.name), join(f.name))


def first_tensor(value: Any) -> torch.Tensor | None:
    from resnet_trace.ops import tensors_in

    if dataclasses.is_dataclass(value) and not isinstance(value, (type, dict)):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    return next(tensors_in(value), None)


def output_shape(value: Any) -> Shape | None:
    infos = outputs(value)
    return infos[0].shape if infos else None
