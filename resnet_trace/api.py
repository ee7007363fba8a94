"""The Python API: the public calls, each one path through the library.

>>> from resnet_trace import trace
>>> t = trace(base_dim=64, input_shape=(1, 3, 224, 224))   # shape-only, on "meta"
>>> t.totals.params, t.totals.macs
(39423874, 5368434688)

``trace`` states its wish as a :class:`~resnet_trace.choice.ModelChoice` and
:class:`~resnet_trace.choice.TraceOptions` and hands both to
:func:`resnet_trace.pipeline.trace_inputs`, the route every command takes. The names the
commands used before that route existed stay at the end, for one release (docs/api.md).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from resnet_trace import diffing, goldens
from resnet_trace.choice import ModelChoice, TraceOptions
from resnet_trace.errors import UsageError
from resnet_trace.goldens import report
from resnet_trace.inputs import InputError, from_api
from resnet_trace.pipeline import trace_inputs
from resnet_trace.prepare import with_blocks
from resnet_trace.records import (
    Comparison,
    Depth,
    Device,
    DType,
    Head,
    ModuleTree,
    Optimizer,
    Precision,
    Report,
    Shape,
    Shard,
    Trace,
    Variant,
)
from resnet_trace.spec import InvalidType, InvalidValue, SeedConfig, check_shape
from resnet_trace.target import Target, build, builtin_target, check_channels, default_call

__all__ = ["check", "compare", "diff", "report", "trace", "tree"]

#: The CLI's flags and the parameters a Python caller wrote for them.
_PARAMETERS = {
    "--input-file": "input_file",
    "--input": "inputs",
    "--weights": "weights",
    "--save-output": "save_output",
    "--base-dim": "base_dim",
    "--num-classes": "num_classes",
    "--model-arg": "model_args",
    "--model": "model",
    "--block": "block",
    "--skip": "skip",
    "--budget": "budget",
    "--filter": "filter",
    "--device": "device",
    "--dtype": "dtype",
    "--repeat": "repeat",
    "--top-k": "top_k",
    "--seed": "seed",
    "--target": "target",
    "--precision": "precision",
    "--trainable": "trainable",
    "--gpus": "gpus",
    "--shard": "shard",
    "--optimizer": "optimizer",
    "--variant": "variant",
    "--head": "head",
}

F = TypeVar("F", bound=Callable[..., Any])


def python_errors(func: F) -> F:
    """A public call's refusals as Python's: a ``ValueError`` (or ``TypeError``) that names the
    parameter as the caller wrote it; the CLI's own words name its flags."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UsageError as exc:
            if isinstance(exc, (ValueError, TypeError)) and not any(f in str(exc) for f in _PARAMETERS):
                raise
            message = str(exc)
            field = getattr(exc, "field", None)
            for flag, name in _PARAMETERS.items():
                if flag in message:
                    message = message.replace(flag + " ", name + " ").replace(flag, name)
                    field = field or name
            kind = InvalidType if isinstance(exc, TypeError) else InvalidValue
            raise kind(field or "arguments", message) from None
        except (OverflowError, RecursionError) as exc:  # a value too large for Python to hold
            raise InvalidValue("arguments", f"{type(exc).__name__}: {exc}") from None

    return wrapper  # type: ignore[return-value]


check = python_errors(goldens.check)
diff = python_errors(diffing.diff)


