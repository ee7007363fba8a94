"""Frozen records: what a trace returns and what every renderer reads. No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

Shape = tuple[int, ...]


def shape_text(shape: Shape | None) -> str:
    """``(1, 256, 56, 56)`` -> ``1x256x56x56``; empty for no shape."""
    return "x".join(str(d) for d in shape) if shape else ""


class _Word(str, Enum):
    """A closed set of words: the value is the JSON value, the CLI choice and the docs word at once."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Variant(_Word):
    """Which block builds the seed's model: the code as written (default), or its two slips corrected."""

    SEED = "seed"
    FIXED = "fixed"


class Head(_Word):
    """The pool before ``fc_layer``: the seed's ``AvgPool2d(7, 1)`` (default), or ``AdaptiveAvgPool2d(1)``."""

    AVGPOOL7 = "avgpool7"
    ADAPTIVE = "adaptive"


#: ``ModelInfo.variant`` and ``.head`` of a model of your own (never a choice: your code decides).
CUSTOM = "custom"


class Format(_Word):
    """How a result is written: a Rich table (default), JSON, JSON Lines, CSV or Markdown."""

    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"
    MARKDOWN = "markdown"


class GraphFormat(_Word):
    """How the block chain is drawn: Mermaid (default; renders on GitHub) or Graphviz DOT."""

    MERMAID = "mermaid"
    DOT = "dot"


class Device(_Word):
    """Where a real forward runs (default the CPU); ``auto`` picks cuda when present, ``meta`` traces shapes."""

    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"
    META = "meta"
    AUTO = "auto"


