"""The Rich table: one section per stage, totals, the unused modules, any error."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from resnet_trace.printable import printable
from resnet_trace.records import CUSTOM, Depth, Head, Kind, Report, Row, Trace, TrainInfo, Variant, shape_text
from resnet_trace.render.bars import decades_below, log_bars
from resnet_trace.render.data import model_title
from resnet_trace.units import human, input_text

SPARK = "▁▂▃▄▅▆▇█"


def _title(t: Trace) -> str:
    m = t.model
    extras = []
    if m.variant not in (Variant.SEED, CUSTOM):  # say what differs from the seed as written
        extras.append(f"variant {m.variant}")
    if m.head not in (Head.AVGPOOL7, CUSTOM):
        extras.append(f"head {m.head}")
    extra = (" · " + " · ".join(extras)) if extras else ""
    return f"{t.command} · {model_title(t)}{extra} · input {input_text(t.input_shape, t.inputs)} · {t.device} {t.dtype}"


def _spark(rows: Sequence[Row]) -> dict[int, str]:
    """A bar per row for the scale (std) of its output, on a log scale across the rows shown."""
    stds = {i: r.activation.std for i, r in enumerate(rows) if r.activation and r.activation.std > 0}
    if not stds:
        return {}
    logs = {i: math.log10(s) for i, s in stds.items()}
    lo, hi = min(logs.values()), max(logs.values())
    span = (hi - lo) or 1.0
    return {i: SPARK[round((v - lo) / span * (len(SPARK) - 1))] for i, v in logs.items()}


def _pair(values: tuple[int, int]) -> str:
    return str(values[0]) if values[0] == values[1] else f"{values[0]}x{values[1]}"


def _block_numbers(t: Trace) -> dict[str, int]:
    """Each block's ordinal in the whole trace, so filtered or folded tables keep the numbers."""
    blocks = [r.name for r in t.rows if r.kind is Kind.BLOCK]
    return {name: i for i, name in enumerate(blocks, 1)}