@python_errors
def trace(
    *,
    model: nn.Module | None = None,
    block: str | type[nn.Module] | Sequence[str | type[nn.Module]] | None = None,
    base_dim: int | None = None,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    inputs: Any = None,
    variant: Variant | str = Variant.SEED,
    head: Head | str = Head.AVGPOOL7,
    real: bool = False,
    seed: int | None = None,
    weights: str | os.PathLike[str] | None = None,
    input_file: str | os.PathLike[str] | None = None,
    repeat: int | None = None,
    top_k: int | None = None,
    device: Device | str | None = None,
    dtype: DType | str | None = None,
    depth: Depth | str = Depth.BLOCK,
    collapse: bool = False,
    filter: str | None = None,
    train: bool = False,
    optimizer: Optimizer | str | None = None,
    budget: int | str | None = None,
    precision: Precision | str = Precision.FP32,
    checkpoint: bool = False,
    trainable: str | None = None,
    gpus: int = 1,
    shard: Shard | str = Shard.NONE,
    backward: bool = False,
    target: int | None = None,
    save_output: str | os.PathLike[str] | None = None,
) -> Report:
    """Trace one input of the seed's model (or of ``model``) and return the rows shown at ``depth``.

    ``real=False`` (default) is ``resnet-trace summary``: shapes, params and MACs, shape-only
    (on ``meta`` for the seed and for a model built there). ``real=True`` is ``resnet-trace run``:
    the seed's initialisation under ``seed`` (or ``weights``), a random normal input (or
    ``input_file``), a forward with activation statistics; ``repeat`` > 1 adds timed passes.
    ``save_output`` (a ``.npy`` or ``.pt`` path) gets the forward's full outputs (``run
    --save-output``). ``weights``, ``input_file``, ``backward`` and ``save_output`` imply ``real``. ``device`` and ``dtype`` default to
    the model's own (the CPU and float32 for the seed); a ``model`` passed in is copied before it
    is moved, cast or loaded into, never changed.
    ``train``/``optimizer``/``budget`` add a training step's memory (``summary --train``), with
    ``precision`` (``"bf16"``, ``"bf16-autocast"``...), ``checkpoint`` (every block) and
    ``trainable`` (a regex: only matching parameters get gradients) describing the step;
    ``backward``/``target`` a real backward with gradient norms (``run --backward``).
    An option that does not apply to the trace asked for is a ``ValueError``.
    The result's ``to_dict()`` is the CLI's ``--format json`` document for the same options.

    ``inputs`` feeds a ``model`` anything its ``forward`` takes: example tensors (one, a list of
    positional ones, or a ``{name: tensor}`` dict; a real forward runs on them as they are), a
    ``{name: (shape, dtype)}`` dict (``{"input_ids": ((2, 16), torch.int64)}``), a list of shapes,
    or an ``--input`` string (``"input_ids=2x16:int64,attention_mask=2x16:int64"``).
    ``input_shape`` is one positional floating tensor of any rank (NxCxHxW for the seed).
    """
    if input_shape is not None and inputs is not None:
        raise InvalidValue("inputs", "give input_shape or inputs, not both")
    _check_filter(filter)
    call, example = _api_inputs(model, input_shape, inputs)
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    is_real = real or backward or weights is not None or input_file is not None or save_output is not None
    for name, value, applies in (
        ("seed", seed, is_real),
        ("repeat", repeat, is_real),
        ("top_k", top_k, is_real),
        ("device", device, is_real),
        ("target", target, backward),
        ("optimizer", optimizer, train or budget is not None),
    ):
        if value is not None and not applies:
            needs = (
                "backward=True" if name == "target" else "train=True" if name == "optimizer" else "real=True"
            )
            raise InvalidValue(name, f"{name}={value!r} applies only with {needs}")
    choice = ModelChoice(
        model=model, base_dim=base_dim, num_classes=num_classes, variant=variant, head=head, block=block
    )
    options = TraceOptions(
        real=is_real,
        seed=0 if seed is None else seed,
        weights=None if weights is None else str(weights),
        input_file=None if input_file is None else str(input_file),
        repeat=1 if repeat is None else repeat,
        top_k=5 if top_k is None else top_k,
        device=device,
        dtype=dtype,
        leaves=Depth(depth) is Depth.LAYER,
        train=train or budget is not None,
        optimizer=optimizer or Optimizer.ADAM,
        budget=_budget(budget),
        backward=backward,
        target_class=0 if target is None else target,
        example=example,
        precision=precision,
        checkpoint=checkpoint,
        trainable=trainable,
        gpus=gpus,
        shard=shard,
        save_output=None if save_output is None else os.fspath(save_output),
    )
    try:
        (t,) = trace_inputs(choice, [call] if call else None, options)
    except InputError as exc:  # the CLI's words for an input, in the caller's
        raise InputError(str(exc).replace("--input ", "inputs: ", 1)) from None
    return report(t, depth=depth, collapse=collapse, filter=filter)


