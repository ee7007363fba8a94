"""The commands: each turns its flags into the library's records, calls the library once, and hands
the result to :mod:`resnet_trace.cli.output`; errors become exit codes in :mod:`resnet_trace.cli.errors` only.

torch is imported inside the commands that trace, never at import time, so
``--help``, ``--version`` and ``schema`` start as fast as Typer and Rich.
"""

from __future__ import annotations

import gc
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from resnet_trace import __version__
from resnet_trace.cli.errors import OneLineErrors, record_debug
from resnet_trace.cli.files import check_outputs, model_file, output_path, write_output
from resnet_trace.cli.options import (
    BaseDim,
    BudgetOpt,
    CheckpointOpt,
    FormatOpt,
    GpusOpt,
    HeadOpt,
    Inputs,
    ModelFlags,
    NumClasses,
    OptimizerOpt,
    Output,
    OutputFlags,
    PrecisionOpt,
    RowFlags,
    ShardOpt,
    TrainableOpt,
    TrainOpt,
    budget_bytes,
    check_filter,
    input_calls,
    one_shape,
    progress,
    with_groups,
)
from resnet_trace.cli.output import emit_differences, finish, stopped
from resnet_trace.cli.streams import _color, _say
from resnet_trace.errors import ExitCode, UsageError
from resnet_trace.layout import BASE_DIM, NUM_CLASSES
from resnet_trace.records import (
    Depth,
    Device,
    DType,
    Format,
    GraphFormat,
    Head,
    Optimizer,
    Precision,
    Shard,
    Variant,
)
from resnet_trace.spec import LIMITS, MAX_BASE_DIM, MAX_NUM_CLASSES

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 check/diff found differences; 2 usage error (bad option or shape, "
    "missing or unsafe file, too much memory); 3 the model cannot process an input (the trace "
    "stopped at a module); 4 internal error (a bug; --debug shows the traceback); 130 interrupted."
)


class TreeFormat(str, Enum):
    """``tree``'s choice of two of the Formats: which renderer it calls is the CLI's concern."""

    TABLE = Format.TABLE.value
    JSON = Format.JSON.value


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


# Before the command or after it (``resnet-trace --debug summary``, ``resnet-trace summary --debug``).
# Its callback records it in the Click context, where OneLineErrors looks after an internal error;
# no command reads the value itself.
DebugOpt = Annotated[
    bool, typer.Option("--debug", callback=record_debug, help="Show tracebacks of internal errors.")
]


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """See inside the ResNet50 of a Korean code review."""


@app.command(epilog=EXIT_CODES_HELP)
@with_groups
def summary(
    *,
    which: ModelFlags,
    input: Inputs = None,
    out: OutputFlags,
    rows: RowFlags,
    train: TrainOpt = False,
    optimizer: OptimizerOpt = Optimizer.ADAM,
    budget: BudgetOpt = None,
    precision: PrecisionOpt = Precision.FP32,
    checkpoint: CheckpointOpt = False,
    trainable: TrainableOpt = None,
    gpus: GpusOpt = 1,
    shard: ShardOpt = Shard.NONE,
    debug: DebugOpt = False,
) -> int:
    """Shapes, params, MACs and skip paths per block, without weights or activations (meta device)."""
    check_outputs({"--output": out.output, "--svg": out.svg}, {"--model": model_file(which.model)})
    check_filter(rows.filter)
    from resnet_trace.choice import TraceOptions
    from resnet_trace.pipeline import stream_inputs

    options = TraceOptions(
        train=train or budget is not None,
        optimizer=optimizer,
        budget=budget_bytes(budget),
        precision=precision,
        checkpoint=checkpoint,
        trainable=trainable,
        gpus=gpus,
        shard=shard,
    )
    calls = input_calls(input, which.model)
    return finish(stream_inputs(which.choice(), calls, options), len(calls or [None]), rows, out)


