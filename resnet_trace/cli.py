"""The command line: thin commands over ``resnet_trace.api``; errors become exit codes here only.

torch is imported inside the commands that trace, never at import time, so
``--help``, ``--version`` and ``schema`` start as fast as Typer and Rich.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from resnet_trace import __version__
from resnet_trace.cliio import OneLineErrors, _check_writable, _color, _say, write_output
from resnet_trace.errors import ExitCode, UsageError
from resnet_trace.records import Depth, Report
from resnet_trace.spec import ModelSpec, expand_inputs, parse_shape, positive

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 check/diff found differences; 2 usage error (bad option or shape, "
    "missing or unsafe file, too much memory); 3 the model cannot process an input (the trace "
    "stopped at a module); 4 internal error (a bug; --debug shows the traceback); 130 interrupted."
)


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    markdown = "markdown"


class Variant(str, Enum):
    seed = "seed"
    fixed = "fixed"


class Head(str, Enum):
    avgpool7 = "avgpool7"
    adaptive = "adaptive"


class DeviceName(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"
    meta = "meta"
    auto = "auto"


class DType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class TreeFormat(str, Enum):
    table = "table"
    json = "json"


class GraphFormat(str, Enum):
    mermaid = "mermaid"
    dot = "dot"


app = typer.Typer(
    cls=OneLineErrors,
    name="resnet-trace",
    help="See inside the ResNet50 of a Korean code review, block by block. " + EXIT_CODES_HELP,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"resnet-trace {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")] = False,
) -> None:
    """See inside the ResNet50 of a Korean code review."""


# -- shared options (defined once) ------------------------------------------------
BaseDim = Annotated[int, typer.Option("--base-dim", help="Width of the stem; stages use 1-32x this.")]
NumClasses = Annotated[
    int, typer.Option("--num-classes", help="Outputs of fc_layer (the seed's default is 2).")
]
Inputs = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        "-i",
        help="Input shape NxCxHxW; repeat for several. Sweep one dimension "
        "with lo-hi[:step] (1x3x190-230x224), or H and W together (1x3x190-230x190-230).",
    ),
]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
Output = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to FILE atomically instead of stdout.")
]
VariantOpt = Annotated[
    Variant, typer.Option("--variant", help="seed: the code as written; fixed: its two slips corrected.")
]
HeadOpt = Annotated[
    Head, typer.Option("--head", help="avgpool7: the seed's AvgPool2d(7, 1); adaptive: AdaptiveAvgPool2d(1).")
]
DepthOpt = Annotated[
    Depth, typer.Option("--depth", help="Rows per stage, per block, or per leaf-module call.")
]
CollapseOpt = Annotated[
    bool, typer.Option("--collapse", help="Fold consecutive identical blocks into one row.")
]
FilterOpt = Annotated[
    str | None, typer.Option("--filter", help="Keep rows whose name matches REGEX (totals stay whole-model).")
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Trace your own copy of the seed: PATH.py:NAME or package.module:NAME "
        "(a class or factory; importing it RUNS ITS CODE).",
    ),
]
BlockOpt = Annotated[str, typer.Option("--block", help="Class name of the blocks in --model.")]
SkipOpt = Annotated[str, typer.Option("--skip", help="Comma-separated names of the blocks' skip submodules.")]
SvgOpt = Annotated[Path | None, typer.Option("--svg", help="Also save the table as an SVG picture.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")]


DEFAULT_BLOCK = "BottleNeck"
DEFAULT_SKIP = "downsample,dim_equalizer"


def _spec(base_dim: int, num_classes: int, variant: Variant, head: Head) -> ModelSpec:
    return ModelSpec(
        base_dim=positive("--base-dim", base_dim),
        num_classes=positive("--num-classes", num_classes),
        variant=variant.value,
        head=head.value,
    )


def _skip_names(skip: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in skip.split(",") if s.strip())
    if not names:
        raise UsageError("--skip needs at least one submodule name")
    return names


def render(reports: list[Report], fmt: Format, output: Path | None) -> str:
    if fmt is Format.json:
        from resnet_trace.render.data import render_json

        return render_json(reports)
    if fmt is Format.jsonl:
        from resnet_trace.render.data import render_jsonl

        return render_jsonl(reports)
    if fmt is Format.csv:
        from resnet_trace.render.tabular import render_csv

        return render_csv(reports)
    if fmt is Format.markdown:
        from resnet_trace.render.tabular import render_markdown

        return render_markdown(reports)
    from resnet_trace.render.table import render_table

    color, width = _color(output)
    return render_table(reports, color=color, width=width)


def _one_shape(value: str) -> tuple[int, int, int, int]:
    """Commands that draw one trace take one shape, not a sweep."""
    shapes = expand_inputs([value])
    if len(shapes) != 1:
        raise UsageError(f"--input {value!r} names {len(shapes)} shapes; this command takes one")
    return shapes[0]


def _save_svg(reports: list[Report], svg: Path | None) -> None:
    if svg is not None:
        from resnet_trace.render.table import render_svg

        write_output(render_svg(reports), svg, "--svg")


def _reports(traces: list, depth: Depth, collapse: bool, pattern: str | None) -> list[Report]:
    from resnet_trace.views import view

    return [
        Report(
            trace=t,
            rows=tuple(view(t.rows, depth, fold=collapse, pattern=pattern)),
            depth=depth,
            collapsed=collapse,
            filter=pattern,
        )
        for t in traces
    ]


def _finish(traces: list, reports: list[Report], fmt: Format, output: Path | None, svg: Path | None) -> int:
    write_output(render(reports, fmt, output), output)
    _save_svg(reports, svg)
    return _stopped([(t.input_shape, t.error) for t in traces])


def _stopped(errors: list[tuple[tuple[int, ...], Any]]) -> int:
    """One stderr line per input the model rejected (three at most); exit 3 if any was."""
    failed = [(shape, e) for shape, e in errors if e is not None]
    for shape, e in failed[:3]:
        _say(f"{'x'.join(map(str, shape))}: stopped at {e.module}: {e.message}; {e.hint}")
    if len(failed) > 3:
        _say(f"... and {len(failed) - 3} more inputs failed")
    return ExitCode.MODEL_REJECTED if failed else ExitCode.OK


def _target(
    spec: ModelSpec,
    model: str | None,
    block: str,
    skip: str,
    device: str = "meta",
    init_seed: int | None = None,
):
    if model is None:
        from resnet_trace.api import build_target

        return build_target(spec, device=device, init_seed=init_seed)
    if (spec.variant, spec.head) != ("seed", "avgpool7"):
        raise UsageError("--variant and --head change the built-in model; with --model, edit your own file")
    from resnet_trace.usermodel import load_user_target

    return load_user_target(
        model, spec, block=block, skip=_skip_names(skip), device=device, init_seed=init_seed
    )


@app.command(epilog=EXIT_CODES_HELP)
def summary(
    base_dim: BaseDim = 64,
    num_classes: NumClasses = 2,
    input: Inputs = None,
    format: FormatOpt = Format.table,
    output: Output = None,
    variant: VariantOpt = Variant.seed,
    head: HeadOpt = Head.avgpool7,
    depth: DepthOpt = Depth.BLOCK,
    collapse: CollapseOpt = False,
    filter: FilterOpt = None,
    model: ModelOpt = None,
    block: BlockOpt = DEFAULT_BLOCK,
    skip: SkipOpt = DEFAULT_SKIP,
    svg: SvgOpt = None,
    debug: DebugOpt = False,
) -> int:
    """Shapes, params, MACs and skip paths per block, without weights or activations (meta device)."""
    spec = _spec(base_dim, num_classes, variant, head)
    _check_writable(output, "--output")
    _check_writable(svg, "--svg")
    shapes = expand_inputs(input or ["1x3x224x224"])
    if filter:
        from resnet_trace.views import filter_rows

        filter_rows((), filter)  # validate the regex before any work
    from resnet_trace.api import trace_shapes

    target = _target(spec, model, block, skip)
    traces = [trace_shapes(target, shape) for shape in shapes]
    return _finish(traces, _reports(traces, depth, collapse, filter), format, output, svg)


@app.command(epilog=EXIT_CODES_HELP)
def run(
    base_dim: BaseDim = 64,
    num_classes: NumClasses = 2,
    input: Inputs = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input-file",
            help="A .pt tensor (weights-only), a .npy array (no pickles) or a .png image (scaled to 0-1).",
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights", help="A checkpoint saved from the seed's code or this tool (loaded weights-only)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the initialisation and the random input.")] = 0,
    repeat: Annotated[
        int, typer.Option("--repeat", help="Timed forwards after one warm-up; per-block medians.")
    ] = 1,
    top_k: Annotated[int, typer.Option("--top-k", help="Classes to show per sample.")] = 5,
    device: Annotated[
        DeviceName, typer.Option("--device", help="Where to run; auto picks cuda when present.")
    ] = DeviceName.cpu,
    dtype: Annotated[DType, typer.Option("--dtype", help="Parameter and input dtype.")] = DType.float32,
    format: FormatOpt = Format.table,
    output: Output = None,
    variant: VariantOpt = Variant.seed,
    head: HeadOpt = Head.avgpool7,
    depth: DepthOpt = Depth.BLOCK,
    collapse: CollapseOpt = False,
    filter: FilterOpt = None,
    model: ModelOpt = None,
    block: BlockOpt = DEFAULT_BLOCK,
    skip: SkipOpt = DEFAULT_SKIP,
    svg: SvgOpt = None,
    debug: DebugOpt = False,
) -> int:
    """A real forward (eval, no_grad) with per-block time and activation statistics, logits and top-k."""
    spec = _spec(base_dim, num_classes, variant, head)
    _check_writable(output, "--output")
    _check_writable(svg, "--svg")
    positive("--repeat", repeat)
    positive("--top-k", top_k)
    if input_file is not None and input:
        raise UsageError("give --input or --input-file, not both")
    shapes = expand_inputs(input or ["1x3x224x224"]) if input_file is None else []
    if filter:
        from resnet_trace.views import filter_rows

        filter_rows((), filter)
    from resnet_trace import api

    dev = api.resolve_device(device.value)
    torch_dtype = api.DTYPES[dtype.value]
    x_file = None
    if input_file is not None:
        from resnet_trace.loading import load_input

        x_file = load_input(input_file)
        shapes = [tuple(int(d) for d in x_file.shape)]
    if dev == "meta":
        if weights is not None:
            raise UsageError("--weights needs a real device: --device meta traces shapes only")
        if (seed, repeat, top_k) != (0, 1, 5):
            _say("note: --device meta traces shapes only; --seed, --repeat and --top-k do not apply")
        target = _target(spec, model, block, skip)
        target.model.to(dtype=torch_dtype)
        traces = [api.trace_shapes(target, s, command="run") for s in shapes]
        return _finish(traces, _reports(traces, depth, collapse, filter), format, output, svg)
    # Memory guard: a shape-only trace first, then refuse what cannot fit.
    from resnet_trace.memory import guard

    meta_target = _target(spec, model, block, skip)
    room = api.device_memory(dev)
    for s in shapes:
        guard(
            api.trace_shapes(meta_target, s),
            torch_dtype.itemsize,
            available=room,
            where="memory" if dev == "cpu" else f"{dev} memory",
        )
    if weights is not None:
        target = meta_target  # weights are assigned into the meta-built model: no wasted init
        from resnet_trace.loading import load_weights

        load_weights(weights, target.model, spec)
        target.model.to(device=dev, dtype=torch_dtype)
    else:
        target = _target(spec, model, block, skip, device=dev, init_seed=seed)
        target.model.to(dtype=torch_dtype)
    progress_ctx = _progress(repeat * len(shapes))
    traces = []
    with progress_ctx as advance:
        for s in shapes:
            x = (
                x_file.to(device=dev, dtype=torch_dtype)
                if x_file is not None
                else api.random_input(s, seed=seed, device=dev, dtype=torch_dtype)
            )
            traces.append(
                api.trace_run(
                    target,
                    x,
                    repeat=repeat,
                    top_k=top_k,
                    seed=seed if x_file is None else None,
                    weights=str(weights) if weights else None,
                    input_file=str(input_file) if input_file else None,
                    progress=advance,
                    leaves=depth is Depth.LAYER,
                )
            )
    return _finish(traces, _reports(traces, depth, collapse, filter), format, output, svg)


class _progress:
    """A Rich progress bar on stderr for long runs, only when both stdout and stderr are terminals."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar = None

    def __enter__(self):
        if self.total < 3 or not (sys.stdout.isatty() and sys.stderr.isatty()):
            return None
        from rich.console import Console
        from rich.progress import Progress

        self.bar = Progress(console=Console(stderr=True), transient=True)
        self.bar.__enter__()
        self.task = self.bar.add_task("timed forwards", total=self.total)
        done = [0]

        def advance(i: int) -> None:
            done[0] += 1
            self.bar.update(self.task, completed=done[0])

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def _override(
    doc: dict, base_dim: int | None, num_classes: int | None, variant: Variant | None, head: Head | None
) -> ModelSpec:
    m = doc.get("model") or {}
    return ModelSpec(
        base_dim=positive("--base-dim", base_dim if base_dim is not None else int(m.get("base_dim") or 64)),
        num_classes=positive(
            "--num-classes", num_classes if num_classes is not None else int(m.get("num_classes") or 2)
        ),
        variant=variant.value
        if variant is not None
        else (m.get("variant") if m.get("variant") in ("seed", "fixed") else "seed"),
        head=head.value
        if head is not None
        else (m.get("head") if m.get("head") in ("avgpool7", "adaptive") else "avgpool7"),
    )


