"""What to trace and how: the model choice and the trace options, as two frozen records.

Every caller (the CLI's commands, ``resnet_trace.trace``, ``check``, ``tree``) states its wish
as a :class:`ModelChoice` and a :class:`TraceOptions`; :func:`resnet_trace.pipeline.trace_inputs`
is the one route that carries both out. Each field has an effect, or the record refuses it here.
No torch at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from resnet_trace.errors import UsageError
from resnet_trace.layout import BASE_DIM, NUM_CLASSES
from resnet_trace.records import CUSTOM, Device, DType, Head, Optimizer, Precision, Shard, Variant
from resnet_trace.spec import InvalidValue, SeedConfig, integer, word


@dataclass(frozen=True)
class ModelChoice:
    """The model to trace.

    ``model`` is ``None`` for the built-in seed (``base_dim``, ``num_classes``, ``variant``,
    ``head`` build it), a ``PATH.py:NAME`` / ``package.module:NAME`` reference (built with
    ``args``, plus ``base_dim``/``num_classes`` when given), or an ``nn.Module`` instance (used
    as it is). ``block`` names the block classes (found from the dataflow when ``None``);
    ``skip`` names the child modules to report as the skip path when they ran.
    """

    model: Any = None
    base_dim: int | None = None
    num_classes: int | None = None
    variant: Variant | str = Variant.SEED  # a word is read as its member
    head: Head | str = Head.AVGPOOL7
    args: Mapping[str, Any] = field(default_factory=dict)
    block: Any = None  # a class name, a class, or several: held as a tuple
    skip: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", word("variant", Variant, self.variant))
        object.__setattr__(self, "head", word("head", Head, self.head))
        if isinstance(self.block, (str, type)):
            object.__setattr__(self, "block", (self.block,))
        elif self.block is not None:
            object.__setattr__(self, "block", tuple(self.block))
        for name in ("base_dim", "num_classes"):
            if getattr(self, name) is not None:
                integer(name, getattr(self, name))
        if self.model is None:
            if self.args:
                raise UsageError(
                    "--model-arg passes arguments to --model; the built-in model takes --base-dim, --num-classes"
                )
            return
        if not isinstance(self.model, str) and (
            self.variant is not Variant.SEED or self.head is not Head.AVGPOOL7
        ):
            name = "variant" if self.variant is not Variant.SEED else "head"
            raise InvalidValue(
                name,
                f"{name}={str(getattr(self, name))!r} changes the built-in model; a model passed in is traced as it is",
            )
        if self.variant is not Variant.SEED or self.head is not Head.AVGPOOL7:
            raise UsageError(
                "--variant and --head change the built-in model; with --model, edit your own file"
            )
        if not isinstance(self.model, str):
            given = [n for n in ("base_dim", "num_classes") if getattr(self, n) is not None]
            if given or self.args:
                what = given[0] if given else "args"
                raise InvalidValue(
                    what, f"{what} builds a model; a model passed as an instance is traced as it is"
                )

    @property
    def builtin(self) -> bool:
        """The seed's own model, built from its flags."""
        return self.model is None

    @property
    def reference(self) -> str | None:
        """The ``PATH.py:NAME`` reference, when the model is one."""
        return self.model if isinstance(self.model, str) else None

    def seed_config(self) -> SeedConfig:
        """The built-in model's four settings, the defaults filled in for those not chosen."""
        return SeedConfig(
            BASE_DIM if self.base_dim is None else self.base_dim,
            NUM_CLASSES if self.num_classes is None else self.num_classes,
            Variant(self.variant),
            Head(self.head),
        )

    def words(self) -> tuple[str, str]:
        """``variant`` and ``head`` as a trace records them (``custom`` for a model of your own)."""
        if self.builtin:
            return str(self.variant), str(self.head)
        return CUSTOM, CUSTOM


def _check_pattern(pattern: str) -> None:
    import re

    if not isinstance(pattern, str) or len(pattern) > 1000:
        raise InvalidValue("trainable", "trainable must be a regular expression of at most 1,000 characters")
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise InvalidValue("trainable", f"trainable {pattern!r} is not a regular expression: {exc}") from None


@dataclass(frozen=True)
class TraceOptions:
    """How to trace each input: shape-only (``summary``) or a real forward (``run``), and what to add.

    ``real`` runs the model on ``device`` in ``dtype`` (random weights under ``seed`` unless
    ``weights``; a random normal input under ``seed`` unless ``input_file``); ``repeat`` > 1 adds
    timed passes. ``leaves`` adds statistics and times to every leaf call (``--depth layer``).
    ``save_output`` writes the forward's full outputs to a ``.npy`` or ``.pt`` file.
    ``train``/``optimizer``/``budget`` add a training step's memory; ``backward``/``target_class``
    a real backward with gradient norms. A shape-only trace takes ``dtype`` too.
    """

    real: bool = False
    seed: int = 0
    weights: str | None = None
    input_file: str | None = None
    repeat: int = 1
    top_k: int = 5
    device: Device | str | None = None  # None: the model's own (the CPU for the models this tool builds)
    dtype: DType | str | None = None  # None: the model's own (float32 for the models this tool builds)
    leaves: bool = False
    train: bool = False
    optimizer: Optimizer | str = Optimizer.ADAM
    budget: int | None = None
    backward: bool = False
    target_class: int = 0
    example: Any = None  # a Feed of example tensors (the API's inputs=): a real forward runs on them
    precision: Precision | str = Precision.FP32  # a training step's storage and compute (--train)
    checkpoint: bool = False  # every block checkpointed (--train)
    trainable: str | None = None  # a regex: only parameters whose name matches get a gradient (--train)
    gpus: int = 1  # devices a training step is sharded over (--train; --backward runs it for real)
    shard: Shard | str = Shard.NONE  # what is sharded over them
    save_output: str | None = None  # a .npy/.pt file for the real forward's full outputs (--save-output)

    def __post_init__(self) -> None:
        if self.device is not None:
            object.__setattr__(self, "device", word("device", Device, self.device))
        if self.dtype is not None:
            object.__setattr__(self, "dtype", word("dtype", DType, self.dtype))
        object.__setattr__(self, "optimizer", word("optimizer", Optimizer, self.optimizer))
        object.__setattr__(self, "precision", word("precision", Precision, self.precision))
        object.__setattr__(self, "shard", word("shard", Shard, self.shard))
        integer("gpus", self.gpus)
        for name, given in (
            ("precision", self.precision is not Precision.FP32),
            ("checkpoint", self.checkpoint),
            ("trainable", self.trainable is not None),
            ("gpus", self.gpus != 1 and not self.backward),
            ("shard", self.shard is not Shard.NONE and not self.backward),
        ):
            if given and not (self.train or self.budget is not None):
                raise InvalidValue(name, f"{name} describes a training step: it applies with train (--train)")
        if self.trainable is not None:
            _check_pattern(self.trainable)
        integer("seed", self.seed, low=0)
        integer("repeat", self.repeat)
        integer("top_k", self.top_k)
        integer("target", self.target_class, low=0)
        if self.budget is not None:
            integer("budget", self.budget)
        if self.example is not None and self.input_file is not None:
            raise InvalidValue("inputs", "give example tensors or input_file, not both")
        if self.weights is not None or self.input_file is not None or self.backward or self.save_output:
            object.__setattr__(self, "real", True)
        if self.budget is not None:
            object.__setattr__(self, "train", True)
        if self.real and self.train:
            raise UsageError("train and budget are summary's (shape-only); a real forward takes backward")

    @property
    def command(self) -> str:
        return "run" if self.real else "summary"
