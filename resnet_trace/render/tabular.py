"""CSV and Markdown: flat text for scripts and for GitHub, and the one writer of each
(``csv_text``, ``md_row``) that every command's CSV and Markdown goes through."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence

from resnet_trace.printable import printable, visible
from resnet_trace.records import Depth, Report, Row, row_dict, shape_text
from resnet_trace.render.data import model_title
from resnet_trace.units import input_text

# The row fields in the order of the JSON document (records.row_dict, the one description of a
# row); ``conv`` and ``activation`` are flattened. tests/test_document.py checks this list against
# the dicts of many generated traces, so a field added there cannot be missing here.
ROW_COLUMNS = (
    "name",
    "kind",
    "depth",
    "parent",
    "stage",
    "down",
    "in_shape",
    "out_shape",
    "skip",
    "skips",
    "params",
    "params_unused",
    "macs",
    "module_type",
    "kernel",
    "stride",
    "padding",
    "weight_shape",
    "bias",
    "blocks",
    "count",
    "call",
    "calls",
    "saved_bytes",
    "out_bytes",
    "grad_norm",
    "param_grad_norm",
    "time_ms",
    "act_mean",
    "act_std",
    "act_min",
    "act_max",
    "act_zero_fraction",
)
CSV_COLUMNS = ("input", "error", *ROW_COLUMNS)
_BACKTICKS = re.compile("`+")
_ABSENT = {"count": "1", "call": "1", "calls": "1"}  # fields the document leaves out at their default


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return shape_text(value)  # a shape: 1x256x56x56
        return "+".join(str(v) for v in value)  # skips, as in ``skip``
    return str(value)


def csv_cells(row: Row) -> dict[str, str]:
    """The row's JSON fields as CSV cells: shapes as ``1x256x56x56``, ``conv`` and ``activation`` flattened."""
    out = dict(_ABSENT)
    for key, value in row_dict(row).items():
        if key == "conv":
            out.update({k: _cell(v) for k, v in value.items()})
        elif key == "activation":
            out.update({f"act_{k}": _cell(v) for k, v in value.items()})
        else:
            out[key] = _cell(value)
    return out


def csv_text(header: Sequence[str] | None, rows: Iterable[Sequence[object]]) -> str:
    """The one CSV writer: a header (unless ``None``), then the rows, ``\\n`` line ends, quoted as the csv module does.

    Every text cell goes through :func:`~resnet_trace.printable.visible` first: a name holding a
    line break or a control character stays one cell of one line, shown by its escapes."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    if header is not None:
        writer.writerow([_text(c) for c in header])
    writer.writerows([_text(c) for c in row] for row in rows)
    return buf.getvalue()


def _text(cell: object) -> object:
    return visible(cell) if isinstance(cell, str) else cell


def render_csv(reports: Sequence[Report]) -> str:
    """A header, then one line per row of every input; ``\\n`` line ends.

    ``error`` names the module where that input's trace stopped (empty when it ran through),
    so a sweep's failing sizes are visible on every one of their rows.
    """
    return "".join(csv_chunks(reports))


def csv_chunks(reports: Iterable[Report]) -> Iterator[str]:
    """:func:`render_csv`'s text: the header, then each input's rows as one chunk."""
    yield csv_text(CSV_COLUMNS, [])
    for report in reports:
        error = report.trace.error.module if report.trace.error else ""
        given = input_text(report.trace.input_shape, report.trace.inputs)
        lines = []
        for row in report.rows:
            cells = {"input": given, "error": error, **csv_cells(row)}
            lines.append([cells.get(k, "") for k in CSV_COLUMNS])
        yield csv_text(None, lines)


def md_escape(text: str) -> str:
    """A cell's text that cannot break its row or become markup: control characters and line breaks
    as their escapes (:func:`~resnet_trace.printable.visible`), then ``\\`` and ``|`` escaped, and
    ``&``, ``<``, ``>`` as entities (no HTML from a name)."""
    text = visible(text).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_text(text: str) -> str:
    """A line of Markdown prose holding names: control characters as escapes, no HTML."""
    return visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_code(text: str) -> str:
    """``text`` as a code span whose fence no backtick inside it can close."""
    text = visible(text)
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_row(cells: Sequence[str | None]) -> str:
    """The one Markdown row writer: ``| a | b |``; ``None`` is a blank cell written ``| |``."""
    return "|" + "|".join(" " if c is None else f" {md_escape(c)} " for c in cells) + "|"


def md_rule(right: Sequence[bool]) -> str:
    """The line under a header: ``---`` for a left-aligned column, ``---:`` for a right-aligned one."""
    return "|" + "|".join("---:" if r else "---" for r in right) + "|"


def render_markdown(reports: Sequence[Report]) -> str:
    """A GitHub pipe table per input, with totals and any error below it. Every name, message and
    path is shown by :func:`~resnet_trace.printable.printable`, each cell escaped by :func:`md_escape`."""
    return "".join(markdown_chunks(reports))


def markdown_chunks(reports: Iterable[Report]) -> Iterator[str]:
    """:func:`render_markdown`'s text, one input's table at a time."""
    for i, report in enumerate(reports):
        yield ("\n" if i else "") + "\n".join(_markdown_lines(printable([report])[0]))


def _markdown_lines(report: Report) -> list[str]:
    out: list[str] = []
    t = report.trace
    run = t.command == "run"
    out.append(md_text(f"### {t.command} · {model_title(t)} · input {input_text(t.input_shape, t.inputs)}"))
    out.append("")
    header = ["#", "name", "kind", "depth", "parent", "input", "output", "skip", "params", "MACs"]
    if report.depth is Depth.STAGE:
        header += ["blocks"]
    if report.depth is Depth.LAYER:
        header += ["type", "kernel/stride/pad", "weight"]
    if run:
        header += ["time ms", "mean", "std", "zero %"]
    out.append(md_row(header))
    out.append(md_rule([h in ("#", "params", "MACs", "time ms", "mean", "std", "zero %") for h in header]))
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
        if report.depth is Depth.STAGE:
            cells += ["" if row.blocks is None else str(row.blocks)]
        if report.depth is Depth.LAYER:
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
        f"{tot.params_unused:,} params "
        + ("in modules that never ran" if t.model.source == "builtin" else "never read")
        + (f" ({', '.join(md_code(m) for m in tot.unused_modules)})" if tot.unused_modules else "")
        + "."
    )
    if t.error is not None:
        out.append("")
        out.append(
            f"**Stopped at {md_code(t.error.module)}:** {md_text(t.error.message)}. {md_text(t.error.hint)}."
        )
    out.append("")
    return out
