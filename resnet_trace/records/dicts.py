"""Records to JSON: the schema ids, the dict of a row, a module tree and a list of differences,
and ``dumps``, the one writer of every JSON document the tool prints. No torch here.

Non-finite floats become ``null`` (``finite``), and ``dumps`` refuses ``NaN``/``Infinity`` outright,
so every document is standard JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from resnet_trace.records.trace import Difference, Row, TreeNode
from resnet_trace.units import Shape

#: The trace document (``summary``/``run --format json``); ``check`` and ``diff`` read only this one.
SCHEMA_ID = "resnet-trace/1"
#: What ``check`` and ``diff`` print with ``--format json``.
DIFF_SCHEMA_ID = "resnet-trace/diff/1"
#: What ``compare`` prints with ``--format json``.
COMPARE_SCHEMA_ID = "resnet-trace/compare/1"


def dumps(doc: Any, *, indent: int | None = 2) -> str:
    """A document as standard JSON and a newline: ``indent=2``, or ``indent=None`` for one compact
    line (jsonl). Non-finite floats become ``null`` first; ``allow_nan=False`` proves no
    ``NaN``/``Infinity`` token slips through."""
    seps = (",", ":") if indent is None else None
    return _encode(doc, indent=indent, separators=seps) + "\n"


def json_cell(value: Any) -> str:
    """A value inside a table or CSV cell: one line of JSON, ``", "`` and ``": "`` between items."""
    return _encode(value, indent=None, separators=None)


def _encode(value: Any, *, indent: int | None, separators: tuple[str, str] | None) -> str:
    try:
        return json.dumps(finite(value), indent=indent, separators=separators, allow_nan=False)
    except RecursionError:  # nested deeper than Python recurses (a module tree 3,000 levels deep)
        return _encode_deep(value, indent=indent, separators=separators)


def _encode_deep(value: Any, *, indent: int | None, separators: tuple[str, str] | None) -> str:
    """``json.dumps(finite(value), ...)``'s text, written with a stack of its own instead of recursion."""
    item_sep, key_sep = separators or ((",", ": ") if indent is not None else (", ", ": "))
    out: list[str] = []
    todo: list[Any] = [(value, 0)]  # a str is text to write; a pair, a value at a nesting level
    while todo:
        top = todo.pop()
        if isinstance(top, str):
            out.append(top)
            continue
        v, level = top
        if isinstance(v, (dict, list, tuple)) and v:
            pairs = list(v.items()) if isinstance(v, dict) else [(None, x) for x in v]
            inner = "" if indent is None else "\n" + " " * (indent * (level + 1))
            work: list[Any] = ["{" if isinstance(v, dict) else "["]
            for i, (k, x) in enumerate(pairs):
                work.append(inner if i == 0 else item_sep + inner)
                if isinstance(v, dict):
                    work.append(json.dumps(k if isinstance(k, str) else json.dumps(k)) + key_sep)
                work.append((x, level + 1))
            outer = "" if indent is None else "\n" + " " * (indent * level)
            work.append(outer + ("}" if isinstance(v, dict) else "]"))
            todo.extend(reversed(work))
        else:
            out.append(json.dumps(finite(v), allow_nan=False))
    return "".join(out)


def finite(value: Any) -> Any:
    """``NaN`` and infinities become ``None`` (``null``), anywhere in a nest of dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def shape_list(shape: Shape | None) -> list[int] | None:
    return list(shape) if shape is not None else None


#: Row fields the document writes only when set (``None`` leaves them out), in document order.
_OPTIONAL = ("saved_bytes", "out_bytes", "grad_norm", "param_grad_norm", "time_ms")


def row_dict(row: Row) -> dict:
    """One row of the trace document: the one description of a row (CSV cells come from it)."""
    d: dict = {
        "name": row.name,
        "kind": row.kind.value,
        "depth": row.depth.value,
        "parent": row.parent,
        "stage": row.stage,
        "down": row.down,
        "in_shape": shape_list(row.in_shape),
        "out_shape": shape_list(row.out_shape),
        "skip": row.skip,
        "skips": list(row.skips) if row.skips is not None else None,
        "params": row.params,
        "params_unused": row.params_unused,
        "macs": row.macs,
        "module_type": row.module_type,
    }
    if row.conv is not None:
        c = row.conv
        d["conv"] = {
            "kernel": list(c.kernel),
            "stride": list(c.stride),
            "padding": list(c.padding),
            "weight_shape": list(c.weight_shape),
            "bias": c.bias,
        }
    if row.blocks is not None:
        d["blocks"] = row.blocks
    if row.count != 1:
        d["count"] = row.count
    if row.calls != 1:
        d["call"] = row.call
        d["calls"] = row.calls
    for name in _OPTIONAL:
        if getattr(row, name) is not None:
            d[name] = getattr(row, name)
    if row.activation is not None:
        a = row.activation
        d["activation"] = {
            "mean": a.mean,
            "std": a.std,
            "min": a.min,
            "max": a.max,
            "zero_fraction": a.zero_fraction,
        }
    return d


def tree_dict(node: TreeNode) -> dict:
    """``tree --format json``: a module and, nested, its children (built with a stack, not recursion:
    a model may nest modules thousands of levels deep)."""

    def fields(n: TreeNode) -> dict:
        return {
            "name": n.name,
            "type": n.type,
            "params": n.params,
            "own_params": n.own_params,
            "ran": n.ran,
            "alias_of": n.alias_of,
            "children": [],
        }

    root = fields(node)
    todo = [(node, root)]
    while todo:
        n, d = todo.pop()
        for child in n.children:
            d["children"].append(fields(child))
            todo.append((child, d["children"][-1]))
    return root


def differences_dict(diffs: Sequence[Difference], expected: str, got: str) -> dict:
    """``check``/``diff --format json``: ``equal`` and one entry per difference."""
    return {
        "schema": DIFF_SCHEMA_ID,
        "expected": expected,
        "got": got,
        "equal": not diffs,
        "differences": [
            {"row": d.row, "field": d.field, "expected": d.expected, "got": d.got} for d in diffs
        ],
    }
