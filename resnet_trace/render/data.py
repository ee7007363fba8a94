"""The JSON document (schema ``resnet-trace/1``), also the source of CSV and Markdown cells."""

from __future__ import annotations

from collections.abc import Sequence

from resnet_trace.document import dumps
from resnet_trace.records import Report, Row, Shape, Trace

SCHEMA_ID = "resnet-trace/1"


def shape_list(shape: Shape | None) -> list[int] | None:
    return list(shape) if shape is not None else None


def row_dict(row: Row) -> dict:
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
    if row.saved_bytes is not None:
        d["saved_bytes"] = row.saved_bytes
    if row.out_bytes is not None:
        d["out_bytes"] = row.out_bytes
    if row.grad_norm is not None:
        d["grad_norm"] = row.grad_norm
    if row.param_grad_norm is not None:
        d["param_grad_norm"] = row.param_grad_norm
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
            "variant": str(m.variant),  # plain words in the document: a Variant/Head, or "custom"
            "head": str(m.head),
            "source": m.source,
            "block": m.block,
            "skip": list(m.skip),
            "class": m.model_class,
            "params": m.model_params,
            "args": {k: v for k, v in m.args},
            "block_found": m.block_found,
        },
        "device": t.device,
        "dtype": t.dtype,
        "input_shape": list(t.input_shape),
        "output_shape": shape_list(t.output_shape),
        "outputs": [{"path": o.path, "shape": list(o.shape), "dtype": o.dtype} for o in t.outputs],
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
    if t.totals.activations_bytes is not None:
        doc["totals"]["activations_bytes"] = t.totals.activations_bytes
    if t.train is not None:
        doc["train"] = {f: getattr(t.train, f) for f in t.train.__dataclass_fields__}
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
    return dumps(docs[0] if len(docs) == 1 else docs)


def render_jsonl(reports: Sequence[Report]) -> str:
    """One compact document per line, always."""
    return "".join(dumps(trace_dict(r), indent=None) for r in reports)


def model_title(t: Trace) -> str:
    """``ResNet(base_dim=64, num_classes=2)`` for the seed; for a ``--model``, the class built, its
    parameters and the arguments it was given: ``ViTForImageClassification (86,567,656 params)
    from vit.py:build(layers=2)``."""
    m = t.model
    if m.source == "builtin":
        return f"ResNet(base_dim={m.base_dim}, num_classes={m.num_classes})"
    args = ", ".join(f"{k}={v}" for k, v in m.args)
    params = f" ({m.model_params:,} params)" if m.model_params is not None else ""
    built = f"{m.model_class}{params}" if m.model_class else m.source
    return f"{built} from {m.source}({args})" if m.source != "python" else built