def _emit_differences(diffs: list, fmt: Format, output: Path | None, expected: str, got: str) -> int:
    from resnet_trace.render.diffs import render_differences

    color, width = _color(output)
    write_output(
        render_differences(diffs, fmt.value, expected=expected, got=got, color=color, width=width), output
    )
    if diffs:
        _say(f"{len(diffs)} difference(s) between {expected} and {got}")
        return ExitCode.DIFFERENCES
    return ExitCode.OK


@app.command(epilog=EXIT_CODES_HELP)
def check(
    golden: Annotated[Path, typer.Argument(help="A trace saved with --format json (or jsonl).")],
    base_dim: Annotated[
        int | None, typer.Option("--base-dim", help="Override the recorded base_dim.")
    ] = None,
    num_classes: Annotated[
        int | None, typer.Option("--num-classes", help="Override the recorded num_classes.")
    ] = None,
    input: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="Override the recorded input(s).")
    ] = None,
    variant: Annotated[
        Variant | None, typer.Option("--variant", help="Override the recorded variant.")
    ] = None,
    head: Annotated[Head | None, typer.Option("--head", help="Override the recorded head.")] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Override the recorded --model (importing it RUNS ITS CODE)."),
    ] = None,
    format: FormatOpt = Format.table,
    output: Output = None,
    debug: DebugOpt = False,
) -> int:
    """Re-trace with the configuration recorded in GOLDEN and compare every shape, skip, param and MAC count."""
    from resnet_trace.diffing import compare_all, load_documents

    golden_docs = load_documents(golden)
    overrides = expand_inputs(input) if input else None
    from resnet_trace.api import trace_shapes
    from resnet_trace.render.data import trace_dict

    got_docs = []
    targets: dict = {}
    if overrides is None:
        # The recorded input is checked as if typed on the command line.
        plan = [(doc, parse_shape("x".join(map(str, doc["input_shape"])))) for doc in golden_docs]
    else:  # inputs given on the command line replace the recorded ones, in order
        plan = [(golden_docs[min(i, len(golden_docs) - 1)], s) for i, s in enumerate(overrides)]
    for doc, shape in plan:
        spec = _override(doc, base_dim, num_classes, variant, head)
        m = doc.get("model") or {}
        ref = (
            model if model is not None else (None if m.get("source", "builtin") == "builtin" else m["source"])
        )
        key = (spec, ref)
        if key not in targets:
            targets[key] = _target(
                spec,
                ref,
                m.get("block", DEFAULT_BLOCK),
                ",".join(m["skip"]) if m.get("skip") else DEFAULT_SKIP,
            )
        t = trace_shapes(targets[key], shape)
        depth = Depth(doc.get("depth", "block"))
        report = _reports([t], depth, bool(doc.get("collapsed")), doc.get("filter"))[0]
        got_docs.append(trace_dict(report))
    diffs = compare_all(golden_docs, got_docs)
    return _emit_differences(diffs, format, output, str(golden), "this trace")


