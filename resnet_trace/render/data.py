"""The JSON document (schema ``resnet-trace/1``), also the source of CSV and Markdown cells."""

from __future__ import annotations

import json
from collections.abc import Sequence

from resnet_trace.records import Report, Row, Shape, Trace

SCHEMA_ID = "resnet-trace/1"


def shape_list(shape: Shape | None) -> list[int] | None:
    return list(shape) if shape is not None else None


def row_dict(row: Row) -> dict:
    d: dict = {
        "name": row.name,
        "kind": row.kind,
        "depth": row.depth.value,
        "parent": row.parent,
        "stage": row.stage,
        "down": row.down,
        "in_shape": shape_list(row.in_shape),
        "out_shape": shape_list(row.out_shape),
        "skip": row.skip,
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
    if row.time_ms is not None:
        d["time_ms"] = row.time_ms
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


def trace_dict(report: Report) -> dict:
    t: Trace = report.trace
    m = t.model
    doc: dict = {
        "schema": SCHEMA_ID,
        "command": t.command,
        "model": {
            "base_dim": m.base_dim,
            "num_classes": m.num_classes,
            "variant": m.variant,
            "head": m.head,
            "source": m.source,
            "block": m.block,
            "skip": list(m.skip),
        },
        "device": t.device,
        "dtype": t.dtype,
        "input_shape": list(t.input_shape),
        "output_shape": shape_list(t.output_shape),
        "depth": report.depth.value,
        "collapsed": report.collapsed,
        "filter": report.filter,
        "accepted_sizes": list(t.accepted_sizes) if t.accepted_sizes else None,
        "rows": [row_dict(r) for r in report.rows],
        "totals": {
            "params": t.totals.params,
            "params_unused": t.totals.params_unused,
            "unused_modules": list(t.totals.unused_modules),
            "macs": t.totals.macs,
        },
        "error": None
        if t.error is None
        else {"module": t.error.module, "message": t.error.message, "hint": t.error.hint},
    }
    if t.run is not None:
        r = t.run
        doc["run"] = {
            "seed": r.seed,
            "repeat": r.repeat,
            "forward_ms": r.forward_ms,
            "hook_overhead_ms": r.hook_overhead_ms,
            "weights": r.weights,
            "input_file": r.input_file,
        }
        doc["logits"] = r.logits
        doc["top_k"] = (
            [[{"class": c, "prob": p} for c, p in sample] for sample in r.top_k] if r.top_k else None
        )
    return doc


def render_json(reports: Sequence[Report]) -> str:
    """One document for one input, an array for several."""
    docs = [trace_dict(r) for r in reports]
    return json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n"


def render_jsonl(reports: Sequence[Report]) -> str:
    """One compact document per line, always."""
    return "".join(json.dumps(trace_dict(r), separators=(",", ":")) + "\n" for r in reports)
