"""The Python API: build a model, trace it, get frozen records back.

>>> from resnet_trace import trace
>>> t = trace(base_dim=64, input_shape=(1, 3, 224, 224))   # shape-only, on "meta"
>>> t.totals.params, t.totals.macs
(39423874, 5368434688)

The lower-level pieces used by the CLI (``build_target``, ``trace_shapes``, ``trace_run``)
are here too; ``docs/api.md`` documents them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from resnet_trace.diagnosis import diagnose
from resnet_trace.errors import UsageError
from resnet_trace.layout import BASE_DIM, NUM_CLASSES
from resnet_trace.modtree import module_tree
from resnet_trace.recorder import HookSession
from resnet_trace.records import (
    CUSTOM,
    Comparison,
    Depth,
    Device,
    Differences,
    DType,
    Head,
    Kind,
    ModelInfo,
    ModuleTree,
    Optimizer,
    Report,
    RunInfo,
    Shape,
    Trace,
    TraceError,
    TreeNode,
    Variant,
)
from resnet_trace.spec import ModelSpec, word
from resnet_trace.target import Target, builtin_target, first_conv_channels
from resnet_trace.tracer import (
    find_block_types,
    first_tensor,
    forward_session,
    freeze_rows,
    output_shape,
    outputs,
    run_forward,
    totals,
)

DTYPES = {DType.FLOAT32: torch.float32, DType.FLOAT16: torch.float16, DType.BFLOAT16: torch.bfloat16}


def dtype_of(dtype: DType | str) -> torch.dtype:
    """The torch dtype of a :class:`DType` or its word; InvalidValue naming any other value."""
    return DTYPES[word("dtype", DType, dtype)]


def resolve_device(name: Device | str) -> Device:
    """``auto`` picks cuda when present; a device that is not here is a usage error."""
    device = word("device", Device, name)
    if device is Device.AUTO:
        return Device.CUDA if torch.cuda.is_available() else Device.CPU
    if device is Device.CUDA and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available on this machine (try --device cpu)")
    if device is Device.MPS and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise UsageError("--device mps: no MPS device is available on this machine (try --device cpu)")
    return device


def device_memory(device: str) -> int | None:
    """Free memory on an accelerator; ``None`` for the CPU (the guard reads the host's)."""
    if device == Device.CUDA:
        return int(torch.cuda.mem_get_info()[0])
    return None


def build_target(spec: ModelSpec, *, device: str = Device.META, init_seed: int | None = None) -> Target:
    """The built-in seed model (see :func:`resnet_trace.target.builtin_target`)."""
    return builtin_target(
        spec.base_dim, spec.num_classes, spec.variant, spec.head, device=device, init_seed=init_seed
    )


def model_target(
    model: nn.Module,
    *,
    block: str | type[nn.Module] | Sequence[str | type[nn.Module]] | None = None,
    source: str = "python",
    args: tuple[tuple[str, str], ...] = (),
    input_shape: Sequence[int] | None = None,
) -> Target:
    """A target for any ``nn.Module``. ``block`` names the block class(es); without it they are
    found from the dataflow (needs ``input_shape``) or from the model's longest sequence."""
    block_types, found = resolve_blocks(model, block)
    target = Target(
        model=model,
        info=ModelInfo(
            base_dim=None,
            num_classes=None,
            variant=CUSTOM,
            head=CUSTOM,
            source=source,
            block=",".join(t.__name__ for t in block_types),
            skip=(),
            model_class=type(model).__name__,
            model_params=sum(p.numel() for p in model.parameters()),
            args=args,
            block_found=found,
        ),
        block_types=block_types,
        channels=first_conv_channels(model),
    )
    if block is None and input_shape is not None:
        target = with_found_blocks(target, tuple(input_shape))
    return target


def resolve_blocks(
    model: nn.Module, block: str | type[nn.Module] | Sequence[str | type[nn.Module]] | None
) -> tuple[tuple[type[nn.Module], ...], bool]:
    if block is None:
        return (), True
    wanted = [block] if isinstance(block, (str, type)) else list(block)
    types: list[type[nn.Module]] = []
    for w in wanted:
        if isinstance(w, type):
            types.append(w)
            continue
        matches = {type(m) for m in model.modules() if type(m).__name__ == w}
        if not matches:
            classes = sorted({type(m).__name__ for m in model.modules()})
            raise UsageError(
                f"the model has no module of class {w!r} (its classes: {', '.join(classes[:12])}"
                f"{', ...' if len(classes) > 12 else ''})"
            )
        types.extend(sorted(matches, key=lambda t: t.__qualname__))
    return tuple(types), False


def with_found_blocks(target: Target, input_shape: Shape) -> Target:
    """Find the blocks of a model traced without ``block``: a shape-only pass watches residual adds."""
    x = torch.empty(tuple(input_shape), device=Device.META, dtype=_param_dtype(target.model))
    if not _is_meta(target.model):
        x = torch.zeros(
            tuple(input_shape), dtype=_param_dtype(target.model), device=_param_device(target.model)
        )
    types = find_block_types(target, x)
    info = dataclasses.replace(target.info, block=",".join(t.__name__ for t in types), block_found=True)
    return dataclasses.replace(target, block_types=types, info=info)


def _is_meta(model: nn.Module) -> bool:
    tensors = list(model.parameters()) + list(model.buffers())
    return bool(tensors) and all(t.is_meta for t in tensors)


def _param_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _param_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device(Device.CPU))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_channels(target: Target, shape: Shape, *, what: str | None = None) -> None:
    """The seed's stem takes 3 channels: say so before tracing; other models say it themselves."""
    if target.info.source == "builtin" and target.channels is not None and len(shape) > 1:
        if shape[1] != target.channels:
            n, c, *rest = shape
            fixed = "x".join(str(d) for d in (n, target.channels, *rest))
            if what is not None:
                raise UsageError(
                    f"{what} holds a {'x'.join(map(str, shape))} tensor with {c} channel"
                    f"{'s' if c != 1 else ''}; the seed's stem takes {target.channels} (expected {fixed})"
                )
            raise UsageError(
                f"--input {'x'.join(map(str, shape))} has {c} channel{'s' if c != 1 else ''}; the seed's "
                f"stem takes {target.channels} (try {fixed})"
            )


