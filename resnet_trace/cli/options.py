"""The commands' shared options and the checks of their values, defined once for every command.

Each option is an ``Annotated`` type that Typer reads, its bounds as Typer's ``min``/``max``
(one usage line naming the flag). Options that travel together are a group, a frozen record
whose fields are the options (:class:`ModelFlags`, :class:`OutputFlags`, :class:`RowFlags`):
a command names the group once and :func:`with_groups` spreads it into the command's flags, as
sqlite-utils' ``output_options`` does. Each check turns a flag's value into what the library
takes (a :class:`~resnet_trace.choice.ModelChoice`, a size in bytes) or refuses it in one line.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from resnet_trace.cli.files import output_path
from resnet_trace.errors import UsageError
from resnet_trace.layout import BASE_DIM, NUM_CLASSES
from resnet_trace.records import Depth, Format, Head, Optimizer, Precision, Shard, Variant
from resnet_trace.spec import LIMITS, MAX_BASE_DIM, MAX_NUM_CLASSES, expand_inputs

# -- shared options (defined once) ------------------------------------------------
BaseDim = Annotated[
    int | None,
    typer.Option(
        "--base-dim",
        min=1,
        max=MAX_BASE_DIM,
        help=f"Width of the stem; stages use 1-32x this (default {BASE_DIM}). Passed to --model only when given.",
    ),
]
NumClasses = Annotated[
    int | None,
    typer.Option(
        "--num-classes",
        min=1,
        max=MAX_NUM_CLASSES,
        help=f"Outputs of fc_layer (default {NUM_CLASSES}). Passed to --model only when given.",
    ),
]
ModelArgs = Annotated[
    list[str] | None,
    typer.Option("--model-arg", help="KEY=VALUE passed to --model (repeatable; VALUE a Python literal)."),
]
Inputs = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        "-i",
        help="Input shape NxCxHxW; repeat for several. Sweep one dimension "
        "with lo-hi[:step] (1x3x190-230x224), or H and W together (1x3x190-230x190-230). "
        "With --model, any tensors: [NAME=]DIMS[:DTYPE][[lo,hi)] joined by ',' "
        "(input_ids=2x16:int64,attention_mask=2x16:int64).",
    ),
]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
Output = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        parser=output_path,
        metavar="<path>",
        help="Write to FILE atomically instead of stdout.",
    ),
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
BlockOpt = Annotated[
    str | None,
    typer.Option(
        "--block",
        help="Class name(s) of the blocks in --model, joined by ',' (default: found from the dataflow).",
    ),
]
SkipOpt = Annotated[
    str | None,
    typer.Option("--skip", help="Override: report these child modules as the skip path when they ran."),
]
SvgOpt = Annotated[
    Path | None,
    typer.Option(
        "--svg", parser=output_path, metavar="<path>", help="Also save the table as an SVG picture."
    ),
]


TrainOpt = Annotated[
    bool,
    typer.Option(
        "--train",
        help="Add the memory of one training step: activations autograd saves per row, and the predicted peak.",
    ),
]
OptimizerOpt = Annotated[
    Optimizer,
    typer.Option(
        "--optimizer",
        help="With --train: its state is 0x (sgd), 1x (momentum) or 2x (adam, adamw) the parameters.",
    ),
]
BudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--budget",
        help="With --train: a memory size (24GiB, 8e9); adds fit_batch, the largest batch that fits.",
    ),
]

PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="With --train: parameters stored and run in fp32, bf16 or fp16; or fp32 master weights "
        "with the forward under torch.autocast (bf16-autocast, fp16-autocast).",
    ),
]
CheckpointOpt = Annotated[
    bool,
    typer.Option(
        "--checkpoint",
        help="With --train: checkpoint every block (non-reentrant): its inputs are kept, its inside "
        "recomputed in the backward.",
    ),
]
TrainableOpt = Annotated[
    str | None,
    typer.Option(
        "--trainable",
        metavar="REGEX",
        help="With --train: only parameters whose name matches get a gradient and optimizer state; "
        "the rest are frozen (fine-tuning a head or adapters).",
    ),
]

GpusOpt = Annotated[
    int,
    typer.Option(
        "--gpus",
        min=1,
        max=LIMITS["gpus"],
        help="With --train: the step is data-parallel over N devices; figures per device, the batch "
        "of --input per device.",
    ),
]
ShardOpt = Annotated[
    Shard,
    typer.Option(
        "--shard",
        help="With --gpus: none (DDP), optimizer (ZeroRedundancyOptimizer, ZeRO-1), gradients "
        "(FSDP2 without resharding) or full (FSDP2, ZeRO-3); each block is a sharding unit.",
    ),
]


def skip_names(skip: str | None) -> tuple[str, ...] | None:
    if skip is None:
        return None
    names = tuple(s.strip() for s in skip.split(",") if s.strip())
    if not names:
        raise UsageError("--skip needs at least one submodule name")
    return names


def input_calls(values: list[str] | None, model: str | None) -> list[Any] | None:
    """``--input`` values: NxCxHxW shapes for the built-in model (its own rules and messages), any
    tensors (``[NAME=]DIMS[:DTYPE]``, joined by ``,``) for a ``--model``."""
    if not values:
        return None
    if model is None:
        return list(expand_inputs(values))
    from resnet_trace.inputs import parse_inputs

    return list(parse_inputs(values))


def one_shape(value: str, model: str | None = None) -> Any:
    """Commands that draw one trace take one input, not a sweep."""
    calls = input_calls([value], model) or []
    if len(calls) != 1:
        raise UsageError(f"--input {value!r} names {len(calls)} shapes; this command takes one")
    return calls[0]


def budget_bytes(budget: str | None) -> int | None:
    from resnet_trace.memory import parse_budget

    return None if budget is None else parse_budget(budget)


def check_filter(pattern: str | None) -> None:
    if pattern:
        from resnet_trace.views import filter_rows

        filter_rows((), pattern)  # validate the regex before any work


# -- groups: options that travel together -------------------------------------------
@dataclass(frozen=True)
class ModelFlags:
    """The flags that choose the model (``summary``, ``run``, ``graph``, ``tree``)."""

    base_dim: BaseDim = None
    num_classes: NumClasses = None
    variant: VariantOpt = Variant.SEED
    head: HeadOpt = Head.AVGPOOL7
    model: ModelOpt = None
    model_arg: ModelArgs = None
    block: BlockOpt = None
    skip: SkipOpt = None

    def choice(self) -> Any:
        """The :class:`~resnet_trace.choice.ModelChoice` the flags name."""
        from resnet_trace.choice import ModelChoice
        from resnet_trace.usermodel import parse_model_args

        block = self.block
        return ModelChoice(
            model=self.model,
            base_dim=self.base_dim,
            num_classes=self.num_classes,
            variant=self.variant,
            head=self.head,
            args=parse_model_args(self.model_arg),
            block=None if block is None else tuple(b.strip() for b in block.split(",") if b.strip()) or None,
            skip=skip_names(self.skip),
        )


@dataclass(frozen=True)
class OutputFlags:
    """Where a table or document goes: ``--format``, ``-o`` and ``--svg``."""

    format: FormatOpt = Format.TABLE
    output: Output = None
    svg: SvgOpt = None


@dataclass(frozen=True)
class RowFlags:
    """Which rows a trace shows: ``--depth``, ``--collapse``, ``--filter``."""

    depth: DepthOpt = Depth.BLOCK
    collapse: CollapseOpt = False
    filter: FilterOpt = None


def with_groups(command: Callable[..., int]) -> Callable[..., int]:
    """``command`` as Typer reads it: each parameter whose type is a group (a dataclass of options)
    spread into the group's options, in place; each call gathers them back into the group."""
    hints = get_type_hints(command, include_extras=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[str]]] = {}
    for p in inspect.signature(command).parameters.values():
        kind = hints[p.name]
        if not (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
            params.append(p.replace(kind=p.KEYWORD_ONLY, annotation=kind))
            continue
        options = get_type_hints(kind, include_extras=True)
        fields = dataclasses.fields(kind)
        groups[p.name] = (kind, [f.name for f in fields])
        params += [
            inspect.Parameter(f.name, p.KEYWORD_ONLY, annotation=options[f.name], default=f.default)
            for f in fields
        ]

    @functools.wraps(command)
    def gathered(**flags: Any) -> int:
        for name, (kind, fields) in groups.items():
            flags[name] = kind(**{f: flags.pop(f) for f in fields})
        return command(**flags)

    gathered.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    gathered.__annotations__ = {p.name: p.annotation for p in params}
    return gathered


class progress:
    """A Rich progress bar on stderr for long runs, only when both stdout and stderr are terminals."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Any:
        from resnet_trace.cli.streams import data_stream

        if self.total < 3 or not (data_stream().isatty() and sys.stderr.isatty()):
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
