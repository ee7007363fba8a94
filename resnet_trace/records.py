"""Frozen records: what a trace returns and what every renderer reads. No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

Shape = tuple[int, ...]


def shape_text(shape: Shape | None) -> str:
    """``(1, 256, 56, 56)`` -> ``1x256x56x56``; empty for no shape."""
    return "x".join(str(d) for d in shape) if shape else ""


class Depth(str, Enum):
    """How deep the rows go: stages, blocks (default), or every leaf-module call."""

    STAGE = "stage"
    BLOCK = "block"
    LAYER = "layer"


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
    kind: str
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


@dataclass(frozen=True, slots=True)
class Totals:
    """Whole-model totals: params from ``model.parameters()``, MACs from every call."""

    params: int
    params_unused: int
    unused_modules: tuple[str, ...]
    macs: int


@dataclass(frozen=True, slots=True)
class TraceError:
    """Where and why the forward stopped."""

    module: str
    message: str
    hint: str
    in_shape: Shape | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    base_dim: int | None
    num_classes: int | None
    variant: str = "seed"
    head: str = "avgpool7"
    source: str = "builtin"  # or the --model reference, e.g. "mynet.py:ResNet"
    block: str = "BottleNeck"
    skip: tuple[str, ...] = ("downsample", "dim_equalizer")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What only a real forward gives: logits, top-k, timings."""

    seed: int | None
    repeat: int
    forward_ms: float
    hook_overhead_ms: float | None
    logits: tuple | None
    top_k: tuple[tuple[int, float], ...] | None
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

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Report:
    """A trace and the rows chosen to show it (depth, collapse, filter): what renderers read."""

    trace: Trace
    rows: tuple[Row, ...]
    depth: Depth = Depth.BLOCK
    collapsed: bool = False
    filter: str | None = None


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