def trace_shapes(
    target: Target,
    input_shape: Shape,
    *,
    command: str = "summary",
    train: bool = False,
    session: HookSession | None = None,
) -> Trace:
    """A shape-only trace: on ``meta`` when the model is there, no weights, no activations, any size.

    ``train`` runs the forward with autograd in ``train()`` mode and records what it saves.
    ``session``: a :func:`~resnet_trace.tracer.forward_session` of ``target`` with the same ``train``,
    shared by the traces of several input sizes.
    """
    check_channels(target, input_shape)
    dtype = _param_dtype(target.model)
    meta = _is_meta(target.model) or not list(target.model.parameters())
    device = str(Device.META) if meta else str(_param_device(target.model))
    x = torch.empty(tuple(input_shape), device=device, dtype=dtype)
    if not meta:
        x = torch.zeros(tuple(input_shape), device=device, dtype=dtype)
    fwd = run_forward(target, x, train=train, session=session)
    rec = fwd.recorder
    rows = freeze_rows(target, rec, timed=False)
    return Trace(
        command=command,
        model=target.info,
        device=device,
        dtype=_dtype_name(dtype),
        input_shape=tuple(input_shape),
        output_shape=output_shape(fwd.output) if fwd.failure is None else None,
        rows=rows,
        totals=totals(target.model, rec),
        error=diagnose(target, rec.failure, fwd.failure, rows) if fwd.failure is not None else None,
        accepted_sizes=target.accepted_sizes,
        outputs=outputs(fwd.output) if fwd.failure is None else (),
    )


def trace_tree(target: Target, input_shape: Shape) -> tuple[TreeNode, TraceError | None]:
    """The module tree, marked with what ran in a shape-only trace of ``input_shape``."""
    check_channels(target, input_shape)
    x = torch.empty(tuple(input_shape), device=Device.META, dtype=_param_dtype(target.model))
    fwd = run_forward(target, x)
    error = None
    if fwd.failure is not None:
        error = diagnose(
            target, fwd.recorder.failure, fwd.failure, freeze_rows(target, fwd.recorder, timed=False)
        )
    return module_tree(target.model, fwd.recorder.ran), error


