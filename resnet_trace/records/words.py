"""The closed sets of words: each value is at once the JSON value, the CLI choice and the docs word."""

from __future__ import annotations

from enum import Enum


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


class Precision(_Word):
    """How a training step stores and runs (``--precision``): parameters in ``fp32``, ``bf16`` or
    ``fp16`` and the forward in the same; or fp32 master weights with the forward under
    ``torch.autocast`` (``bf16-autocast``, ``fp16-autocast``)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    BF16_AUTOCAST = "bf16-autocast"
    FP16_AUTOCAST = "fp16-autocast"

    @property
    def autocast(self) -> bool:
        return self.value.endswith("-autocast")

    @property
    def dtype_word(self) -> str:
        """The floating dtype it stores (plain) or computes in (autocast), as a torch dtype word."""
        return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[self.value.split("-")[0]]


class Shard(_Word):
    """What is split over the devices (``--shard``): nothing (DDP), the optimizer state (ZeRO-1),
    gradients and optimizer state (FSDP2 without resharding), or everything (FSDP2, ZeRO-3)."""

    NONE = "none"
    OPTIMIZER = "optimizer"
    GRADIENTS = "gradients"
    FULL = "full"

    @property
    def fsdp(self) -> bool:
        """Parameters live as ``fully_shard``'s dim-0 chunks (``gradients``, ``full``)."""
        return self in (Shard.GRADIENTS, Shard.FULL)


class Depth(_Word):
    """How deep the rows go: stages, blocks (default), or every leaf-module call."""

    STAGE = "stage"
    BLOCK = "block"
    LAYER = "layer"


class Kind(_Word):
    """What a row is. ``block`` is any residual block, the seed's ``BottleNeck`` or a layer of your model.

    Older documents wrote ``bottleneck`` for every block; ``Kind("bottleneck")`` still reads as
    ``Kind.BLOCK``, and ``check``/``diff`` take a golden's ``bottleneck`` for ``block``.
    """

    STEM = "stem"  # work before the first block
    STAGE = "stage"  # the innermost call around a run of blocks
    BLOCK = "block"
    POOL = "pool"
    FC = "fc"
    MODULE = "module"  # other work outside the blocks
    LAYER = "layer"  # a leaf call (or a module's own operations) inside a block or frame row

    @classmethod
    def _missing_(cls, value: object) -> Kind | None:
        return cls.BLOCK if value == LEGACY_BLOCK_WORD else None


#: What older documents called a block row's ``kind`` (``Kind.BLOCK`` now writes ``block``).
LEGACY_BLOCK_WORD = "bottleneck"