def trace_table(report: Report) -> Table:
    t = report.trace
    run = any(r.time_ms is not None or r.activation is not None for r in report.rows)
    train = any(r.saved_bytes is not None or r.out_bytes is not None for r in report.rows)
    grads = any(r.grad_norm is not None or r.param_grad_norm is not None for r in report.rows)
    layer = report.depth is Depth.LAYER
    stage = report.depth is Depth.STAGE
    table = Table(title=_title(t), box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("stage" if stage else "block", no_wrap=True)
    if stage:
        table.add_column("blocks", justify="right")
    if layer:
        table.add_column("type", no_wrap=True)
        table.add_column("k/s/p", no_wrap=True)
        table.add_column("weight", no_wrap=True)
    for name in ("input", "output", "skip"):
        table.add_column(name, no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("MACs", justify="right", no_wrap=True)
    if run:
        for name in ("time ms", "mean", "std", "zero %", "scale"):
            table.add_column(name, justify="right" if name != "scale" else "left", no_wrap=True)
    if train:
        table.add_column("saved", justify="right", no_wrap=True)
        table.add_column("out", justify="right", no_wrap=True)
    if grads:
        table.add_column("‖dL/dout‖", justify="right", no_wrap=True)
        table.add_column("‖dL/dW‖", justify="right", no_wrap=True)
        table.add_column("dL/dout (log10)", justify="left", no_wrap=True)
    sparks = _spark(report.rows) if run else {}
    bars = _grad_bars(report.rows) if grads else []
    ordinals = _block_numbers(t)
    group = None
    for i, row in enumerate(report.rows):
        is_layer = row.depth is Depth.LAYER
        if row.kind is Kind.BLOCK:
            g = row.stage or row.name
        elif row.kind in (Kind.POOL, Kind.FC):
            g = "head"
        else:
            g = row.stage or row.name
        if group is not None and g != group and not is_layer:
            table.add_section()
        if not is_layer:
            group = g
        name = row.name
        if is_layer and row.parent and row.name.startswith(row.parent + "."):
            name = "  " + row.name[len(row.parent) + 1 :]
        if row.count > 1:
            name += f" ×{row.count}"
        num = ""
        if row.kind is Kind.BLOCK:
            first = ordinals.get(row.name.split("–")[0])
            if first is not None:
                num = str(first) if row.count == 1 else f"{first}–{first + row.count - 1}"
        cells = [num, name]
        if stage:
            cells.append("" if row.blocks is None else str(row.blocks))
        if layer:
            c = row.conv
            cells += [
                (row.module_type or "") if is_layer else "",
                f"{_pair(c.kernel)}/{_pair(c.stride)}/{_pair(c.padding)}" if c else "",
                (shape_text(c.weight_shape) + (" +bias" if c.bias else "")) if c else "",
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
        if train:
            cells += [_bytes(row.saved_bytes), _bytes(row.out_bytes)]
        if grads:
            cells += [_sci(row.grad_norm), _sci(row.param_grad_norm), bars[i]]
        table.add_row(*cells, style="dim" if is_layer else None)
    table.add_section()
    tot = t.totals
    cells = ["", "total (whole model)" if report.filter else "total"]
    if stage:
        cells.append("")
    if layer:
        cells += ["", "", ""]
    cells += ["", shape_text(t.output_shape), "", f"{tot.params:,}", f"{tot.macs:,}"]
    if run:
        cells += [f"{t.run.forward_ms:.2f}" if t.run else "", "", "", "", ""]
    if train:
        cells += [_bytes(t.train.activations_bytes) if t.train else "", ""]
    if grads:
        cells += ["", "", ""]
    table.add_row(*cells, style="bold")
    return table


def _bytes(n: int | None) -> str:
    return "" if n is None else human(n)


def _sci(v: float | None) -> str:
    return "" if v is None else f"{v:.2e}"


def _grad_bars(rows: Sequence[Row]) -> list[str]:
    """One log-scale bar per row for its output gradient, the scale shared by the rows shown."""
    return log_bars([r.grad_norm for r in rows])


def train_notes(report: Report) -> list[RenderableType]:
    """The memory of one training step, the batch that fits, and what a real backward measured."""
    info: TrainInfo | None = report.trace.train
    out: list[RenderableType] = []
    if info is None:
        return out
    out.append(
        Text(
            f"Training step (predicted, docs/training.md): peak {human(info.peak_bytes)} = params "
            f"{human(info.params_bytes)} + grads {human(info.grads_bytes)} + {info.optimizer} state "
            f"{human(info.optimizer_bytes)} + saved activations {human(info.activations_bytes)} + transient "
            f"{human(info.transient_bytes)}."
        )
    )
    if info.budget_bytes is not None:
        fit = info.fit_batch or 0
        what = f"a batch of {fit:,} fits" if fit else "not even a batch of 1 fits"
        out.append(Text(f"Budget {human(info.budget_bytes)}: {what} (fit_batch, by the predicted peak)."))
    if info.measured_peak_bytes is not None:
        err = (info.peak_bytes - info.measured_peak_bytes) / max(info.measured_peak_bytes, 1)
        out.append(
            Text(
                f"Measured peak {human(info.measured_peak_bytes)} (params + the step's peak above the level "
                f"before it); the prediction is {err:+.1%} off."
            )
        )
    if info.loss is not None:
        line = f"Backward: cross-entropy against class {info.target}, loss {info.loss:.4g}."
        spread = decades_below([r.grad_norm for r in report.rows])
        if spread is not None:
            line += f" The smallest output gradient shown is {spread:.1f} decades below the largest."
        out.append(Text(line))
    return out


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
    elif tot.unused_modules and t.model.source == "builtin":
        out.append(
            Text(
                f"Never ran: {len(tot.unused_modules)} module(s) holding {tot.params_unused:,} params "
                f"({', '.join(tot.unused_modules)}); they are counted in the total, as in the seed's checkpoints."
            )
        )
    elif tot.unused_modules:  # a module of your own may have run and left one parameter unread
        out.append(
            Text(
                f"Never read: {tot.params_unused:,} params of {len(tot.unused_modules)} module(s) "
                f"({', '.join(tot.unused_modules)}); no operation read them. They are counted in the total."
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
    out.extend(train_notes(report))
    if t.error is not None:
        out.append(Text(f"✗ stopped at {t.error.module}: {t.error.message}", style="bold red"))
        out.append(Text(f"  hint: {t.error.hint}"))
    return out


@dataclass(frozen=True, slots=True)
class SweepLine:
    """One input's line in the sweep table: what it was, where it stopped, its output, its MACs."""

    given: str
    stopped_at: str | None
    output: str
    macs: int

    @classmethod
    def of(cls, report: Report) -> SweepLine:
        t = report.trace
        stopped = None if t.error is None else t.error.module
        return cls(input_text(t.input_shape, t.inputs), stopped, shape_text(t.output_shape), t.totals.macs)


def sweep_table(lines: Sequence[SweepLine]) -> Table:
    """Which inputs pass and which fail, when several were traced."""
    table = Table(title="inputs", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for name, justify in (("input", "left"), ("result", "left"), ("output", "left"), ("MACs", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]  # "left"/"right" strings, Rich wants its Literal
    for line in lines:
        ok = line.stopped_at is None
        table.add_row(
            line.given,
            Text("ok" if ok else f"stopped at {line.stopped_at}", style="green" if ok else "red"),
            line.output,
            f"{line.macs:,}" if ok else "",
        )
    passed = sum(1 for line in lines if line.stopped_at is None)
    table.caption = f"{passed} of {len(lines)} inputs ran through"
    return table


def renderables(reports: Sequence[Report]) -> list[RenderableType]:
    """The tables, notes and sweep of ``reports``; every name, message and path in them shown by
    :func:`~resnet_trace.printable.printable` (control characters and bidi controls as escapes)."""
    groups = list(_groups(reports))
    out = [item for items, _ in groups for item in items]
    return out + ([sweep_table([line for _, line in groups])] if len(groups) > 1 else [])


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
    """The tables at ``width``, each wider when it needs to be: cells are never cut short."""
    return "".join(table_chunks(reports, color=color, width=width))


def table_chunks(reports: Iterable[Report], *, color: bool = False, width: int = 160) -> Iterator[str]:
    """:func:`render_table`'s text, one input's table (and notes) at a time, then the sweep table
    when there were several: a sweep of 10,000 inputs never holds more than one table. Each is
    printed at ``width``, or at its own table's width where that is wider."""
    lines = []
    for items, line in _groups(reports):
        lines.append(line)
        yield _printed(items, color=color, width=width)
    if len(lines) > 1:
        yield _printed([sweep_table(lines)], color=color, width=width)


def _printed(items: list[RenderableType], *, color: bool, width: int) -> str:
    probe = make_console(color=False, width=10_000)
    need = max(
        (Measurement.get(probe, probe.options, item).maximum for item in items if isinstance(item, Table)),
        default=0,
    )
    console = make_console(color=color, width=max(width, need))
    console.print(Group(*items))
    return console_text(console)


def _groups(reports: Iterable[Report]) -> Iterator[tuple[list[RenderableType], SweepLine]]:
    """Each input's table and notes, shown by :func:`~resnet_trace.printable.printable`, with its
    line of the sweep table."""
    for report in reports:
        shown = printable(report)
        yield [trace_table(shown), *notes(shown), Text("")], SweepLine.of(shown)


def console_text(console: Console) -> str:
    """What a ``make_console`` console printed, without the padding Rich adds at line ends."""
    text = console.file.getvalue()  # type: ignore[attr-defined]  # the StringIO this console was given
    return "".join(line.rstrip() + "\n" for line in text.splitlines())


def render_svg(reports: Sequence[Report], *, width: int = 140, title: str = "resnet-trace") -> str:
    """The table as a deterministic SVG picture (fixed width, fixed ids)."""
    return svg_of(renderables(reports), width=width, title=title)


def svg_of(items: Sequence[RenderableType], *, width: int = 140, title: str = "resnet-trace") -> str:
    console = make_console(color=True, width=width, record=True)
    console.print(Group(*items))
    return console.export_svg(title=title, unique_id="resnet-trace")