@app.command(epilog=EXIT_CODES_HELP)
def diff(
    a: Annotated[Path, typer.Argument(help="The expected trace (json or jsonl).")],
    b: Annotated[Path, typer.Argument(help="The trace to compare with it.")],
    format: FormatOpt = Format.table,
    output: Output = None,
    debug: DebugOpt = False,
) -> int:
    """Compare two saved traces: every shape, skip path, param and MAC count (exit 1 when they differ)."""
    from resnet_trace.diffing import compare_all, load_documents

    return _emit_differences(
        compare_all(load_documents(a), load_documents(b)), format, output, str(a), str(b)
    )


@app.command()
def schema(output: Output = None) -> int:
    """Print the JSON Schema of the trace document (resnet-trace/1)."""
    from importlib.resources import files

    write_output(files("resnet_trace").joinpath("schema.json").read_text(encoding="utf-8"), output)
    return ExitCode.OK


@app.command(epilog=EXIT_CODES_HELP)
def compare(
    base_dim: BaseDim = 64,
    num_classes: NumClasses = 2,
    input: Annotated[str, typer.Option("--input", "-i", help="Input shape NxCxHxW.")] = "1x3x224x224",
    head: HeadOpt = Head.avgpool7,
    format: FormatOpt = Format.table,
    output: Output = None,
    svg: SvgOpt = None,
    debug: DebugOpt = False,
) -> int:
    """The seed beside its fixed variant: per block skip path, params and MACs, and the difference."""
    from resnet_trace.api import build_target, trace_shapes
    from resnet_trace.render.compare import compare_renderables, render_compare

    shape = _one_shape(input)
    _check_writable(output, "--output")
    _check_writable(svg, "--svg")
    reports = []
    for variant in (Variant.seed, Variant.fixed):
        spec = _spec(base_dim, num_classes, variant, head)
        reports.append(_reports([trace_shapes(build_target(spec), shape)], Depth.BLOCK, False, None)[0])
    color, width = _color(output)
    write_output(render_compare(reports[0], reports[1], format.value, color=color, width=width), output)
    if svg is not None:
        from resnet_trace.render.table import svg_of

        write_output(svg_of(compare_renderables(reports[0], reports[1])), svg, "--svg")
    return _stopped([(reports[0].trace.input_shape, reports[0].trace.error)])


