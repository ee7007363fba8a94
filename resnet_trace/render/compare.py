"""``compare``: the seed beside its fixed variant, block by block."""

from __future__ import annotations

import csv
import io
import json

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from resnet_trace.records import Report, shape_text


def _side(row) -> dict | None:
    if row is None:
        return None
    return {"skip": row.skip, "params": row.params, "params_unused": row.params_unused, "macs": row.macs}


def comparison_doc(seed: Report, fixed: Report) -> dict:
    """Rows matched by name; ``delta`` is fixed minus seed."""
    s_rows = {r.name: r for r in seed.rows}
    f_rows = {r.name: r for r in fixed.rows}
    names = [r.name for r in seed.rows] + [n for n in f_rows if n not in s_rows]
    rows = []
    for name in names:
        a, b = s_rows.get(name), f_rows.get(name)
        row = {"name": name, "kind": (a or b).kind, "seed": _side(a), "fixed": _side(b)}
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

    return {
        "schema": "resnet-trace/compare/1",
        "model": {"base_dim": m.base_dim, "num_classes": m.num_classes, "head": m.head},
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
    for r in doc["rows"]:
        a, b, d = r["seed"] or {}, r["fixed"] or {}, r["delta"] or {}
        changed = bool(d.get("params") or d.get("macs") or a.get("skip") != b.get("skip"))
        table.add_row(
            r["name"],
            a.get("skip") or "",
            b.get("skip") or "",
            f"{a.get('params', 0):,}",
            f"{b.get('params', 0):,}",
            _signed(d.get("params", 0)),
            f"{a.get('macs', 0):,}",
            f"{b.get('macs', 0):,}",
            _signed(d.get("macs", 0)),
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
    return [Group(*notes)]


def render_compare(seed: Report, fixed: Report, fmt: str, *, color: bool = False, width: int = 160) -> str:
    doc = comparison_doc(seed, fixed)
    if fmt in ("json", "jsonl"):
        return json.dumps(doc, indent=2 if fmt == "json" else None) + "\n"
    if fmt == "csv":
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
            ]
        )
        for r in doc["rows"]:
            a, b, d = r["seed"] or {}, r["fixed"] or {}, r["delta"] or {}
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
                ]
            )
        return buf.getvalue()
    if fmt == "markdown":
        lines = [
            "| block | skip: seed | skip: fixed | params: seed | params: fixed | Δ params | MACs: seed "
            "| MACs: fixed | Δ MACs |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in doc["rows"]:
            a, b, d = r["seed"] or {}, r["fixed"] or {}, r["delta"] or {}
            lines.append(
                f"| {r['name']} | {a.get('skip') or ''} | {b.get('skip') or ''} | {a.get('params', 0):,} "
                f"| {b.get('params', 0):,} | {_signed(d.get('params', 0))} | {a.get('macs', 0):,} "
                f"| {b.get('macs', 0):,} | {_signed(d.get('macs', 0))} |"
            )
        t = doc["totals"]
        lines.append(
            f"| **total** | | | {t['seed']['params']:,} | {t['fixed']['params']:,} "
            f"| {_signed(t['delta']['params'])} | {t['seed']['macs']:,} | {t['fixed']['macs']:,} "
            f"| {_signed(t['delta']['macs'])} |"
        )
        return "\n".join(lines) + "\n"
    from resnet_trace.render.table import console_text, make_console

    console = make_console(color=color, width=width)
    for r in compare_renderables(seed, fixed):
        console.print(r)
    return console_text(console)
