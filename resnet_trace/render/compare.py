"""``compare``: the seed beside its fixed variant, block by block."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict

from rich import box
from rich.console import Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from resnet_trace.memory import human
from resnet_trace.records import Format, Kind, Report, shape_text
from resnet_trace.render.bars import log_bars
from resnet_trace.render.tabular import md_row

TRAIN_FIELDS = ("saved_bytes", "out_bytes", "grad_norm", "param_grad_norm")


def _side(row) -> dict | None:
    if row is None:
        return None
    side = {"skip": row.skip, "params": row.params, "params_unused": row.params_unused, "macs": row.macs}
    for name in TRAIN_FIELDS:  # --train / --backward only, so that other documents keep their keys
        if getattr(row, name, None) is not None:
            side[name] = getattr(row, name)
    return side


def _train(report: Report) -> dict | None:
    info = report.trace.train
    if info is None:
        return None
    return asdict(info)


def _has_train(seed: Report, fixed: Report) -> bool:
    return seed.trace.train is not None or fixed.trace.train is not None


def _has_grads(seed: Report, fixed: Report) -> bool:
    return any(r.grad_norm is not None for r in (*seed.rows, *fixed.rows))


def comparison_doc(seed: Report, fixed: Report) -> dict:
    """Rows matched by name; ``delta`` is fixed minus seed."""
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

    def tot(t) -> dict:
        return {"params": t.params, "params_unused": t.params_unused, "macs": t.macs}

    doc = {
        "schema": "resnet-trace/compare/1",
        "model": {"base_dim": m.base_dim, "num_classes": m.num_classes, "head": str(m.head)},
        "input_shape": list(seed.trace.input_shape),
        "rows": rows,
        "totals": {
            "seed": tot(st),
            "fixed": tot(ft),
            "delta": {"params": ft.params - st.params, "macs": ft.macs - st.macs},
        },
        "errors": {
            "seed": None if seed.trace.error is None else seed.trace.error.module,
            "fixed": None if fixed.trace.error is None else fixed.trace.error.module,
        },
    }
    if _has_train(seed, fixed):
        doc["train"] = {"seed": _train(seed), "fixed": _train(fixed)}
    return doc


def _cells(r: dict) -> list[str]:
    """A compared row's name, skips, params and MACs of both sides and their difference, as text."""
    a, b, d = r["seed"] or {}, r["fixed"] or {}, r["delta"] or {}
    return [
        r["name"],
        a.get("skip") or "",
        b.get("skip") or "",
        f"{a.get('params', 0):,}",
        f"{b.get('params', 0):,}",
        _signed(d.get("params", 0)),
        f"{a.get('macs', 0):,}",
        f"{b.get('macs', 0):,}",
        _signed(d.get("macs", 0)),
    ]


def _signed(n: int) -> str:
    return f"{n:+,}" if n else "0"