def _api_inputs(model: Any, input_shape: Any, inputs: Any) -> tuple[Any, Any]:
    """The call ``input_shape`` or ``inputs`` names, and the example tensors when they are some."""
    from resnet_trace.feed import describe

    if inputs is not None:
        described = describe(inputs)
        try:
            return described if described is not None else (from_api(inputs), None)
        except InputError as exc:
            raise InputError(str(exc).replace("--input ", "inputs: ", 1)) from None
    if input_shape is None:
        return None, None
    if model is None:
        try:
            return check_shape(input_shape), None
        except UsageError as exc:
            if isinstance(exc, (ValueError, TypeError)):
                raise
            raise InvalidValue("input_shape", str(exc).replace("--input ", "input_shape ", 1)) from None
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (tuple, list)):
        raise InvalidType("input_shape", f"input_shape must be a sequence of integers, not {input_shape!r}")
    return from_api([tuple(input_shape)]), None


def _check_filter(pattern: str | None) -> None:
    import re

    if pattern is None:
        return
    if not isinstance(pattern, str):
        raise InvalidType("filter", f"filter must be a str, not {type(pattern).__name__}")
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise InvalidValue("filter", f"filter {pattern[:80]!r} is not a regular expression: {exc}") from None


def _budget(budget: int | str | None) -> int | None:
    from resnet_trace.memory import parse_budget

    return parse_budget(budget) if isinstance(budget, str) else budget


@python_errors
def compare(
    *,
    base_dim: int = 64,
    num_classes: int = 2,
    input_shape: Sequence[int] = (1, 3, 224, 224),
    head: Head | str = Head.AVGPOOL7,
    train: bool = False,
    seed: int = 0,
    target: int = 0,
) -> Comparison:
    """The seed beside its fixed variant, block by block.

    ``train`` adds what a training step needs: per block the activations autograd saves (shape-only)
    and, from a real forward and backward of each variant initialised under ``seed``, the gradient
    norms against class ``target`` and the measured peak beside the predicted one.
    """
    shape = check_shape(input_shape)
    reports = []
    for variant in Variant:
        choice = ModelChoice(base_dim=base_dim, num_classes=num_classes, variant=variant, head=head)
        (shaped,) = trace_inputs(choice, [shape], TraceOptions(train=train))
        if train and shaped.error is None:
            real_options = TraceOptions(real=True, seed=seed, backward=True, target_class=target)
            (real,) = trace_inputs(choice, [shape], real_options)
            saved = {r.name: (r.saved_bytes, r.out_bytes) for r in shaped.rows}
            rows = tuple(
                dataclasses.replace(
                    r,
                    saved_bytes=saved.get(r.name, (None, None))[0],
                    out_bytes=saved.get(r.name, (None, None))[1],
                )
                for r in real.rows
            )
            shaped = dataclasses.replace(real, rows=rows, totals=shaped.totals)
        reports.append(report(shaped))
    return Comparison(seed=reports[0], fixed=reports[1])


@python_errors
def tree(
    *,
    model_ref: str | None = None,
    base_dim: int | None = None,
    num_classes: int | None = None,
    variant: Variant | str = Variant.SEED,
    head: Head | str = Head.AVGPOOL7,
    model_args: dict[str, Any] | None = None,
    block: str | None = None,
    input_shape: Sequence[int] | None = None,
) -> ModuleTree:
    """The module tree with parameter counts, marked with what ran in a shape-only trace."""
    choice = ModelChoice(model_ref, base_dim, num_classes, variant, head, model_args or {}, block)
    return choice_tree(choice, input_shape)