@app.command(epilog=EXIT_CODES_HELP)
@with_groups
def run(
    *,
    which: ModelFlags,
    input: Inputs = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input-file",
            help="A .pt tensor (weights-only), a .npy array (no pickles) or an image "
            "(.png/.jpg/.webp/.bmp, scaled to 0-1; needs the images extra: pip install 'resnet-trace[images]'). "
            "With --model: a .pt dict or an .npz of named tensors, each passed by its name.",
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights", help="A checkpoint saved from the seed's code or this tool (loaded weights-only)."
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", min=0, max=LIMITS["seed"], help="Seeds the initialisation and the random input."
        ),
    ] = 0,
    repeat: Annotated[
        int,
        typer.Option(
            "--repeat",
            min=1,
            max=LIMITS["repeat"],
            help="Timed forwards after one warm-up; per-block medians.",
        ),
    ] = 1,
    top_k: Annotated[
        int, typer.Option("--top-k", min=1, max=LIMITS["top_k"], help="Classes to show per sample.")
    ] = 5,
    device: Annotated[
        Device, typer.Option("--device", help="Where to run; auto picks cuda when present.")
    ] = Device.CPU,
    dtype: Annotated[DType, typer.Option("--dtype", help="Parameter and input dtype.")] = DType.FLOAT32,
    out: OutputFlags,
    rows: RowFlags,
    backward: Annotated[
        bool,
        typer.Option(
            "--backward",
            help="Also a real backward of cross-entropy against --target: gradient norms per block, "
            "measured and predicted peak memory.",
        ),
    ] = False,
    target: Annotated[
        int, typer.Option("--target", min=0, max=LIMITS["target"], help="The class of the --backward loss.")
    ] = 0,
    gpus: GpusOpt = 1,
    shard: ShardOpt = Shard.NONE,
    save_output: Annotated[
        Path | None,
        typer.Option(
            "--save-output",
            parser=output_path,
            metavar="<path>",
            help="Also write the forward's full outputs: .npy (one tensor) or .pt (a nest of tensors, "
            "read back with torch.load(weights_only=True)).",
        ),
    ] = None,
    debug: DebugOpt = False,
) -> int:
    """A real forward (eval, no_grad) with per-block time and activation statistics, logits and top-k."""
    check_outputs(
        {"--output": out.output, "--svg": out.svg, "--save-output": save_output},
        {"--input-file": input_file, "--weights": weights, "--model": model_file(which.model)},
    )
    check_filter(rows.filter)
    from resnet_trace.choice import TraceOptions
    from resnet_trace.pipeline import trace_inputs

    if device is Device.META and (seed, repeat, top_k) != (0, 1, 5):
        _say("note: --device meta traces shapes only; --seed, --repeat and --top-k do not apply")
    shapes = input_calls(input, which.model)
    options = TraceOptions(
        real=True,
        seed=seed,
        weights=str(weights) if weights is not None else None,
        input_file=str(input_file) if input_file is not None else None,
        repeat=repeat,
        top_k=top_k,
        device=device,
        dtype=dtype,
        leaves=rows.depth is Depth.LAYER,
        backward=backward,
        target_class=target,
        gpus=gpus,
        shard=shard,
        save_output=None if save_output is None else str(save_output),
    )
    choice = which.choice()
    with progress(repeat * (len(shapes) if shapes else 1)) as advance:
        traces = trace_inputs(choice, shapes, options, progress=advance)
    return finish(traces, len(traces), rows, out)


@app.command(epilog=EXIT_CODES_HELP)
def check(
    golden: Annotated[Path, typer.Argument(help="A trace saved with --format json (or jsonl).")],
    base_dim: Annotated[
        int | None,
        typer.Option("--base-dim", min=1, max=MAX_BASE_DIM, help="Override the recorded base_dim."),
    ] = None,
    num_classes: Annotated[
        int | None,
        typer.Option("--num-classes", min=1, max=MAX_NUM_CLASSES, help="Override the recorded num_classes."),
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
    format: FormatOpt = Format.TABLE,
    output: Output = None,
    debug: DebugOpt = False,
) -> int:
    """Re-trace with the configuration recorded in GOLDEN and compare every shape, skip, param and MAC count."""
    check_outputs({"--output": output}, {"GOLDEN": golden, "--model": model_file(model)})
    from resnet_trace.api import check as check_golden

    result = check_golden(
        golden,
        base_dim=base_dim,
        num_classes=num_classes,
        inputs=input_calls(input, model),
        variant=variant,
        head=head,
        model=model,
    )
    return emit_differences(list(result.differences), format, output, result.expected, result.got)


@app.command(epilog=EXIT_CODES_HELP)
def diff(
    a: Annotated[Path, typer.Argument(help="The expected trace (json or jsonl).")],
    b: Annotated[Path, typer.Argument(help="The trace to compare with it.")],
    format: FormatOpt = Format.TABLE,
    output: Output = None,
    debug: DebugOpt = False,
) -> int:
    """Compare two saved traces: every shape, skip path, param and MAC count (exit 1 when they differ)."""
    check_outputs({"--output": output}, {"A": a, "B": b})
    from resnet_trace.diffing import diff as diff_files  # no torch: a diff reads data only

    result = diff_files(a, b)
    return emit_differences(list(result.differences), format, output, result.expected, result.got)


@app.command()
def schema(output: Output = None) -> int:
    """Print the JSON Schema of the trace document (resnet-trace/1)."""
    check_outputs({"--output": output})
    from importlib.resources import files

    write_output(files("resnet_trace").joinpath("schema.json").read_text(encoding="utf-8"), output)
    return ExitCode.OK


@app.command(epilog=EXIT_CODES_HELP)
@with_groups
def compare(
    *,
    base_dim: BaseDim = None,
    num_classes: NumClasses = None,
    input: Annotated[str, typer.Option("--input", "-i", help="Input shape NxCxHxW.")] = "1x3x224x224",
    head: HeadOpt = Head.AVGPOOL7,
    out: OutputFlags,
    train: Annotated[
        bool,
        typer.Option(
            "--train",
            help="Add saved activations per block, and from a real forward and backward of each "
            "variant the gradient norms and the measured peak.",
        ),
    ] = False,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", min=0, max=LIMITS["seed"], help="With --train: seeds both variants' initialisation."
        ),
    ] = 0,
    target: Annotated[
        int,
        typer.Option("--target", min=0, max=LIMITS["target"], help="With --train: the class of the loss."),
    ] = 0,
    debug: DebugOpt = False,
) -> int:
    """The seed beside its fixed variant: per block skip path, params and MACs, and the difference."""
    from resnet_trace.api import compare as compare_variants
    from resnet_trace.render.compare import compare_renderables, render_compare

    shape = one_shape(input)
    check_outputs({"--output": out.output, "--svg": out.svg})
    result = compare_variants(
        base_dim=BASE_DIM if base_dim is None else base_dim,
        num_classes=NUM_CLASSES if num_classes is None else num_classes,
        input_shape=shape,
        head=head,
        train=train,
        seed=seed,
        target=target,
    )
    color, width = _color(out.output)
    write_output(render_compare(result.seed, result.fixed, out.format, color=color, width=width), out.output)
    if out.svg is not None:
        from resnet_trace.render.table import svg_of

        write_output(svg_of(compare_renderables(result.seed, result.fixed)), out.svg, "--svg")
    return stopped([(result.seed.input_shape, result.seed.error)])


