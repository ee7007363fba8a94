"""``compare``: the seed beside its fixed variant, block by block."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from resnet_trace.records import (
    TRAIN_FIELDS,
    Format,
    Kind,
    Report,
    comparison_dict,
    dumps,
    has_train,
    shape_text,
)
from resnet_trace.render.bars import log_bars
from resnet_trace.render.tabular import csv_text, md_row, md_rule
from resnet_trace.units import human


def _has_grads(seed: Report, fixed: Report) -> bool:
    return any(r.grad_norm is not None for r in (*seed.rows, *fixed.rows))


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


def _total_cells(totals: dict) -> list[str]:
    """The totals row's numbers: params of each side and their difference, then MACs alike."""
    return [
        cell
        for key in ("params", "macs")
        for cell in (f"{totals['seed'][key]:,}", f"{totals['fixed'][key]:,}", _signed(totals["delta"][key]))
    ]


def compare_renderables(seed: Report, fixed: Report) -> list[RenderableType]:
    doc = comparison_dict(seed, fixed)
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
    train, grads = has_train(seed, fixed), _has_grads(seed, fixed)
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
        *_total_cells(t),
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
    doc = comparison_dict(seed, fixed)
    if fmt in (Format.JSON, Format.JSONL):  # jsonl, as everywhere: the document compact on one line
        return dumps(doc, indent=2 if fmt == Format.JSON else None)
    if fmt == Format.CSV:
        header = [
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
        cells: list[list] = []
        for r in doc["rows"]:
            a, b, d = r["seed"] or {}, r["fixed"] or {}, r["delta"] or {}
            train = [x.get(f, "") for f in TRAIN_FIELDS for x in (a, b)] if "train" in doc else []
            cells.append(
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
        return csv_text(header, cells)
    if fmt == Format.MARKDOWN:
        with_train = "train" in doc
        header = ["block", "skip: seed", "skip: fixed", "params: seed", "params: fixed", "Δ params"]
        header += ["MACs: seed", "MACs: fixed", "Δ MACs"]
        header += ["saved: seed", "saved: fixed", "‖dL/dout‖: seed", "‖dL/dout‖: fixed"] if with_train else []
        lines = [md_row(header), md_rule([False] * 3 + [True] * (len(header) - 3))]
        for r in doc["rows"]:
            a, b, d = r["seed"] or {}, r["fixed"] or {}, r["delta"] or {}
            extra = (
                [
                    _size(a.get("saved_bytes")),
                    _size(b.get("saved_bytes")),
                    _sci(a.get("grad_norm")),
                    _sci(b.get("grad_norm")),
                ]
                if with_train
                else []
            )
            lines.append(md_row([*_cells(r), *extra]))
        t = doc["totals"]
        tot: list[str | None] = ["**total**", None, None, *_total_cells(t)]
        lines.append(md_row(tot + [None] * 4 if with_train else tot))
        return "\n".join(lines) + "\n"
    from resnet_trace.render.table import console_text, make_console

    items = compare_renderables(seed, fixed)
    if has_train(seed, fixed) or _has_grads(seed, fixed):  # wider tables: never cut a number short
        probe = make_console(color=False, width=10_000)
        tables = [c for item in items for c in getattr(item, "renderables", [item]) if isinstance(c, Table)]
        width = max([width, *(Measurement.get(probe, probe.options, c).maximum for c in tables)])
    console = make_console(color=color, width=width)
    for r in items:
        console.print(r)
    return console_text(console)