def choice_tree(choice: ModelChoice, input_shape: Any = None) -> ModuleTree:
    """:func:`tree` of a :class:`~resnet_trace.choice.ModelChoice` (``resnet-trace tree`` calls it)."""
    from resnet_trace.feed import as_call, plain_shape
    from resnet_trace.tracer import tree_of

    target = build(choice)
    call = as_call(tuple(input_shape)) if input_shape else default_call(target)
    plain = plain_shape(call)
    if plain is not None:
        check_channels(target, plain)
    root, error = tree_of(target, call)
    return ModuleTree(root=root, input_shape=call[0].shape, error=error)


# -- the names the commands were built from before the one route; kept for one release -------------
def make_target(
    *, model_ref: str | None = None, device: str = Device.META, init_seed: int | None = None, **choice: Any
) -> Target:
    """Old name: :func:`resnet_trace.target.build` of the choice ``model_ref`` and ``choice``
    (``base_dim``, ``num_classes``, ``variant``, ``head``, ``model_args``, ``block``, ``skip``) make."""
    return build(_old_choice(model_ref, choice), device=device, init_seed=init_seed)


def build_target(spec: SeedConfig, *, device: str = Device.META, init_seed: int | None = None) -> Target:
    """Old name: the built-in seed model of ``spec``."""
    return builtin_target(*dataclasses.astuple(spec), device=device, init_seed=init_seed)


def model_target(
    model: nn.Module,
    *,
    block: str | type[nn.Module] | Sequence[str | type[nn.Module]] | None = None,
    source: str = "python",
    args: tuple[tuple[str, str], ...] = (),
    input_shape: Sequence[int] | None = None,
) -> Target:
    """Old name: a target for any ``nn.Module``, its blocks found from ``input_shape`` when given."""
    from resnet_trace.target import model_target as of_module

    found = of_module(model, block=block, source=source, args=args)
    return with_blocks(found, tuple(input_shape)) if input_shape is not None else found


def trace_shapes(
    target: Target, input_shape: Shape, *, command: str = "summary", train: bool = False, session: Any = None
) -> Trace:
    """Old name: :func:`resnet_trace.tracer.shape_only` of one input, its channels checked first."""
    from resnet_trace.tracer import shape_only

    check_channels(target, input_shape)
    return shape_only(target, input_shape, command=command, train=train, session=session)


def trace_run(target: Target, x: torch.Tensor, **options: Any) -> Trace:
    """Old name: :func:`resnet_trace.tracer.real_forward` of one input, its channels checked first."""
    from resnet_trace.tracer import real_forward

    check_channels(target, tuple(int(d) for d in x.shape))
    return real_forward(target, x, **options)


def summary_traces(
    *, inputs: Sequence[Shape] | None = None, model_ref: str | None = None, **keywords: Any
) -> list[Trace]:
    """Old name: :func:`resnet_trace.pipeline.trace_inputs`, shape-only."""
    return _old_route(inputs, model_ref, keywords, real=False)


def run_traces(
    *,
    inputs: Sequence[Shape] | None = None,
    model_ref: str | None = None,
    progress: Callable[[int], None] | None = None,
    **keywords: Any,
) -> list[Trace]:
    """Old name: :func:`resnet_trace.pipeline.trace_inputs` with a real forward."""
    return _old_route(inputs, model_ref, keywords, real=True, progress=progress)


def _old_route(
    inputs: Sequence[Shape] | None,
    model_ref: str | None,
    keywords: dict[str, Any],
    *,
    real: bool,
    progress: Callable[[int], None] | None = None,
) -> list[Trace]:
    """The old names' keywords split into the two records (``model_args`` is ``ModelChoice.args``)."""
    fields = {f.name for f in dataclasses.fields(ModelChoice)} | {"model_args", "skip"}
    choice = {k: keywords.pop(k) for k in list(keywords) if k in fields}
    keywords["budget"] = _budget(keywords.get("budget"))
    options = TraceOptions(real=real, **keywords)
    return trace_inputs(_old_choice(model_ref, choice), inputs, options, progress=progress)


def _old_choice(model_ref: str | None, choice: dict[str, Any]) -> ModelChoice:
    args = choice.pop("model_args", None) or {}
    skip = choice.pop("skip", None)
    return ModelChoice(model=model_ref, args=args, skip=tuple(skip) if skip else None, **choice)
