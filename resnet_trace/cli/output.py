"""How a command's result leaves: the one format switch, the notes and stop lines on stderr, the exit code."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_trace.cli.files import write_output
from resnet_trace.cli.streams import _color, _say
from resnet_trace.errors import ExitCode, UsageError
from resnet_trace.records import Format, Report, Trace

if TYPE_CHECKING:  # the groups' types only: options sits above output
    from resnet_trace.cli.options import OutputFlags, RowFlags


def render(reports: Iterable[Report], fmt: Format, output: Path | None, count: int) -> Iterator[str]:
    """The one format switch: the reports' text in ``fmt``, one input at a time (a sweep of
    10,000 inputs is written as it is rendered, never held whole); ``count`` reports will come."""
    if fmt is Format.JSON:
        from resnet_trace.render.data import json_chunks

        return json_chunks(reports, count)
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


def finish(traces: Iterable[Trace], count: int, rows: RowFlags, out: OutputFlags) -> int:
    """Notes on stderr, the reports in ``--format`` to stdout or ``-o`` (and ``--svg``), the exit
    code. ``traces`` may be a stream of ``count``: each is made a report, written and let go as it
    comes (its notes said first), unless ``--filter`` (whose "matches no row" comes before any
    output) or ``--svg`` needs them all."""
    from resnet_trace.goldens import report

    def view(t: Trace) -> Report:
        return report(t, depth=rows.depth, collapse=rows.collapse, filter=rows.filter)

    pairs: Iterable[tuple[Trace, Report]] = ((t, view(t)) for t in traces)
    held: list[tuple[Trace, Report]] | None = None
    if rows.filter or out.svg is not None:
        pairs = held = list(pairs)
        if held and rows.filter and not any(r.rows for _, r in held):
            raise UsageError(f"--filter {rows.filter!r} matches no row")
    errors: list[tuple[tuple[int, ...], Any]] = []
    said: set[str] = set()

    def reports() -> Iterator[Report]:
        for i, (t, r) in enumerate(pairs):
            for note in t.notes:
                if note not in said:
                    said.add(note)
                    _say(note)
            if i == 0:
                _block_note(t, out.format)
            errors.append((t.input_shape, t.error))
            yield r

    made = reports()
    write_output(render(made, out.format, out.output, count), out.output)
    for _ in made:  # the reader went away (| head): every input still counts for the exit code
        pass
    if out.svg is not None and held is not None:
        from resnet_trace.render.table import render_svg

        write_output(render_svg([r for _, r in held]), out.svg, "--svg")
    return stopped(errors)


def _block_note(t: Trace, fmt: Format) -> None:
    """How the blocks of a model of your own were found, under the table formats."""
    m = t.model
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
