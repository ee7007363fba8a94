"""How a command's result leaves: the one format switch, the notes and stop lines on stderr, the exit code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_trace.cli.files import write_output
from resnet_trace.cli.streams import _color, _say
from resnet_trace.errors import ExitCode, UsageError
from resnet_trace.records import Format, Report

if TYPE_CHECKING:  # the groups' types only: options sits above output
    from resnet_trace.cli.options import OutputFlags, RowFlags


def render(reports: list[Report], fmt: Format, output: Path | None) -> Iterator[str]:
    """The one format switch: the reports' text in ``fmt``, one input at a time (a sweep of
    10,000 inputs is written as it is rendered, never held whole)."""
    if fmt is Format.JSON:
        from resnet_trace.render.data import json_chunks

        return json_chunks(reports)
    if fmt is Format.JSONL:
        from resnet_trace.render.data import jsonl_chunks

        return jsonl_chunks(reports)
    if fmt is Format.CSV:
        from resnet_trace.render.tabular import csv_chunks

        return csv_chunks(reports)
    if fmt is Format.MARKDOWN:
        from resnet_trace.render.tabular import markdown_chunks

        return markdown_chunks(reports)
    from resnet_trace.render.table import table_chunks

    color, width = _color(output)
    return table_chunks(reports, color=color, width=width)


def save_svg(reports: list[Report], svg: Path | None) -> None:
    if svg is not None:
        from resnet_trace.render.table import render_svg

        write_output(render_svg(reports), svg, "--svg")


def reports_of(traces: list, rows: RowFlags) -> list[Report]:
    """Each trace's rows as ``--depth``, ``--collapse`` and ``--filter`` choose them."""
    from resnet_trace.goldens import report

    return [report(t, depth=rows.depth, collapse=rows.collapse, filter=rows.filter) for t in traces]


def finish(traces: list, reports: list[Report], out: OutputFlags) -> int:
    """Notes on stderr, the reports in ``--format`` to stdout or ``-o`` (and ``--svg``), the exit code."""
    fmt = out.format
    if reports and reports[0].filter and not any(r.rows for r in reports):
        raise UsageError(f"--filter {reports[0].filter!r} matches no row")
    for note in dict.fromkeys(n for t in traces for n in t.notes):
        _say(note)
    m = traces[0].model if traces else None
    if m is not None and m.block_found and fmt in (Format.TABLE, Format.MARKDOWN):
        how = {
            "repeated": "no module joins its own input stream; the repeated class of the longest "
            "Sequential or ModuleList",
            "none": "no module joins its own input stream and none repeats",
        }.get(
            m.block_rule,
            "the outermost modules that join their own input stream: a residual add or a concatenation",
        )
        _say(f"note: blocks are {m.block or 'none found'} ({how}; set --block)")
    write_output(render(reports, fmt, out.output), out.output)
    save_svg(reports, out.svg)
    return stopped([(t.input_shape, t.error) for t in traces])


def stopped(errors: list[tuple[tuple[int, ...], Any]]) -> int:
    """One stderr line per input the model rejected (three at most); exit 3 if any was."""
    failed = [(shape, e) for shape, e in errors if e is not None]
    for shape, e in failed[:3]:
        _say(
            f"{'x'.join(map(str, shape))}: stopped at {_short(e.module)}: {_short(e.message, 400)}; {e.hint}"
        )
    if len(failed) > 3:
        _say(f"... and {len(failed) - 3} more inputs failed")
    return ExitCode.MODEL_REJECTED if failed else ExitCode.OK


def _short(text: str, limit: int = 160) -> str:
    """``text``, or its head and tail around a count of what was left out: a module 1,000 levels
    deep is named in one readable line."""
    if len(text) <= limit:
        return text
    keep = (limit - 30) // 2
    return f"{text[:keep]}...({len(text) - 2 * keep:,} characters)...{text[-keep:]}"


def emit_differences(diffs: list, fmt: Format, output: Path | None, expected: str, got: str) -> int:
    from resnet_trace.render.diffs import render_differences

    color, width = _color(output)
    write_output(render_differences(diffs, fmt, expected=expected, got=got, color=color, width=width), output)
    if diffs:
        _say(f"{len(diffs)} difference(s) between {expected} and {got}")
        return ExitCode.DIFFERENCES
    return ExitCode.OK