def trace_run(
    target: Target,
    x: torch.Tensor,
    *,
    repeat: int = 1,
    top_k: int = 5,
    seed: int | None = None,
    weights: str | None = None,
    input_file: str | None = None,
    progress: Callable[[int], None] | None = None,
    leaves: bool = False,
) -> Trace:
    """A real forward with statistics; ``repeat`` > 1 adds timed passes and reports medians.

    ``leaves`` (for ``--depth layer``) adds statistics to every leaf call and times them in
    the timed passes, which otherwise hook only the row modules.
    """
    import time

    check_channels(target, tuple(int(d) for d in x.shape))
    device = x.device.type
    sync = torch.cuda.synchronize if device == Device.CUDA else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fwd = run_forward(target, x, stats=True, leaf_stats=leaves)
    sync()
    forward_ms = (time.perf_counter() - t0) * 1000
    rec = fwd.recorder
    times = None
    overhead_ms = None
    if fwd.failure is None and (repeat > 1 or device == Device.CUDA):
        from resnet_trace.timing import timed_forwards

        row_modules = {id(r.module) for r in rec.rows if r.module is not None and r.depth is not Depth.LAYER}
        timings = timed_forwards(target, x, max(repeat, 1), row_modules, progress, leaves=leaves)
        times = timings.per_row
        forward_ms = timings.forward_s * 1000
        overhead_ms = None if timings.overhead_s is None else timings.overhead_s * 1000
    rows = freeze_rows(target, rec, times)
    logits = topk = None
    out = first_tensor(fwd.output) if fwd.failure is None else None
    if isinstance(fwd.output, dict) and isinstance(fwd.output.get("logits"), torch.Tensor):
        out = fwd.output["logits"]
    if out is not None and out.device.type != Device.META and out.is_floating_point():
        values = out.detach().float().cpu()
        if values.dim() == 2 and values.shape[1] > 1:
            k = min(top_k, values.shape[1])
            probs = torch.softmax(values, dim=1)
            pv, pi = probs.topk(k, dim=1)
            topk = tuple(
                tuple((int(i), float(v)) for i, v in zip(idx_row, val_row))
                for idx_row, val_row in zip(pi.tolist(), pv.tolist())
            )
        logits = tuple(_nested(row) for row in values.tolist()) if values.dim() >= 1 else None
    return Trace(
        command="run",
        model=target.info,
        device=device,
        dtype=_dtype_name(x.dtype),
        input_shape=tuple(int(d) for d in x.shape),
        output_shape=output_shape(fwd.output) if fwd.failure is None else None,
        rows=rows,
        totals=totals(target.model, rec),
        error=diagnose(target, rec.failure, fwd.failure, rows) if fwd.failure is not None else None,
        accepted_sizes=target.accepted_sizes,
        outputs=outputs(fwd.output) if fwd.failure is None else (),
        run=RunInfo(
            seed=seed,
            repeat=repeat,
            forward_ms=forward_ms,
            hook_overhead_ms=overhead_ms,
            logits=logits,
            top_k=topk,
            weights=weights,
            input_file=input_file,
        ),
    )


def _nested(value: object) -> object:
    return tuple(_nested(v) for v in value) if isinstance(value, list) else value


def random_input(
    shape: Shape, *, seed: int, device: str = Device.CPU, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The ``run`` input: standard normal, from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen).to(device=device, dtype=dtype)


