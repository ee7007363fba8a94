"""The differences found by ``check`` and ``diff``, in every format."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from resnet_trace.printable import printable, visible
from resnet_trace.records import Difference, Format, differences_dict, dumps, json_cell, shape_text
from resnet_trace.render.tabular import csv_text, md_code, md_row, md_rule


def csv_value(value: object) -> str:
    """Plain cells for scripts: raw integers, shapes as ``1x256x56x56``, empty for none."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return shape_text(value)
    if isinstance(value, (list, dict)):
        return json_cell(value)
    return str(value)


def fmt_value(value: object) -> str:
    """A value for people (table, Markdown): shapes as ``1x256x56x56``, counts with commas, ``-`` for none."""
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return shape_text(value) or "[]"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if value is None:
        return "-"
    return str(value) if not isinstance(value, (list, dict)) else json_cell(value)


#: The table format shows at most this many differences (Rich lays out every row it is given), then
#: a line saying how many more; json, jsonl, csv and markdown list every one (docs/cli.md#diff).
MAX_TABLE_ROWS = 1_000


def render_differences(
    diffs: Sequence[Difference],
    fmt: Format,
    *,
    expected: str,
    got: str,
    color: bool = False,
    width: int = 160,
) -> str:
    if fmt in (Format.JSON, Format.JSONL):  # jsonl, as everywhere: the document compact on one line
        return dumps(differences_dict(diffs, expected, got), indent=2 if fmt == Format.JSON else None)
    # A golden's names, values and paths are data: shown by their escapes, never as terminal codes.
    total = len(diffs)
    if fmt not in (Format.CSV, Format.MARKDOWN):  # the table: only the rows it shows
        diffs = diffs[:MAX_TABLE_ROWS]
    diffs, expected, got = printable(list(diffs)), visible(expected), visible(got)
    if fmt == Format.CSV:
        return csv_text(
            ["row", "field", "expected", "got"],
            ([d.row, d.field, csv_value(d.expected), csv_value(d.got)] for d in diffs),
        )
    if fmt == Format.MARKDOWN:
        lines = [
            f"Comparing {md_code(expected)} (expected) with {md_code(got)} (got): "
            + (f"{len(diffs)} difference(s)." if diffs else "no differences."),
            "",
        ]
        if diffs:
            lines += [md_row(["row", "field", "expected", "got"]), md_rule([False] * 4)]
            lines += [md_row([d.row, d.field, fmt_value(d.expected), fmt_value(d.got)]) for d in diffs]
        return "\n".join(lines) + "\n"
    from resnet_trace.render.table import console_text, make_console

    console = make_console(color=color, width=width)
    if not diffs:
        console.print(Text(f"no differences: {got} matches {expected}"))
    else:
        table = Table(
            title=f"{total} difference(s): expected {expected}, got {got}",
            box=box.SIMPLE_HEAD,
            title_justify="left",
            pad_edge=False,
        )
        for col in ("row", "field", "expected", "got"):
            table.add_column(col)
        for d in diffs:
            table.add_row(d.row, d.field, fmt_value(d.expected), fmt_value(d.got))
        console.print(table)
        if total > len(diffs):
            console.print(
                Text(
                    f"... and {total - len(diffs):,} more difference(s), not shown: the table stops at "
                    f"{MAX_TABLE_ROWS:,} rows; --format json, jsonl or csv lists every one"
                )
            )
    return console_text(console)
