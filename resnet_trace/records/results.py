"""What each command returns: frozen records with ``to_dict()``/``to_json()``, exactly the CLI's
``--format json`` document. ``Report`` (``summary``/``run``; several inputs print as an array),
``Differences`` (``check``/``diff``), ``Comparison`` (``compare``) and ``ModuleTree`` (``tree``).
No torch here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from resnet_trace.records.dicts import (
    COMPARE_SCHEMA_ID,
    SCHEMA_ID,
    differences_dict,
    dumps,
    finite,
    row_dict,
    shape_list,
    tree_dict,
)
from resnet_trace.records.trace import (
    Difference,
    ModelInfo,
    OutputInfo,
    Row,
    RunInfo,
    Totals,
    Trace,
    TraceError,
    TrainInfo,
    TreeNode,
)
from resnet_trace.records.words import Depth
from resnet_trace.units import Shape


class _Document:
    """``to_dict()``: the record's JSON document; ``to_json()``: that document written by ``dumps``."""

    __slots__ = ()

    def to_dict(self) -> Any:  # pragma: no cover - every record below has its own
        raise NotImplementedError

    def to_json(self) -> str:
        return dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class Report(_Document):
    """A trace and the rows chosen to show it (depth, collapse, filter): what renderers read."""

    trace: Trace
    rows: tuple[Row, ...]
    depth: Depth = Depth.BLOCK
    collapsed: bool = False
    filter: str | None = None

    def to_dict(self) -> dict:
        """The trace document (schema ``resnet-trace/1``) of these rows."""
        return finite(trace_dict(self))

    # The trace's own fields, read through the report (``trace(...).totals``).
    @property
    def totals(self) -> Totals:
        return self.trace.totals

    @property
    def model(self) -> ModelInfo:
        return self.trace.model

    @property
    def error(self) -> TraceError | None:
        return self.trace.error

    @property
    def input_shape(self) -> Shape:
        return self.trace.input_shape

    @property
    def output_shape(self) -> Shape | None:
        return self.trace.output_shape

    @property
    def outputs(self) -> tuple[OutputInfo, ...]:
        return self.trace.outputs

    @property
    def run(self) -> RunInfo | None:
        return self.trace.run

    @property
    def train(self) -> TrainInfo | None:
        return self.trace.train


@dataclass(frozen=True, slots=True)
class Differences(_Document):
    """What ``check`` and ``diff`` found: ``differences`` is empty when the traces agree."""

    expected: str
    got: str
    differences: tuple[Difference, ...]

    def to_dict(self) -> dict:
        return finite(differences_dict(self.differences, self.expected, self.got))


@dataclass(frozen=True, slots=True)
class Comparison(_Document):
    """``compare``: the seed beside its fixed variant."""

    seed: Report
    fixed: Report

    def to_dict(self) -> dict:
        return finite(comparison_dict(self.seed, self.fixed))


@dataclass(frozen=True, slots=True)
class ModuleTree(_Document):
    """``tree``: the module tree, marked with what ran in a trace of ``input_shape``."""

    root: TreeNode
    input_shape: Shape
    error: TraceError | None = None

    def to_dict(self) -> dict:
        return tree_dict(self.root)


def _output_dict(o: OutputInfo) -> dict:
    doc: dict = {"path": o.path, "shape": list(o.shape), "dtype": o.dtype}
    if o.stats is not None:  # run: what the values are like, whatever their number
        doc["stats"] = {f: getattr(o.stats, f) for f in ("mean", "std", "min", "max", "zero_fraction")}
    return doc


def trace_dict(report: Report) -> dict:
    """The trace document of ``report`` (``Report.to_dict`` is this with non-finite floats as ``null``)."""
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
        "outputs": [_output_dict(o) for o in t.outputs],
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
    if t.inputs:  # several tensors, named ones or not floating: each one (input_shape is the first's)
        doc["inputs"] = [
            {"name": i.name, "shape": list(i.shape), "dtype": i.dtype, "low": i.low, "high": i.high}
            for i in t.inputs
        ]
    if t.totals.activations_bytes is not None:
        doc["totals"]["activations_bytes"] = t.totals.activations_bytes
    if t.train is not None:
        doc["train"] = {f: getattr(t.train, f) for f in t.train.__dataclass_fields__}
        doc["train"]["ranks"] = [{f: getattr(r, f) for f in r.__dataclass_fields__} for r in t.train.ranks]
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


#: Per-row fields a compared side carries only with ``--train``/``--backward``.
TRAIN_FIELDS = ("saved_bytes", "out_bytes", "grad_norm", "param_grad_norm")


def _side(row: Row | None) -> dict | None:
    if row is None:
        return None
    side = {"skip": row.skip, "params": row.params, "params_unused": row.params_unused, "macs": row.macs}
    for name in TRAIN_FIELDS:  # --train / --backward only, so that other documents keep their keys
        if getattr(row, name, None) is not None:
            side[name] = getattr(row, name)
    return side


def has_train(seed: Report, fixed: Report) -> bool:
    """Either side traced a training step (``--train``/``--backward``)."""
    return seed.trace.train is not None or fixed.trace.train is not None


def _totals(t: Totals) -> dict:
    return {"params": t.params, "params_unused": t.params_unused, "macs": t.macs}


def comparison_dict(seed: Report, fixed: Report) -> dict:
    """The ``resnet-trace/compare/1`` document: rows matched by name; ``delta`` is fixed minus seed."""
    s_rows = {r.name: r for r in seed.rows}
    f_rows = {r.name: r for r in fixed.rows}
    names = [r.name for r in seed.rows] + [n for n in f_rows if n not in s_rows]
    rows = []
    for name in names:
        a, b = s_rows.get(name), f_rows.get(name)
        either = a if a is not None else b
        assert either is not None  # every name comes from one side or the other
        row = {"name": name, "kind": either.kind.value, "seed": _side(a), "fixed": _side(b)}
        row["delta"] = (
            {"params": b.params - a.params, "macs": b.macs - a.macs}
            if a is not None and b is not None
            else None
        )
        rows.append(row)
    st, ft = seed.trace.totals, fixed.trace.totals
    m = seed.trace.model
    doc = {
        "schema": COMPARE_SCHEMA_ID,
        "model": {"base_dim": m.base_dim, "num_classes": m.num_classes, "head": str(m.head)},
        "input_shape": list(seed.trace.input_shape),
        "rows": rows,
        "totals": {
            "seed": _totals(st),
            "fixed": _totals(ft),
            "delta": {"params": ft.params - st.params, "macs": ft.macs - st.macs},
        },
        "errors": {
            "seed": None if seed.trace.error is None else seed.trace.error.module,
            "fixed": None if fixed.trace.error is None else fixed.trace.error.module,
        },
    }
    if has_train(seed, fixed):
        doc["train"] = {
            "seed": None if seed.trace.train is None else asdict(seed.trace.train),
            "fixed": None if fixed.trace.train is None else asdict(fixed.trace.train),
        }
    return doc