def trace(
    *,
    model: nn.Module | None = None,
    block: str | type[nn.Module] | Sequence[str | type[nn.Module]] | None = None,
    base_dim: int = BASE_DIM,
    num_classes: int = NUM_CLASSES,
    input_shape: Sequence[int] | None = None,
    variant: Variant | str = Variant.SEED,
    head: Head | str = Head.AVGPOOL7,
    real: bool = False,
    seed: int = 0,
    weights: str | os.PathLike[str] | None = None,
    input_file: str | os.PathLike[str] | None = None,
    repeat: int = 1,
    top_k: int = 5,
    device: Device | str = Device.CPU,
    dtype: DType | str = DType.FLOAT32,
    depth: Depth | str = Depth.BLOCK,
    collapse: bool = False,
    filter: str | None = None,
    train: bool = False,
    optimizer: Optimizer | str = Optimizer.ADAM,
    budget: int | str | None = None,
    backward: bool = False,
    target: int = 0,
) -> Report:
    """Trace one input of the seed's model (or of ``model``) and return the rows shown at ``depth``.

    ``real=False`` (default) is ``resnet-trace summary``: shapes, params and MACs, shape-only
    (on ``meta`` for the seed and for a model built there). ``real=True`` is ``resnet-trace run``:
    the seed's initialisation under ``seed`` (or ``weights``), a random normal input (or
    ``input_file``), a forward with activation statistics; ``repeat`` > 1 adds timed passes.
    ``train``/``optimizer``/``budget`` add a training step's memory (``summary --train``);
    ``backward``/``target`` a real backward with gradient norms (``run --backward``).
    The result's ``to_dict()`` is the CLI's ``--format json`` document for the same options.
    """
    from resnet_trace.spec import check_shape, integer

    shape = check_shape(input_shape) if input_shape is not None else None
    integer("seed", seed, low=0)
    integer("repeat", repeat)
    integer("top_k", top_k)
    if model is None:
        if not isinstance(block, (str, type(None))):
            raise TypeError("block names one class for the built-in model")
        options: dict[str, Any] = dict(
            inputs=[shape] if shape else None,
            base_dim=base_dim,
            num_classes=num_classes,
            variant=variant,
            head=head,
            block=block,
        )
        if real or backward or weights is not None or input_file is not None:
            (t,) = run_traces(
                **options,
                weights=None if weights is None else str(weights),
                input_file=None if input_file is None else str(input_file),
                seed=seed,
                repeat=repeat,
                top_k=top_k,
                device=device,
                dtype=dtype,
                leaves=Depth(depth) is Depth.LAYER,
                backward=backward,
                target_class=target,
            )
        else:
            (t,) = summary_traces(
                **options, dtype=dtype, train=train or budget is not None, optimizer=optimizer, budget=budget
            )
        return report(t, depth=depth, collapse=collapse, filter=filter)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    found = model_target(model, block=block)
    used: Shape = shape if shape is not None else default_input(found)
    found = ensure_blocks(found, used)
    if not (real or backward):
        t = trace_shapes(found, used, train=train or budget is not None)
        if train or budget is not None:
            t = with_train(found, t, optimizer=optimizer, budget=budget)
        return report(t, depth=depth, collapse=collapse, filter=filter)
    x = random_input(used, seed=seed, device=str(_param_device(model)), dtype=_param_dtype(model))
    t = trace_run(found, x, seed=seed, repeat=repeat, top_k=top_k, leaves=Depth(depth) is Depth.LAYER)
    if backward:
        t = with_backward(found, found, t, x, target_class=target)
    return report(t, depth=depth, collapse=collapse, filter=filter)


def make_target(
    *,
    model_ref: str | None = None,
    base_dim: int | None = None,
    num_classes: int | None = None,
    variant: Variant | str = Variant.SEED,
    head: Head | str = Head.AVGPOOL7,
    model_args: dict[str, Any] | None = None,
    block: str | None = None,
    skip: Sequence[str] | None = None,
    device: str = Device.META,
    init_seed: int | None = None,
) -> Target:
    """The built-in seed (``model_ref=None``) or the user's ``PATH.py:NAME`` built with the arguments given.

    A user model's blocks are found later, by :func:`ensure_blocks`, once the input is known.
    """
    from resnet_trace.spec import check_spec

    variant, head = word("variant", Variant, variant), word("head", Head, head)
    if model_ref is None:
        if model_args:
            raise UsageError(
                "--model-arg passes arguments to --model; the built-in model takes --base-dim, --num-classes"
            )
        spec = check_spec(
            base_dim=BASE_DIM if base_dim is None else base_dim,
            num_classes=2 if num_classes is None else num_classes,
            variant=variant,
            head=head,
        )
        target = build_target(spec, device=device, init_seed=init_seed)
        if block is not None and block != "BottleNeck":
            target = dataclasses.replace(target, block_types=resolve_blocks(target.model, block)[0])
    else:
        if variant is not Variant.SEED or head is not Head.AVGPOOL7:
            raise UsageError(
                "--variant and --head change the built-in model; with --model, edit your own file"
            )
        from resnet_trace.usermodel import load_user_target

        target = load_user_target(
            model_ref,
            base_dim=base_dim,
            num_classes=num_classes,
            model_args=model_args,
            block=block,
            device=device,
            init_seed=init_seed,
        )
    if skip:
        target = dataclasses.replace(target, skip_override=tuple(skip))
    return target


def default_input(target: Target) -> Shape:
    """1 x the model's channels x 224 x 224 (3 channels when the model does not say)."""
    return (1, target.channels or 3, 224, 224)


