"""The Rich table: one section per stage, totals, the unused modules, any error."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from resnet_trace.records import Report, Row, Trace
from resnet_trace.render.data import shape_text

SPARK = "▁▂▃▄▅▆▇█"


def _title(t: Trace) -> str:
    m = t.model
    what = "ResNet" if m.source == "builtin" else m.source
    config = f"{what}(base_dim={m.base_dim}, num_classes={m.num_classes})"
    extras = []
    if m.variant != "seed":
        extras.append(f"variant {m.variant}")
    if m.head != "avgpool7":
        extras.append(f"head {m.head}")
    extra = (" · " + " · ".join(extras)) if extras else ""
    return f"{t.command} · {config}{extra} · input {shape_text(t.input_shape)} · {t.device} {t.dtype}"


def _spark(rows: Sequence[Row]) -> dict[int, str]:
    """A bar per row for the scale (std) of its output, on a log scale across the rows shown."""
    stds = {i: r.activation.std for i, r in enumerate(rows) if r.activation and r.activation.std > 0}
    if not stds:
        return {}
    logs = {i: math.log10(s) for i, s in stds.items()}
    lo, hi = min(logs.values()), max(logs.values())
    span = (hi - lo) or 1.0
    return {i: SPARK[round((v - lo) / span * (len(SPARK) - 1))] for i, v in logs.items()}


def trace_table(report: Report) -> Table:
    t = report.trace
    run = any(r.time_ms is not None or r.activation is not None for r in report.rows)
    layer = report.depth.value == "layer"
    table = Table(title=_title(t), box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("stage" if report.depth.value == "stage" else "block")
    if layer:
        table.add_column("type")
        table.add_column("k/s/p")
    table.add_column("input")
    table.add_column("output")
    table.add_column("skip")
    table.add_column("params", justify="right")
    table.add_column("MACs", justify="right")
    if run:
        for name in ("time ms", "mean", "std", "zero %", "scale"):
            table.add_column(name, justify="right" if name != "scale" else "left")
    sparks = _spark(report.rows) if run else {}
    number = 0
    group = None
    for i, row in enumerate(report.rows):
        g = row.stage or (row.parent if row.depth.value == "layer" else None) or row.name
        if row.kind == "bottleneck":
            g = row.stage or row.name
        elif row.kind in ("pool", "fc"):
            g = "head"
        if group is not None and g != group and row.depth.value != "layer":
            table.add_section()
        if row.depth.value != "layer":
            group = g
        if row.kind == "bottleneck":
            number += row.count
        indent = "  " if row.depth.value == "layer" else ""
        name = indent + (
            row.name.rpartition(".")[2] if row.depth.value == "layer" and row.parent else row.name
        )
        if row.depth.value == "layer" and row.parent:
            name = indent + row.name[len(row.parent) + 1 :]
        if row.count > 1:
            name += f" ×{row.count}"
        num = ""
        if row.kind == "bottleneck":
            num = str(number) if row.count == 1 else f"{number - row.count + 1}–{number}"
        cells = [num, name]
        if layer:
            c = row.conv
            cells += [
                row.module_type if row.depth.value == "layer" else "",
                f"{c.kernel[0]}/{c.stride[0]}/{c.padding[0]}" if c else "",
            ]
        skip = row.skip or ""
        if row.skip and row.down:
            skip += " ↓"
        cells += [
            shape_text(row.in_shape),
            shape_text(row.out_shape),
            skip,
            f"{row.params:,}" + (f" ({row.params_unused:,} unused)" if row.params_unused else ""),
            f"{row.macs:,}",
        ]
        if run:
            a = row.activation
            cells += [
                f"{row.time_ms:.2f}" if row.time_ms is not None else "",
                f"{a.mean:.3g}" if a else "",
                f"{a.std:.3g}" if a else "",
                f"{a.zero_fraction * 100:.1f}" if a else "",
                sparks.get(i, ""),
            ]
        style = "dim" if row.depth.value == "layer" else None
        table.add_row(*cells, style=style)
    table.add_section()
    tot = t.totals
    label = "total (whole model)" if report.filter else "total"
    cells = ["", label]
    if layer:
        cells += ["", ""]
    cells += ["", shape_text(t.output_shape), "", f"{tot.params:,}", f"{tot.macs:,}"]
    if run:
        cells += [f"{t.run.forward_ms:.2f}" if t.run else "", "", "", "", ""]
    table.add_row(*cells, style="bold")
    return table


def notes(report: Report) -> list[RenderableType]:
    t = report.trace
    tot = t.totals
    out: list[RenderableType] = []
    if tot.unused_modules and t.error is not None:
        out.append(
            Text(
                f"Did not run before the trace stopped: {len(tot.unused_modules)} module(s) holding "
                f"{tot.params_unused:,} params."
            )
        )
    elif tot.unused_modules:
        out.append(
            Text(
                f"Never ran: {len(tot.unused_modules)} module(s) holding {tot.params_unused:,} params "
                f"({', '.join(tot.unused_modules)}); they are counted in the total, as in the seed's checkpoints."
            )
        )
    if report.filter:
        out.append(Text(f"Rows filtered by '{report.filter}'; totals cover the whole model."))
    if t.run is not None:
        r = t.run
        bits = [f"forward {r.forward_ms:.2f} ms"]
        if r.repeat > 1:
            bits.append(f"median of {r.repeat} timed passes after a warm-up")
        if r.hook_overhead_ms is not None:
            bits.append(f"hook overhead {r.hook_overhead_ms:.2f} ms")
        out.append(Text("Timing: " + ", ".join(bits) + "."))
        if r.top_k:
            for n, sample in enumerate(r.top_k[:4]):
                classes = ", ".join(f"{c}: {p:.3f}" for c, p in sample)
                out.append(Text(f"Top {len(sample)} of sample {n}: {classes}"))
            if len(r.top_k) > 4:
                out.append(Text(f"(top-k of {len(r.top_k) - 4} more samples in --format json)"))
    if t.error is not None:
        out.append(Text(f"✗ stopped at {t.error.module}: {t.error.message}", style="bold red"))
        out.append(Text(f"  hint: {t.error.hint}"))
    return out


def sweep_table(reports: Sequence[Report]) -> Table:
    """Which inputs pass and which fail, when several were traced."""
    table = Table(title="inputs", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for name, justify in (("input", "left"), ("result", "left"), ("output", "left"), ("MACs", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for report in reports:
        t = report.trace
        result = "ok" if t.error is None else f"stopped at {t.error.module}"
        table.add_row(
            shape_text(t.input_shape),
            Text(result, style="green" if t.error is None else "red"),
            shape_text(t.output_shape),
            f"{t.totals.macs:,}" if t.error is None else "",
        )
    passed = sum(1 for r in reports if r.trace.error is None)
    table.caption = f"{passed} of {len(reports)} inputs ran through"
    return table


def renderables(reports: Sequence[Report], *, tables: bool = True) -> list[RenderableType]:
    out: list[RenderableType] = []
    for report in reports:
        if tables:
            out.append(trace_table(report))
            out.extend(notes(report))
            out.append(Text(""))
    if len(reports) > 1:
        out.append(sweep_table(reports))
    return out


def make_console(*, color: bool, width: int, record: bool = False) -> Console:
    return Console(
        file=io.StringIO(),
        width=width,
        force_terminal=color,
        no_color=not color,
        color_system="auto" if color else None,
        markup=False,
        highlight=False,
        emoji=False,
        record=record,
        legacy_windows=False,
    )


def render_table(reports: Sequence[Report], *, color: bool = False, width: int = 160) -> str:
    console = make_console(color=color, width=width)
    console.print(Group(*renderables(reports)))
    return console_text(console)


def console_text(console: Console) -> str:
    """What a ``make_console`` console printed, without the padding Rich adds at line ends."""
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return "".join(line.rstrip() + "\n" for line in text.splitlines())


def render_svg(reports: Sequence[Report], *, width: int = 140, title: str = "resnet-trace") -> str:
    """The table as a deterministic SVG picture (fixed width, fixed ids)."""
    return svg_of(renderables(reports), width=width, title=title)


def svg_of(items: Sequence[RenderableType], *, width: int = 140, title: str = "resnet-trace") -> str:
    console = make_console(color=True, width=width, record=True)
    console.print(Group(*items))
    return console.export_svg(title=title, unique_id="resnet-trace")
