"""Pure views over a trace's rows: depth, collapse, filter. No torch here."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from resnet_trace.errors import UsageError
from resnet_trace.records import Depth, Kind, Row


def select_depth(rows: Sequence[Row], depth: Depth) -> list[Row]:
    """Rows shown at ``depth``.

    ``stage``: the top-level rows (stem, each stage, avgpool, fc_layer).
    ``block``: the stem, every block, avgpool and fc_layer.
    ``layer``: the ``block`` rows, each followed by the leaf calls made inside it.
    """
    if depth is Depth.STAGE:
        return [r for r in rows if r.depth is Depth.STAGE]
    keep = [r for r in rows if r.kind is not Kind.STAGE]
    if depth is Depth.BLOCK:
        return [r for r in keep if r.depth is not Depth.LAYER]
    return keep


def _signature(row: Row) -> tuple:
    """Everything but the name: what two blocks must share to fold."""
    return (
        row.kind,
        row.stage,
        row.down,
        row.in_shape,
        row.out_shape,
        row.skip,
        row.params,
        row.params_unused,
        row.macs,
        # run: measured rows are never "identical apart from the name"
        row.time_ms,
        row.activation,
    )


def fold_name(first: str, last: str) -> str:
    """``layer_4.1`` + ``layer_4.4`` -> ``layer_4.1–4.4``."""
    stage, _, a = first.rpartition(".")
    stage_b, _, b = last.rpartition(".")
    if stage and stage == stage_b:
        return f"{stage}.{a}–{stage.rpartition('_')[2]}.{b}" if "_" in stage else f"{first}–{b}"
    return f"{first}–{last}"


def collapse(rows: Sequence[Row]) -> list[Row]:
    """Fold runs of consecutive blocks identical apart from the name (layer rows included).

    A folded row keeps its first block's numbers and children and carries ``count``;
    its params and MACs are those of *one* block, so totals are never recomputed from it.
    """
    groups: list[tuple[Row, list[Row]]] = []  # (row, the layer rows under it)
    for row in rows:
        if row.depth is Depth.LAYER and groups and row.parent == groups[-1][0].name:
            groups[-1][1].append(row)
        else:
            groups.append((row, []))
    out: list[Row] = []
    prev: tuple[Row, list[Row], list[Row]] | None = None
    merged: list[tuple[Row, list[Row], list[Row]]] = []  # (first block, its children, folded blocks)
    for block, children in groups:
        if (
            prev is not None
            and block.kind is Kind.BLOCK
            and prev[0].kind is Kind.BLOCK
            and _signature(block) == _signature(prev[0])
            and [_child_sig(c) for c in children] == [_child_sig(c) for c in prev[1]]
        ):
            prev[2].append(block)
            continue
        prev = (block, children, [block])
        merged.append(prev)
    for block, children, members in merged:
        if len(members) > 1:
            name = fold_name(members[0].name, members[-1].name)
            out.append(dataclasses.replace(block, name=name, count=len(members)))
            # Children are renamed under the folded row: layer_4.1.layer.0.0 -> layer_4.1–4.4.layer.0.0
            out.extend(
                dataclasses.replace(c, name=name + c.name[len(block.name) :], parent=name) for c in children
            )
        else:
            out.append(block)
            out.extend(children)
    return out


def _child_sig(row: Row) -> tuple:
    prefix = row.parent or ""
    return (
        row.name[len(prefix) :],
        row.module_type,
        row.in_shape,
        row.out_shape,
        row.params,
        row.macs,
        row.conv,
        row.time_ms,
        row.activation,
    )


def filter_rows(rows: Sequence[Row], pattern: str) -> list[Row]:
    """Rows whose name matches ``pattern`` (``re.search``)."""
    try:
        regex = re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:  # a{4294967296}: OverflowError inside re
        raise UsageError(f"--filter {pattern!r} is not a valid regular expression: {exc}") from None
    return [r for r in rows if regex.search(r.name)]


def view(
    rows: Sequence[Row], depth: Depth = Depth.BLOCK, *, fold: bool = False, pattern: str | None = None
) -> list[Row]:
    """The rows a renderer shows: depth first, then filter (on the real names), then collapse."""
    out = select_depth(rows, depth)
    if pattern:
        out = filter_rows(out, pattern)
    if fold:
        out = collapse(out)
    return out