def ensure_blocks(target: Target, input_shape: Shape) -> Target:
    """A user model traced without ``block``: find its blocks with a shape-only pass of ``input_shape``."""
    if target.info.block_found and not target.block_types:
        return with_found_blocks(target, input_shape)
    return target


def summary_traces(
    *,
    inputs: Sequence[Shape] | None = None,
    model_ref: str | None = None,
    base_dim: int | None = None,
    num_classes: int | None = None,
    variant: Variant | str = Variant.SEED,
    head: Head | str = Head.AVGPOOL7,
    model_args: dict[str, Any] | None = None,
    block: str | None = None,
    skip: Sequence[str] | None = None,
    train: bool = False,
    optimizer: Optimizer | str = Optimizer.ADAM,
    budget: int | str | None = None,
    command: str = "summary",
    dtype: DType | str = DType.FLOAT32,
) -> list[Trace]:
    """``resnet-trace summary``: a shape-only trace of each input (the model's default input when none)."""
    target = make_target(
        model_ref=model_ref,
        base_dim=base_dim,
        num_classes=num_classes,
        variant=variant,
        head=head,
        model_args=model_args,
        block=block,
        skip=skip,
    )
    shapes = list(inputs) if inputs else [default_input(target)]
    target = ensure_blocks(target, shapes[0])
    if word("dtype", DType, dtype) is not DType.FLOAT32:  # the models are built in float32
        target.model.to(dtype=dtype_of(dtype))
    with forward_session(target, train=train) as session:  # hooks registered once for every size
        traces = [trace_shapes(target, s, command=command, train=train, session=session) for s in shapes]
    if model_ref is not None and any(t.error is not None for t in traces):
        traces = _cpu_fallback(traces, target, model_ref, base_dim, num_classes, model_args, command, train)
    if train:
        traces = [with_train(target, t, optimizer=optimizer, budget=budget) for t in traces]
    return traces


def _guard_forward(
    target: Target,
    shape: Shape,
    element_size: int,
    *,
    available: int | None = None,
    device: str = Device.CPU,
    traced: Trace | None = None,
) -> int:
    """Refuse (UsageError) a real forward of ``shape`` that would not fit; its estimated bytes.

    The largest output comes from the target's own arithmetic where it has one (the built-in
    model), otherwise from a shape-only trace on ``meta`` (``traced``, when the caller has one);
    nothing real is allocated either way.
    """
    from resnet_trace.memory import estimate_bytes, guard, largest_traced

    if target.largest_output is not None:
        largest = target.largest_output(shape)
        params = target.info.model_params
    else:
        t = traced if traced is not None else trace_shapes(target, shape)
        largest, params = largest_traced(t), t.totals.params
    assert params is not None  # every target records its parameter count when it is built
    what = f"run {'x'.join(map(str, shape))}"
    if target.info.base_dim is not None:
        what += f" at base_dim {target.info.base_dim}"
    return guard(
        estimate_bytes(params, shape, largest, element_size),
        what,
        available=available,
        where="memory" if device == Device.CPU else f"{device} memory",
    )


def _cpu_fallback(
    traces: list[Trace],
    target: Target,
    model_ref: str,
    base_dim: int | None,
    num_classes: int | None,
    model_args: dict[str, Any] | None,
    command: str,
    train: bool,
) -> list[Trace]:
    """A user model that fails on ``meta`` may only lack meta support: retry those inputs on the CPU."""
    from resnet_trace.usermodel import load_user_target

    cpu: Target | None = None
    out = []
    for t in traces:
        if t.error is None:
            out.append(t)
            continue
        _guard_forward(target, t.input_shape, 4, traced=t)  # the failed trace's rows, up to the failure
        if cpu is None:
            cpu = load_user_target(
                model_ref,
                base_dim=base_dim,
                num_classes=num_classes,
                model_args=model_args,
                device=Device.CPU,
                init_seed=0,
            )
            cpu = dataclasses.replace(cpu, block_types=target.block_types, info=target.info)
        again = trace_shapes(cpu, t.input_shape, command=command, train=train)
        if again.error is None:
            note = f"note: {t.error.module} cannot run on the meta device ({t.error.message}); traced on the CPU instead"
            again = dataclasses.replace(again, notes=(*again.notes, note[:300]))
            out.append(again)
        else:
            out.append(t)
    return out


