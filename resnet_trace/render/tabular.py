"""CSV and Markdown: flat text for scripts and for GitHub."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from resnet_trace.records import Report, Row, shape_text
from resnet_trace.render.data import model_title

CSV_COLUMNS = (
    "input",
    "error",
    "name",
    "kind",
    "depth",
    "parent",
    "stage",
    "down",
    "in_shape",
    "out_shape",
    "skip",
    "params",
    "params_unused",
    "macs",
    "count",
    "blocks",
    "module_type",
    "kernel",
    "stride",
    "padding",
    "weight_shape",
    "bias",
    "time_ms",
    "act_mean",
    "act_std",
    "act_min",
    "act_max",
    "act_zero_fraction",
)


def _flag(value: bool | None) -> str:
    return "" if value is None else ("true" if value else "false")


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def csv_cells(row: Row) -> dict[str, str]:
    c, a = row.conv, row.activation
    return {
        "name": row.name,
        "kind": row.kind,
        "depth": row.depth.value,
        "parent": row.parent or "",
        "stage": row.stage or "",
        "down": _flag(row.down),
        "in_shape": shape_text(row.in_shape),
        "out_shape": shape_text(row.out_shape),
        "skip": row.skip or "",
        "params": str(row.params),
        "params_unused": str(row.params_unused),
        "macs": str(row.macs),
        "count": str(row.count),
        "blocks": "" if row.blocks is None else str(row.blocks),
        "module_type": row.module_type or "",
        "kernel": shape_text(c.kernel) if c else "",
        "stride": shape_text(c.stride) if c else "",
        "padding": shape_text(c.padding) if c else "",
        "weight_shape": shape_text(c.weight_shape) if c else "",
        "bias": _flag(c.bias) if c else "",
        "time_ms": _num(row.time_ms),
        "act_mean": _num(a.mean) if a else "",
        "act_std": _num(a.std) if a else "",
        "act_min": _num(a.min) if a else "",
        "act_max": _num(a.max) if a else "",
        "act_zero_fraction": _num(a.zero_fraction) if a else "",
    }


def render_csv(reports: Sequence[Report]) -> str:
    """A header, then one line per row of every input; ``\\n`` line ends.

    ``error`` names the module where that input's trace stopped (empty when it ran through),
    so a sweep's failing sizes are visible on every one of their rows.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for report in reports:
        for row in report.rows:
            error = report.trace.error.module if report.trace.error else ""
            writer.writerow({"input": shape_text(report.trace.input_shape), "error": error, **csv_cells(row)})
    return buf.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md_escape(c) for c in cells) + " |"


def render_markdown(reports: Sequence[Report]) -> str:
    """A GitHub pipe table per input, with totals and any error below it."""
    out: list[str] = []
    for report in reports:
        t = report.trace
        run = t.command == "run"
        out.append(f"### {t.command} · {model_title(t)} · input {shape_text(t.input_shape)}")
        out.append("")
        header = ["#", "name", "kind", "depth", "parent", "input", "output", "skip", "params", "MACs"]
        if report.depth.value == "stage":
            header += ["blocks"]
        if report.depth.value == "layer":
            header += ["type", "kernel/stride/pad", "weight"]
        if run:
            header += ["time ms", "mean", "std", "zero %"]
        out.append(md_row(header))
        out.append(
            "|"
            + "|".join(
                "---:" if h in ("#", "params", "MACs", "time ms", "mean", "std", "zero %") else "---"
                for h in header
            )
            + "|"
        )
        for i, row in enumerate(report.rows, 1):
            name = row.name + (f" ×{row.count}" if row.count > 1 else "")
            cells = [
                str(i),
                name,
                row.kind,
                row.depth.value,
                row.parent or "",
                shape_text(row.in_shape),
                shape_text(row.out_shape),
                row.skip or "",
                f"{row.params:,}",
                f"{row.macs:,}",
            ]
            if report.depth.value == "stage":
                cells += ["" if row.blocks is None else str(row.blocks)]
            if report.depth.value == "layer":
                c = row.conv
                cells += [
                    row.module_type or "",
                    f"{shape_text(c.kernel)}/{shape_text(c.stride)}/{shape_text(c.padding)}" if c else "",
                    (shape_text(c.weight_shape) + (" +bias" if c.bias else "")) if c else "",
                ]
            if run:
                a = row.activation
                cells += [
                    f"{row.time_ms:.3f}" if row.time_ms is not None else "",
                    f"{a.mean:.4g}" if a else "",
                    f"{a.std:.4g}" if a else "",
                    f"{a.zero_fraction * 100:.1f}" if a else "",
                ]
            out.append(md_row(cells))
        out.append("")
        tot = t.totals
        scope = " (whole model; rows filtered)" if report.filter else ""
        out.append(
            f"**Totals{scope}:** {tot.params:,} params, {tot.macs:,} MACs, "
            f"{tot.params_unused:,} params in modules that never ran"
            + (f" ({', '.join(f'`{m}`' for m in tot.unused_modules)})" if tot.unused_modules else "")
            + "."
        )
        if t.error is not None:
            out.append("")
            out.append(f"**Stopped at `{t.error.module}`:** {t.error.message}. {t.error.hint}.")
        out.append("")
    return "\n".join(out)