def compare_renderables(seed: Report, fixed: Report) -> list[RenderableType]:
    doc = comparison_doc(seed, fixed)
    m = doc["model"]
    table = Table(
        title=f"compare · ResNet(base_dim={m['base_dim']}, num_classes={m['num_classes']}) · "
        f"input {shape_text(seed.trace.input_shape)} · seed beside fixed",
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
    )
    for col, right in (
        ("block", False),
        ("skip: seed", False),
        ("skip: fixed", False),
        ("params: seed", True),
        ("params: fixed", True),
        ("Δ params", True),
        ("MACs: seed", True),
        ("MACs: fixed", True),
        ("Δ MACs", True),
    ):
        table.add_column(col, justify="right" if right else "left")
    train, grads = _has_train(seed, fixed), _has_grads(seed, fixed)
    for col in (("saved: seed", "saved: fixed") if train else ()) + (
        ("‖dL/dout‖: seed", "‖dL/dout‖: fixed", "seed (log10)", "fixed (log10)") if grads else ()
    ):
        table.add_column(col, justify="left" if "log10" in col else "right", no_wrap=True)
    bars: list[str] = []
    if grads:
        values = [(r["seed"] or {}).get("grad_norm") for r in doc["rows"]]
        values += [(r["fixed"] or {}).get("grad_norm") for r in doc["rows"]]
        bars = log_bars(values, width=10)
    n = len(doc["rows"])
    for i, r in enumerate(doc["rows"]):
        a, b, d = r["seed"] or {}, r["fixed"] or {}, r["delta"] or {}
        changed = bool(d.get("params") or d.get("macs") or a.get("skip") != b.get("skip"))
        extra = [_size(a.get("saved_bytes")), _size(b.get("saved_bytes"))] if train else []
        if grads:
            extra += [_sci(a.get("grad_norm")), _sci(b.get("grad_norm")), bars[i], bars[n + i]]
        table.add_row(
            *_cells(r),
            *extra,
            style=None if changed else "dim",
        )
    table.add_section()
    t = doc["totals"]
    table.add_row(
        "total",
        "",
        "",
        f"{t['seed']['params']:,}",
        f"{t['fixed']['params']:,}",
        _signed(t["delta"]["params"]),
        f"{t['seed']['macs']:,}",
        f"{t['fixed']['macs']:,}",
        _signed(t["delta"]["macs"]),
        *(
            [_size(_get(doc, "seed", "activations_bytes")), _size(_get(doc, "fixed", "activations_bytes"))]
            if train
            else []
        ),
        *(["", "", "", ""] if grads else []),
        style="bold",
    )
    same_shape = [
        r["name"]
        for r in doc["rows"]
        if (r["seed"] or {}).get("skip") == "dim_equalizer" and (r["fixed"] or {}).get("skip") == "identity"
    ]
    notes: list[RenderableType] = [table]
    if same_shape:
        notes.append(
            Text(
                f"{len(same_shape)} block(s) run dim_equalizer in the seed although their input and output shapes "
                f"already match ('x.size() is not out.size()' compares identity, so it is always true): "
                f"{', '.join(same_shape)}."
            )
        )
    if t["seed"]["params_unused"]:
        notes.append(
            Text(
                f"The seed also builds {len(seed.trace.totals.unused_modules)} module(s) that never run "
                f"({t['seed']['params_unused']:,} params): {', '.join(seed.trace.totals.unused_modules)}."
            )
        )
    notes.extend(_train_notes(doc))
    return [Group(*notes)]


def _get(doc: dict, side: str, field: str) -> int | float | None:
    info = (doc.get("train") or {}).get(side)
    return None if info is None else info.get(field)


def _size(n: int | float | None) -> str:
    return "" if n is None else human(n)


def _sci(v: float | None) -> str:
    return "" if v is None else f"{v:.2e}"


def _train_notes(doc: dict) -> list[RenderableType]:
    """Peak of a training step and the first block's gradient, seed beside fixed."""
    if "train" not in doc:
        return []
    out: list[RenderableType] = []
    sp, fp = _get(doc, "seed", "peak_bytes"), _get(doc, "fixed", "peak_bytes")
    if sp is not None and fp is not None:
        out.append(
            Text(
                f"Peak of one training step (predicted, {_get(doc, 'seed', 'optimizer')}): seed {human(sp)}, "
                f"fixed {human(fp)} ({(fp - sp) / sp:+.1%})."
            )
        )
    sm, fm = _get(doc, "seed", "measured_peak_bytes"), _get(doc, "fixed", "measured_peak_bytes")
    if sm is not None and fm is not None:
        out.append(Text(f"Measured peak of the backward step: seed {human(sm)}, fixed {human(fm)}."))
    first = next(
        (
            r
            for r in doc["rows"]
            if r["kind"] == Kind.BLOCK
            and (r["seed"] or {}).get("grad_norm") is not None
            and (r["fixed"] or {}).get("grad_norm") is not None
        ),
        None,
    )
    if first is not None:
        a, b = first["seed"]["grad_norm"], first["fixed"]["grad_norm"]
        ratio = f", {b / a:,.3g}x the seed's" if a else ""
        sl, fl = _get(doc, "seed", "loss"), _get(doc, "fixed", "loss")
        losses = f"; loss seed {sl:.4g}, fixed {fl:.4g}" if sl is not None and fl is not None else ""
        out.append(
            Text(
                f"Loss gradient at {first['name']}'s output: seed {a:.3g}, fixed {b:.3g}{ratio} "
                f"(each variant with its own weights{losses})."
            )
        )
    return out