def run_traces(
    *,
    inputs: Sequence[Shape] | None = None,
    input_file: str | None = None,
    weights: str | None = None,
    model_ref: str | None = None,
    base_dim: int | None = None,
    num_classes: int | None = None,
    variant: Variant | str = Variant.SEED,
    head: Head | str = Head.AVGPOOL7,
    model_args: dict[str, Any] | None = None,
    block: str | None = None,
    skip: Sequence[str] | None = None,
    seed: int = 0,
    repeat: int = 1,
    top_k: int = 5,
    device: Device | str = Device.CPU,
    dtype: DType | str = DType.FLOAT32,
    leaves: bool = False,
    progress: Callable[[int], None] | None = None,
    backward: bool = False,
    target_class: int = 0,
) -> list[Trace]:
    """``resnet-trace run``: a real forward per input, after the memory guard checks it fits (no allocation).

    ``weights`` are assigned into a meta-built model (no wasted initialisation); otherwise the
    model is initialised under ``seed``. ``input_file`` replaces ``inputs``.
    """
    if input_file is not None and inputs:
        raise UsageError("give --input or --input-file, not both")
    dev = resolve_device(device)
    torch_dtype = dtype_of(dtype)
    choice: dict[str, Any] = dict(
        model_ref=model_ref,
        base_dim=base_dim,
        num_classes=num_classes,
        variant=variant,
        head=head,
        model_args=model_args,
        block=block,
        skip=skip,
    )
    meta_target = make_target(**choice)
    x_file = None
    if input_file is not None:
        room = device_memory(dev) if dev is not Device.META else None
        what = f"--input-file {str(input_file)!r}"

        from pathlib import Path

        from resnet_trace.loading import load_input

        def fits(shape: tuple[int, ...]) -> None:
            """Checked from the file's header, before any data is copied: channels, then memory."""
            check_channels(meta_target, shape, what=what)
            if dev is not Device.META:
                found = ensure_blocks(meta_target, shape)
                try:
                    _guard_forward(found, shape, torch_dtype.itemsize, available=room, device=dev)
                except UsageError as exc:
                    raise UsageError(f"{what} was not read: {exc}") from None

        x_file = load_input(Path(input_file), channels=meta_target.channels, check_shape=fits)
        shapes: list[Shape] = [tuple(int(d) for d in x_file.shape)]
    else:
        shapes = list(inputs) if inputs else [default_input(meta_target)]
    meta_target = ensure_blocks(meta_target, shapes[0])
    if dev is Device.META:
        if weights is not None:
            raise UsageError("--weights needs a real device: --device meta traces shapes only")
        meta_target.model.to(dtype=torch_dtype)
        return [trace_shapes(meta_target, s, command="run") for s in shapes]
    room = device_memory(dev)
    for s in shapes:
        _guard_forward(meta_target, s, torch_dtype.itemsize, available=room, device=dev)
    if weights is not None:
        target = meta_target
        spec = ModelSpec(
            base_dim=target.info.base_dim or BASE_DIM,
            num_classes=target.info.num_classes or NUM_CLASSES,
            variant=Variant(variant),  # checked by make_target above
            head=Head(head),
        )
        from pathlib import Path

        from resnet_trace.loading import load_weights

        load_weights(Path(weights), target.model, spec)
        target.model.to(device=dev, dtype=torch_dtype)
    else:
        target = make_target(**choice, device=dev, init_seed=seed)
        target = dataclasses.replace(target, block_types=meta_target.block_types, info=meta_target.info)
        target.model.to(dtype=torch_dtype)
    traces = []
    for s in shapes:
        x = (
            x_file.to(device=dev, dtype=torch_dtype)
            if x_file is not None
            else random_input(s, seed=seed, device=dev, dtype=torch_dtype)
        )
        t = trace_run(
            target,
            x,
            repeat=repeat,
            top_k=top_k,
            seed=seed if x_file is None else None,
            weights=str(weights) if weights else None,
            input_file=str(input_file) if input_file else None,
            progress=progress,
            leaves=leaves,
        )
        if backward:
            t = with_backward(meta_target, target, t, x, target_class=target_class)
        traces.append(t)
    return traces


# -- views, checks, comparisons: every command's work, as one call each -----------------------------
def report(
    trace: Trace, *, depth: Depth | str = Depth.BLOCK, collapse: bool = False, filter: str | None = None
) -> Report:
    """The rows of ``trace`` shown at ``depth`` (filtered by the ``filter`` regex, folded with ``collapse``)."""
    from resnet_trace.views import view

    d = Depth(depth)
    return Report(
        trace=trace,
        rows=tuple(view(trace.rows, d, fold=collapse, pattern=filter)),
        depth=d,
        collapsed=collapse,
        filter=filter,
    )


