"""The differences found by ``check`` and ``diff``, in every format."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from resnet_trace.diffing import Difference, fmt_value
from resnet_trace.records import Format
from resnet_trace.render.tabular import md_row


def csv_value(value: object) -> str:
    """Plain cells for scripts: raw integers, shapes as ``1x256x56x56``, empty for none."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return "x".join(map(str, value))
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def differences_doc(diffs: Sequence[Difference], expected: str, got: str) -> dict:
    return {
        "schema": "resnet-trace/diff/1",
        "expected": expected,
        "got": got,
        "equal": not diffs,
        "differences": [
            {"row": d.row, "field": d.field, "expected": d.expected, "got": d.got} for d in diffs
        ],
    }


def render_differences(
    diffs: Sequence[Difference],
    fmt: Format,
    *,
    expected: str,
    got: str,
    color: bool = False,
    width: int = 160,
) -> str:
    if fmt == Format.JSON:
        return json.dumps(differences_doc(diffs, expected, got), indent=2) + "\n"
    if fmt == Format.JSONL:  # as everywhere: each document compact on one line
        return json.dumps(differences_doc(diffs, expected, got), separators=(",", ":")) + "\n"
    if fmt == Format.CSV:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["row", "field", "expected", "got"])
        for d in diffs:
            w.writerow([d.row, d.field, csv_value(d.expected), csv_value(d.got)])
        return buf.getvalue()
    if fmt == Format.MARKDOWN:
        lines = [
            f"Comparing `{expected}` (expected) with `{got}` (got): "
            + (f"{len(diffs)} difference(s)." if diffs else "no differences."),
            "",
        ]
        if diffs:
            lines += ["| row | field | expected | got |", "|---|---|---|---|"]
            lines += [md_row([d.row, d.field, fmt_value(d.expected), fmt_value(d.got)]) for d in diffs]
        return "\n".join(lines) + "\n"
    from resnet_trace.render.table import console_text, make_console

    console = make_console(color=color, width=width)
    if not diffs:
        console.print(Text(f"no differences: {got} matches {expected}"))
    else:
        table = Table(
            title=f"{len(diffs)} difference(s): expected {expected}, got {got}",
            box=box.SIMPLE_HEAD,
            title_justify="left",
            pad_edge=False,
        )
        for col in ("row", "field", "expected", "got"):
            table.add_column(col)
        for d in diffs:
            table.add_row(d.row, d.field, fmt_value(d.expected), fmt_value(d.got))
        console.print(table)
    return console_text(console)
