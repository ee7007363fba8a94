"""Records to the JSON document: the one place each record becomes a dict. No torch here.

``Report.to_dict()`` is the CLI's ``--format json`` for one input; ``Reports`` an array for
several; the others are the JSON of ``check``/``diff``, ``compare`` and ``tree``.
Non-finite floats become ``null``, so every document is standard JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any


def to_dict(record: Any) -> Any:
    from resnet_trace.records import Comparison, Differences, ModuleTree, Report, Reports

    if isinstance(record, Report):
        from resnet_trace.render.data import trace_dict

        return finite(trace_dict(record))
    if isinstance(record, Reports):
        docs = [to_dict(r) for r in record.reports]
        return docs[0] if len(docs) == 1 else docs
    if isinstance(record, Differences):
        from resnet_trace.render.diffs import differences_doc

        return finite(differences_doc(list(record.differences), record.expected, record.got))
    if isinstance(record, Comparison):
        from resnet_trace.render.compare import comparison_doc

        return finite(comparison_doc(record.seed, record.fixed))
    if isinstance(record, ModuleTree):
        from resnet_trace.render.tree import tree_doc

        return tree_doc(record.root)
    raise TypeError(f"no document for {type(record).__name__}")


def to_json(record: Any) -> str:
    return dumps(to_dict(record))


def dumps(doc: Any, *, indent: int | None = 2) -> str:
    """Standard JSON: ``allow_nan=False`` proves no ``NaN``/``Infinity`` token slips through."""
    seps = (",", ":") if indent is None else None
    return json.dumps(finite(doc), indent=indent, separators=seps, allow_nan=False) + "\n"


def finite(value: Any) -> Any:
    """``NaN`` and infinities become ``None`` (``null``), anywhere in a nest of dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