def check(
    golden: str | os.PathLike[str],
    *,
    base_dim: int | None = None,
    num_classes: int | None = None,
    inputs: Sequence[Shape] | None = None,
    variant: Variant | str | None = None,
    head: Head | str | None = None,
    model: str | None = None,
) -> Differences:
    """Re-trace the configuration recorded in ``golden`` (or the overrides) and compare every field.

    A golden file is data: it never names code to run. A trace of a user model needs ``model``.
    """
    from pathlib import Path

    from resnet_trace.diffing import compare_all, load_documents
    from resnet_trace.spec import parse_shape

    docs = load_documents(Path(golden))
    if inputs:
        plan = [(docs[min(i, len(docs) - 1)], tuple(s)) for i, s in enumerate(inputs)]
    else:
        plan = [(doc, parse_shape("x".join(map(str, doc["input_shape"])))) for doc in docs]
    got_docs = []
    targets: dict[tuple, Target] = {}
    for doc, shape in plan:
        m = doc.get("model") or {}
        source = m.get("source", "builtin")
        if model is None and source != "builtin":
            raise UsageError(
                f"{str(golden)!r} was traced from {source!r}; check never runs code a data file names: "
                f"pass --model {source} yourself if you trust it"
            )
        # The seed's options: the overrides, else the words the document recorded (a model of your
        # own records "custom": its code decides), else make_target's defaults.
        words: dict[str, Any] = {}
        for field, kind, given in (("variant", Variant, variant), ("head", Head, head)):
            if given is not None:
                words[field] = word(field, kind, given)
            elif model is None and m.get(field) in [w.value for w in kind]:
                words[field] = m[field]
        bd = base_dim if base_dim is not None else m.get("base_dim")
        nc = num_classes if num_classes is not None else m.get("num_classes")
        if model is None:
            bd, nc = bd or BASE_DIM, nc or NUM_CLASSES
        block = m.get("block") if model is not None and not m.get("block_found") else None
        # The arguments your model was built with, recorded as Python literals; read as data
        # (ast.literal_eval), and passed only to the code you named with ``model``.
        args = _recorded_args(m) if model is not None else {}
        key = (
            model,
            bd,
            nc,
            tuple(sorted(words.items())),
            block,
            tuple(sorted(m.get("args", {}).items())) if args else (),
        )
        if key not in targets:
            targets[key] = make_target(
                model_ref=model,
                base_dim=bd,
                num_classes=nc,
                model_args=args,
                block=block,
                **words,
            )
        target = ensure_blocks(targets[key], tuple(shape))
        t = trace_shapes(target, tuple(shape))
        got_docs.append(
            report(
                t,
                depth=doc.get("depth", Depth.BLOCK),
                collapse=bool(doc.get("collapsed")),
                filter=doc.get("filter"),
            ).to_dict()
        )
    return Differences(expected=str(golden), got="this trace", differences=tuple(compare_all(docs, got_docs)))


def _recorded_args(model_doc: dict) -> dict[str, Any]:
    """``model.args`` of a saved trace, less ``base_dim``/``num_classes`` (recorded on their own)."""
    import ast

    out: dict[str, Any] = {}
    for key, text in (model_doc.get("args") or {}).items():
        if key in ("base_dim", "num_classes") or not isinstance(text, str) or not str(key).isidentifier():
            continue
        try:
            out[str(key)] = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            out[str(key)] = text
    return out