def render_compare(seed: Report, fixed: Report, fmt: Format, *, color: bool = False, width: int = 160) -> str:
    doc = comparison_doc(seed, fixed)
    if fmt in (Format.JSON, Format.JSONL):  # jsonl, as everywhere: the document compact on one line
        return (
            json.dumps(doc, indent=2) + "\n"
            if fmt == Format.JSON
            else json.dumps(doc, separators=(",", ":")) + "\n"
        )
    if fmt == Format.CSV:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            [
                "name",
                "kind",
                "seed_skip",
                "fixed_skip",
                "seed_params",
                "fixed_params",
                "delta_params",
                "seed_macs",
                "fixed_macs",
                "delta_macs",
                *(f"{side}_{f}" for f in TRAIN_FIELDS for side in ("seed", "fixed") if "train" in doc),
            ]
        )
        for r in doc["rows"]:
            a, b, d = r["seed"] or {}, r["fixed"] or {}, r["delta"] or {}
            train = [x.get(f, "") for f in TRAIN_FIELDS for x in (a, b)] if "train" in doc else []
            w.writerow(
                [
                    r["name"],
                    r["kind"],
                    a.get("skip") or "",
                    b.get("skip") or "",
                    a.get("params", ""),
                    b.get("params", ""),
                    d.get("params", ""),
                    a.get("macs", ""),
                    b.get("macs", ""),
                    d.get("macs", ""),
                    *train,
                ]
            )
        return buf.getvalue()
    if fmt == Format.MARKDOWN:
        has_train = "train" in doc
        extra_head = " saved: seed | saved: fixed | ‖dL/dout‖: seed | ‖dL/dout‖: fixed |" if has_train else ""
        lines = [
            "| block | skip: seed | skip: fixed | params: seed | params: fixed | Δ params | MACs: seed "
            "| MACs: fixed | Δ MACs |" + extra_head,
            "|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" * 4 if has_train else ""),
        ]
        for r in doc["rows"]:
            a, b, d = r["seed"] or {}, r["fixed"] or {}, r["delta"] or {}
            extra = (
                [
                    _size(a.get("saved_bytes")),
                    _size(b.get("saved_bytes")),
                    _sci(a.get("grad_norm")),
                    _sci(b.get("grad_norm")),
                ]
                if has_train
                else []
            )
            lines.append(md_row([*_cells(r), *extra]))
        t = doc["totals"]
        lines.append(
            f"| **total** | | | {t['seed']['params']:,} | {t['fixed']['params']:,} "
            f"| {_signed(t['delta']['params'])} | {t['seed']['macs']:,} | {t['fixed']['macs']:,} "
            f"| {_signed(t['delta']['macs'])} |" + (" | | | |" if has_train else "")
        )
        return "\n".join(lines) + "\n"
    from resnet_trace.render.table import console_text, make_console

    items = compare_renderables(seed, fixed)
    if _has_train(seed, fixed) or _has_grads(seed, fixed):  # wider tables: never cut a number short
        probe = make_console(color=False, width=10_000)
        tables = [c for item in items for c in getattr(item, "renderables", [item]) if isinstance(c, Table)]
        width = max([width, *(Measurement.get(probe, probe.options, c).maximum for c in tables)])
    console = make_console(color=color, width=width)
    for r in items:
        console.print(r)
    return console_text(console)