@app.command(epilog=EXIT_CODES_HELP)
@with_groups
def graph(
    *,
    which: ModelFlags,
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="Input shape NxCxHxW (default 1xCx224x224).")
    ] = None,
    format: Annotated[
        GraphFormat, typer.Option("--format", "-f", help="mermaid (renders on GitHub) or dot (Graphviz).")
    ] = GraphFormat.MERMAID,
    output: Output = None,
    debug: DebugOpt = False,
) -> int:
    """The block chain as Mermaid or DOT text: each skip path its own labelled edge, stages as subgraphs."""
    check_outputs({"--output": output}, {"--model": model_file(which.model)})
    from resnet_trace.choice import TraceOptions
    from resnet_trace.pipeline import trace_inputs
    from resnet_trace.render.graph import render_graph

    (t,) = trace_inputs(which.choice(), [one_shape(input, which.model)] if input else None, TraceOptions())
    write_output(render_graph(t, format), output)
    return stopped([(t.input_shape, t.error)])


@app.command(epilog=EXIT_CODES_HELP)
@with_groups
def tree(
    *,
    which: ModelFlags,
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="Input shape of the trace that marks what ran.")
    ] = None,
    format: Annotated[
        TreeFormat, typer.Option("--format", "-f", help="table (a Rich tree) or json.")
    ] = TreeFormat.TABLE,
    output: Output = None,
    debug: DebugOpt = False,
) -> int:
    """The module tree with parameter counts, marking the modules that never run in a trace."""
    if which.skip is not None:  # a tree has no skip paths: refused, never ignored
        raise UsageError("--skip names the skip path summary and run report; the tree has none")
    check_outputs({"--output": output}, {"--model": model_file(which.model)})
    from resnet_trace.api import choice_tree

    result = choice_tree(which.choice(), one_shape(input, which.model) if input else None)
    if format is TreeFormat.JSON:
        write_output(result.to_json(), output)
    else:
        from resnet_trace.render.tree import render_tree

        color, width = _color(output)
        at = result.error.module if result.error else None
        write_output(
            render_tree(result.root, input_shape=result.input_shape, stopped=at, color=color, width=width),
            output,
        )
    return stopped([(result.input_shape, result.error)])


def _command_named(argv: list[str]) -> str | None:
    """The command a command line runs: its first word that is not an option (``--debug`` and
    ``--version`` take no value), or None when there is none or the group's own help comes first
    (``resnet-trace --help summary`` lists every command)."""
    for a in argv:
        if a in ("--help", "-h"):
            return None
        if not a.startswith("-"):
            return a
    return None


def _register_only(name: str | None) -> None:
    """Keep only the command ``name`` registered, when it is one of ours.

    Typer builds the options of every registered command before it dispatches to one: about 20 ms of
    a 0.1 s ``summary`` here. The others cannot run in this process, and the group's own help and
    its "no such command" error (which list them all) only appear when no command is named, so the
    short-lived console script registers just the one it will run.
    """
    chosen = [c for c in app.registered_commands if c.callback is not None and c.callback.__name__ == name]
    if chosen and all(c.name is None for c in chosen):
        app.registered_commands = chosen


def main() -> None:
    """Console-script entry point.

    Ends with ``os._exit`` once output is flushed: tearing down an interpreter that has
    imported torch takes 0.3-0.4 s here (see docs/performance.md), work no user waits for.
    Every file we write is closed (and renamed into place) before this point.
    """
    # A short-lived process that ends in os._exit: the cyclic collector's full passes over
    # torch's and the model's objects (66-110 ms while a model is built) buy nothing here.
    # Memory is still freed by reference counting; only reference cycles wait for the exit.
    gc.disable()
    _register_only(_command_named(sys.argv[1:]))
    code = app(standalone_mode=False)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass
    os._exit(int(code) if isinstance(code, int) else 0)