def diff(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> Differences:
    """Compare two saved traces field by field."""
    from pathlib import Path

    from resnet_trace.diffing import compare_all, load_documents

    return Differences(
        expected=str(a),
        got=str(b),
        differences=tuple(compare_all(load_documents(Path(a)), load_documents(Path(b)))),
    )


def compare(
    *,
    base_dim: int = BASE_DIM,
    num_classes: int = NUM_CLASSES,
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
    from resnet_trace.spec import check_shape, check_spec

    shape = check_shape(input_shape)
    reports = []
    for variant in Variant:
        spec = check_spec(base_dim=base_dim, num_classes=num_classes, variant=variant, head=head)
        shaped = trace_shapes(build_target(spec), shape, train=train)
        if train and shaped.error is None:
            (real,) = run_traces(
                inputs=[shape],
                base_dim=spec.base_dim,
                num_classes=spec.num_classes,
                variant=variant,
                head=head,
                seed=seed,
                backward=True,
                target_class=target,
            )
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
    target = make_target(
        model_ref=model_ref,
        base_dim=base_dim,
        num_classes=num_classes,
        variant=variant,
        head=head,
        model_args=model_args,
        block=block,
    )
    shape = tuple(input_shape) if input_shape else default_input(target)
    root, error = trace_tree(target, shape)
    return ModuleTree(root=root, input_shape=shape, error=error)


# -- the training view -------------------------------------------------------------------------------
def with_train(
    target: Target,
    trace: Trace,
    *,
    optimizer: Optimizer | str = Optimizer.ADAM,
    budget: int | str | None = None,
) -> Trace:
    """``trace`` (made with ``train=True``) with the memory of one training step, and the batch that fits.

    ``budget`` (bytes, or text like ``"24GiB"``) adds ``fit_batch``: the largest batch whose
    ``peak_bytes`` fits, each candidate batch traced shape-only like this one.
    """
    from resnet_trace.training import parse_budget, train_info

    opt = word("optimizer", Optimizer, optimizer)
    budget_bytes = parse_budget(budget) if isinstance(budget, str) else budget
    if budget_bytes is not None:
        from resnet_trace.spec import integer

        integer("budget", budget_bytes, low=1)
    cache: dict[int, int] = {}

    def peak(n: int) -> int:
        if n not in cache:
            from resnet_trace.spec import check_shape

            shape = check_shape((n, *trace.input_shape[1:]))
            t = trace_shapes(target, shape, train=True)
            if t.error is not None or t.totals.activations_bytes is None:
                raise UsageError(
                    f"batch {n} cannot be traced: {t.error.message if t.error else 'no activations'}"
                )
            cache[n] = train_info(
                model=target.model, rows=t.rows, activations_bytes=t.totals.activations_bytes, optimizer=opt
            ).peak_bytes
        return cache[n]

    if trace.error is not None or trace.totals.activations_bytes is None:
        return trace
    info = train_info(
        model=target.model,
        rows=trace.rows,
        activations_bytes=trace.totals.activations_bytes,
        optimizer=opt,
        budget_bytes=budget_bytes,
        peak_of_batch=peak if budget_bytes is not None else None,
    )
    return dataclasses.replace(trace, train=info)


def with_backward(
    meta_target: Target, target: Target, trace: Trace, x: torch.Tensor, *, target_class: int
) -> Trace:
    """``trace`` (a real forward) with a real backward of cross-entropy against ``target_class``:
    per block the gradient norms, and the measured peak beside the predicted one."""
    from resnet_trace.recorder import keep_training_flags
    from resnet_trace.training import backward_step, train_info, with_measurement

    if trace.error is not None:
        return trace
    # the loss takes each sample's outputs, flattened, as its logits
    classes = (
        math.prod(trace.output_shape[1:]) if trace.output_shape and len(trace.output_shape) > 1 else None
    )
    if classes is not None and not 0 <= target_class < classes:
        from resnet_trace.spec import InvalidValue

        raise InvalidValue("target", f"target class must be in 0..{classes - 1}, not {target_class}")
    predicted = trace_shapes(meta_target, trace.input_shape, train=True)
    base = {r.name: r.name.rsplit(" (call ", 1)[0] if r.calls > 1 else r.name for r in trace.rows}
    blocks = []
    seen: set[str] = set()
    for r in trace.rows:
        name = base[r.name]
        if r.kind is Kind.BLOCK and name not in seen:
            seen.add(name)
            blocks.append((name, target.model.get_submodule(name)))
    with keep_training_flags(target.model):
        step = backward_step(target.model, x, target=target_class, blocks=blocks)
    rows = []
    for r in trace.rows:
        g = step.grad_norms.get((base[r.name], r.call))
        pg = step.param_grad_norms.get(base[r.name])
        rows.append(
            r if g is None and pg is None else dataclasses.replace(r, grad_norm=g, param_grad_norm=pg)
        )
    info = train_info(
        model=meta_target.model,
        rows=predicted.rows,
        activations_bytes=predicted.totals.activations_bytes or 0,
        optimizer=Optimizer.SGD,
    )
    return dataclasses.replace(trace, rows=tuple(rows), train=with_measurement(info, step))