class DType(_Word):
    """The parameter and input dtype of a trace (default float32)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class Optimizer(_Word):
    """The optimizers whose state ``--train`` accounts for (default adam)."""

    SGD = "sgd"
    MOMENTUM = "momentum"
    ADAM = "adam"
    ADAMW = "adamw"

    @property
    def state_multiplier(self) -> int:
        """Copies of the trainable parameters the optimizer keeps: momentum 1; Adam(W) exp_avg and exp_avg_sq."""
        return _STATE_COPIES[self]


_STATE_COPIES = {Optimizer.SGD: 0, Optimizer.MOMENTUM: 1, Optimizer.ADAM: 2, Optimizer.ADAMW: 2}


class Depth(_Word):
    """How deep the rows go: stages, blocks (default), or every leaf-module call."""

    STAGE = "stage"
    BLOCK = "block"
    LAYER = "layer"


class Kind(_Word):
    """What a row is. ``bottleneck`` is any block (the name comes from the seed's ``BottleNeck``)."""

    STEM = "stem"  # work before the first block
    STAGE = "stage"  # the innermost call around a run of blocks
    BLOCK = "bottleneck"
    POOL = "pool"
    FC = "fc"
    MODULE = "module"  # other work outside the blocks
    LAYER = "layer"  # a leaf call (or a module's own operations) inside a block or frame row


@dataclass(frozen=True, slots=True)
class Activation:
    """Statistics of a row's output tensor (``run`` only)."""

    mean: float
    std: float
    min: float
    max: float
    zero_fraction: float


@dataclass(frozen=True, slots=True)
class ConvInfo:
    """Geometry of a ``Conv2d`` call (layer rows)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    weight_shape: Shape
    bias: bool


@dataclass(frozen=True, slots=True)
class Row:
    """One traced module call.

    ``kind``: ``stem``, ``stage``, ``bottleneck``, ``pool``, ``fc``, ``module`` or ``layer``.
    ``depth``: the level of the module tree the row belongs to (``stage`` is the top).
    ``skip``: for blocks, the skip module that ran, or ``identity``.
    """

    name: str
    kind: Kind
    depth: Depth
    in_shape: Shape | None
    out_shape: Shape | None
    params: int
    macs: int
    parent: str | None = None
    stage: str | None = None
    down: bool | None = None
    skip: str | None = None
    params_unused: int = 0
    module_type: str | None = None
    conv: ConvInfo | None = None
    blocks: int | None = None  # stage rows: how many blocks ran
    count: int = 1  # > 1 where --collapse folded identical blocks
    time_ms: float | None = None
    activation: Activation | None = None
    skips: tuple[str, ...] | None = None  # blocks: one entry per residual add, in order
    call: int = 1  # the k of "NAME (call k/n)" for a module called n times
    calls: int = 1
    saved_bytes: int | None = None  # --train: distinct activation storages autograd saved in this call
    out_bytes: int | None = None  # --train: bytes of the output tensors
    grad_norm: float | None = None  # run --backward: L2 norm of dloss/doutput
    param_grad_norm: float | None = None  # run --backward: L2 norm over the row's own parameters' grads


@dataclass(frozen=True, slots=True)
class Totals:
    """Whole-model totals: params from ``model.parameters()``, MACs from every call."""

    params: int
    params_unused: int
    unused_modules: tuple[str, ...]
    macs: int
    activations_bytes: int | None = None  # --train: every distinct storage autograd saved


@dataclass(frozen=True, slots=True)
class TraceError:
    """Where and why the forward stopped."""

    module: str
    message: str
    hint: str


@dataclass(frozen=True, slots=True)
class ModelInfo:
    base_dim: int | None
    num_classes: int | None
    variant: str = Variant.SEED  # a Variant, or CUSTOM for a model of your own
    head: str = Head.AVGPOOL7  # a Head, or CUSTOM
    source: str = "builtin"  # or the --model reference, e.g. "mynet.py:ResNet"
    block: str = "BottleNeck"  # the block class(es), joined by ","
    skip: tuple[str, ...] = (
        "downsample",
        "dim_equalizer",
    )  # kept for old documents; skips come from the dataflow
    model_class: str | None = None  # the class that was built
    model_params: int | None = None
    args: tuple[tuple[str, str], ...] = ()  # the arguments passed to the factory: (name, repr)
    block_found: bool = False  # the block class was found by the tool, not given


@dataclass(frozen=True, slots=True)
class OutputInfo:
    """One tensor of a model's output nest: ``path`` like ``logits``, ``0``, ``hidden_states.2``."""

    path: str
    shape: Shape
    dtype: str


@dataclass(frozen=True, slots=True)
class TrainInfo:
    """The memory of one training step (``--train``) and, for ``run --backward``, what was measured."""

    optimizer: str  # an Optimizer's word
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int  # every distinct storage autograd saved, stem and head included
    transient_bytes: int  # the largest transient of the backward (docs/training.md)
    peak_bytes: int
    budget_bytes: int | None = None
    fit_batch: int | None = None  # largest batch whose peak_bytes fits budget_bytes
    measured_peak_bytes: int | None = None  # run --backward only
    loss: float | None = None  # run --backward only
    target: int | None = None  # run --backward only: the class of the cross-entropy target


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What only a real forward gives: logits, top-k, timings."""

    seed: int | None
    repeat: int
    forward_ms: float
    hook_overhead_ms: float | None
    logits: tuple[Any, ...] | None  # [N][classes], nested tuples of floats
    top_k: tuple[tuple[tuple[int, float], ...], ...] | None  # per sample: (class, probability), best first
    weights: str | None = None
    input_file: str | None = None


@dataclass(frozen=True, slots=True)
class Trace:
    """Everything a trace observed, in forward order. Renderers pick rows by depth."""

    command: str
    model: ModelInfo
    device: str
    dtype: str
    input_shape: Shape
    output_shape: Shape | None
    rows: tuple[Row, ...]
    totals: Totals
    error: TraceError | None = None
    accepted_sizes: tuple[int, int] | None = None
    run: RunInfo | None = None
    outputs: tuple[OutputInfo, ...] = ()
    train: TrainInfo | None = None
    notes: tuple[str, ...] = ()  # what the user should know about how it was traced (stderr)


class _Document:
    """``to_dict()``/``to_json()``: exactly the CLI's ``--format json`` document (resnet_trace.document)."""

    __slots__ = ()

    def to_dict(self) -> Any:
        from resnet_trace.document import to_dict

        return to_dict(self)

    def to_json(self) -> str:
        from resnet_trace.document import to_json

        return to_json(self)


@dataclass(frozen=True, slots=True)
class Report(_Document):
    """A trace and the rows chosen to show it (depth, collapse, filter): what renderers read."""

    trace: Trace
    rows: tuple[Row, ...]
    depth: Depth = Depth.BLOCK
    collapsed: bool = False
    filter: str | None = None

    # The trace's own fields, read through the report (``trace(...).totals``).
    @property
    def totals(self) -> Totals:
        return self.trace.totals

    @property
    def model(self) -> ModelInfo:
        return self.trace.model

    @property
    def error(self) -> TraceError | None:
        return self.trace.error

    @property
    def input_shape(self) -> Shape:
        return self.trace.input_shape

    @property
    def output_shape(self) -> Shape | None:
        return self.trace.output_shape

    @property
    def outputs(self) -> tuple[OutputInfo, ...]:
        return self.trace.outputs

    @property
    def run(self) -> RunInfo | None:
        return self.trace.run

    @property
    def train(self) -> TrainInfo | None:
        return self.trace.train


@dataclass(frozen=True, slots=True)
class Reports(_Document):
    """Several inputs' reports: the CLI prints one document for one input, an array for several."""

    reports: tuple[Report, ...]


@dataclass(frozen=True, slots=True)
class Differences(_Document):
    """What ``check`` and ``diff`` found: ``differences`` is empty when the traces agree."""

    expected: str
    got: str
    differences: tuple[Any, ...]  # resnet_trace.diffing.Difference


@dataclass(frozen=True, slots=True)
class Comparison(_Document):
    """``compare``: the seed beside its fixed variant."""

    seed: Report
    fixed: Report


@dataclass(frozen=True, slots=True)
class ModuleTree(_Document):
    """``tree``: the module tree, marked with what ran in a trace of ``input_shape``."""

    root: TreeNode
    input_shape: Shape
    error: TraceError | None = None


@dataclass(frozen=True, slots=True)
class TreeNode:
    """One module in the module tree (``resnet-trace tree``)."""

    name: str  # full path; "" for the root
    attr: str  # its attribute name under its parent
    type: str
    params: int  # parameters under it, each counted once
    own_params: int  # parameters registered directly on it
    ran: bool
    alias_of: str | None  # a shared module seen again: the path where it was first shown
    children: tuple[TreeNode, ...] = ()
