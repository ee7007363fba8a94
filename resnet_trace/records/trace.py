"""The frozen records of one trace: rows, totals, the model, and the module tree. No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resnet_trace.records.words import Depth, Head, Kind, Variant
from resnet_trace.units import Shape


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

    ``kind``: ``stem``, ``stage``, ``block``, ``pool``, ``fc``, ``module`` or ``layer``.
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
    unread_params: tuple[str, ...] = ()  # names of the parameters no operation read (not in JSON)


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
    # how they were found: "joins" (the outermost modules joining their own stream), "repeated"
    # (the repeated class of the longest Sequential/ModuleList) or "none"; "" when given
    block_rule: str = ""


@dataclass(frozen=True, slots=True)
class OutputInfo:
    """One tensor of a model's output nest: ``path`` like ``logits``, ``0``, ``hidden_states.2``."""

    path: str
    shape: Shape
    dtype: str
    stats: Activation | None = None  # run: statistics of its values (a broadcast view read once)


@dataclass(frozen=True, slots=True)
class RankInfo:
    """One device's share of a sharded training step (``--gpus N --shard MODE``), in bytes.

    ``params_bytes``/``grads_bytes``/``optimizer_bytes`` are what the engine's local tensors hold;
    ``padding_bytes`` FSDP's allocation past the local chunks; ``gathered_bytes`` unsharded
    parameters in flight and ``reduce_bytes`` gradient-reduction buffers (docs/training.md);
    ``activations_bytes`` at the per-device batch. ``measured_*``: ``run --backward``'s real step.
    """

    rank: int
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    padding_bytes: int
    gathered_bytes: int
    reduce_bytes: int
    activations_bytes: int
    peak_bytes: int
    measured_params_bytes: int | None = None
    measured_grads_bytes: int | None = None
    measured_optimizer_bytes: int | None = None
    measured_peak_bytes: int | None = None


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
    precision: str = "fp32"  # a Precision's word
    checkpoint: bool = False  # every block checkpointed: its inputs kept, its inside recomputed
    recompute_bytes: int = 0  # --checkpoint: the largest block's saved bytes, live again in the backward
    trainable_params: int | None = None  # parameters that get a gradient (required and read); None: all
    gpus: int = 1  # devices the step is sharded over (--gpus)
    shard: str = "none"  # a Shard's word
    ranks: tuple[RankInfo, ...] = ()  # --gpus > 1: every rank in order; peak_bytes is the largest's


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
class InputTensor:
    """One tensor of a model's input: passed as keyword ``name``, or positionally when ``None``.

    ``dtype`` is a torch dtype's word (``int64``); ``None`` is a floating input in the model's own
    floating dtype. ``low``/``high``: the values ``run`` draws, in ``[low, high)``.
    """

    name: str | None
    shape: Shape
    dtype: str | None = None
    low: float | None = None
    high: float | None = None


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
    # Every tensor of the input, dtypes resolved; () for one positional tensor of ``input_shape``.
    inputs: tuple[InputTensor, ...] = ()


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


@dataclass(frozen=True, slots=True)
class Difference:
    """One field where ``check``/``diff`` found two documents disagree (values as in the JSON)."""

    row: str
    field: str
    expected: object
    got: object