@app.command(epilog=EXIT_CODES_HELP)
def graph(
    base_dim: BaseDim = 64,
    num_classes: NumClasses = 2,
    input: Annotated[str, typer.Option("--input", "-i", help="Input shape NxCxHxW.")] = "1x3x224x224",
    format: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="mermaid (renders on GitHub) or dot (Graphviz).")
    ] = GraphFormat.mermaid,
    variant: VariantOpt = Variant.seed,
    head: HeadOpt = Head.avgpool7,
    output: Output = None,
    model: ModelOpt = None,
    block: BlockOpt = DEFAULT_BLOCK,
    skip: SkipOpt = DEFAULT_SKIP,
    debug: DebugOpt = False,
) -> int:
    """The block chain as Mermaid or DOT text: each skip path its own labelled edge, stages as subgraphs."""
    from resnet_trace.api import trace_shapes
    from resnet_trace.render.graph import render_graph

    spec = _spec(base_dim, num_classes, variant, head)
    t = trace_shapes(_target(spec, model, block, skip), _one_shape(input))
    write_output(render_graph(t, format.value), output)
    return _stopped([(t.input_shape, t.error)])


@app.command(epilog=EXIT_CODES_HELP)
def tree(
    base_dim: BaseDim = 64,
    num_classes: NumClasses = 2,
    input: Annotated[
        str, typer.Option("--input", "-i", help="Input shape of the trace that marks what ran.")
    ] = "1x3x224x224",
    variant: VariantOpt = Variant.seed,
    head: HeadOpt = Head.avgpool7,
    format: Annotated[
        TreeFormat, typer.Option("--format", "-f", help="table (a Rich tree) or json.")
    ] = TreeFormat.table,
    output: Output = None,
    model: ModelOpt = None,
    block: BlockOpt = DEFAULT_BLOCK,
    skip: SkipOpt = DEFAULT_SKIP,
    debug: DebugOpt = False,
) -> int:
    """The module tree with parameter counts, marking the modules that never run in a trace."""
    from resnet_trace.api import trace_tree

    spec = _spec(base_dim, num_classes, variant, head)
    shape = _one_shape(input)
    root, error = trace_tree(_target(spec, model, block, skip), shape)
    if format is TreeFormat.json:
        import json

        from resnet_trace.render.tree import tree_doc

        write_output(json.dumps(tree_doc(root), indent=2) + "\n", output)
    else:
        from resnet_trace.render.tree import render_tree

        color, width = _color(output)
        stopped = error.module if error else None
        write_output(render_tree(root, input_shape=shape, stopped=stopped, color=color, width=width), output)
    return _stopped([(shape, error)])


def main() -> None:
    """Console-script entry point.

    Ends with ``os._exit`` once output is flushed: tearing down an interpreter that has
    imported torch takes 0.3-0.4 s here (see docs/performance.md), work no user waits for.
    Every file we write is closed (and renamed into place) before this point.
    """
    code = app(standalone_mode=False)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass
    os._exit(int(code) if isinstance(code, int) else 0)
