"""The Python API: build a model, trace it, get frozen records back.

>>> from resnet_trace import trace
>>> t = trace(base_dim=64, input_shape=(1, 3, 224, 224))   # shape-only, on "meta"
>>> t.totals.params, t.totals.macs
(39423874, 5368434688)

Every CLI command is a thin layer over these functions.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

from resnet_trace.errors import UsageError
from resnet_trace.layout import accepted_sizes
from resnet_trace.model import BottleNeck, ResNet
from resnet_trace.records import ModelInfo, RunInfo, Shape, Trace, TraceError, TreeNode
from resnet_trace.spec import ModelSpec
from resnet_trace.tracer import (
    Target,
    diagnose,
    freeze_rows,
    module_tree,
    row_keys,
    run_forward,
    timed_forwards,
    totals,
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> str:
    """``auto`` picks cuda when present; a device that is not here is a usage error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available on this machine (try --device cpu)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: no MPS device is available on this machine (try --device cpu)")
    if name not in ("cpu", "cuda", "mps", "meta"):
        raise UsageError(f"--device {name!r}: expected cpu, cuda, mps, meta or auto")
    return name


def device_memory(device: str) -> int | None:
    """Free memory on an accelerator; ``None`` for the CPU (the guard reads the host's)."""
    if device == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    return None


def build_target(spec: ModelSpec, *, device: str = "meta", init_seed: int | None = None) -> Target:
    """The built-in seed model. On ``meta`` no weights are initialised and no memory is spent.

    Elsewhere the weights get PyTorch's default initialisation on the CPU under
    ``init_seed`` and are then moved, so a seed gives the same model on every device.
    """
    if device == "meta":
        with torch.device("meta"):
            model = ResNet(spec.base_dim, spec.num_classes, variant=spec.variant, head=spec.head)
    else:
        if init_seed is not None:
            torch.manual_seed(init_seed)
        model = ResNet(spec.base_dim, spec.num_classes, variant=spec.variant, head=spec.head).to(device)
    info = ModelInfo(spec.base_dim, spec.num_classes, spec.variant, spec.head)
    acc = accepted_sizes() if spec.head == "avgpool7" else None
    return Target(model=model, info=info, block_type=BottleNeck, accepted_sizes=acc)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def trace_shapes(target: Target, input_shape: Shape, *, command: str = "summary") -> Trace:
    """A shape-only trace on ``meta``: no weights, no activations, any size."""
    dtype = next((p.dtype for p in target.model.parameters()), torch.float32)
    x = torch.empty(input_shape, device="meta", dtype=dtype)
    shape_only = all(p.is_meta for p in target.model.parameters())
    rec, out, failure = run_forward(target, x, shape_only=shape_only)
    rows = freeze_rows(rec, timed=False)
    return Trace(
        command=command,
        model=target.info,
        device="meta",
        dtype=_dtype_name(dtype),
        input_shape=tuple(input_shape),
        output_shape=rec.output_shape if failure is None else None,
        rows=rows,
        totals=totals(rec),
        error=diagnose(target, rec, failure, rows) if failure is not None else None,
        accepted_sizes=target.accepted_sizes,
    )


def trace_tree(target: Target, input_shape: Shape) -> tuple[TreeNode, TraceError | None]:
    """The module tree, marked with what ran in a shape-only trace of ``input_shape``."""
    x = torch.empty(input_shape, device="meta")
    rec, _, failure = run_forward(target, x, shape_only=True)
    error = diagnose(target, rec, failure, freeze_rows(rec, timed=False)) if failure else None
    return module_tree(target.model, rec.ran), error


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
    device = x.device.type
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    rec, out, failure = run_forward(target, x, stats=True, leaf_stats=leaves)
    sync()
    first_wall = time.perf_counter() - t0
    times: list[float | None] | None = None
    forward_ms = first_wall * 1000
    overhead_ms = None
    if failure is None and (repeat > 1 or device == "cuda"):
        per_row, hooked_walls, plain_walls = timed_forwards(
            target, x, max(repeat, 1), progress, leaves=leaves
        )
        times = []
        for key in row_keys(rec.rows):
            samples = [t[key] for t in per_row if t.get(key) is not None]
            times.append(statistics.median(samples) if samples else None)
        forward_ms = statistics.median(hooked_walls) * 1000
        overhead_ms = (statistics.median(hooked_walls) - statistics.median(plain_walls)) * 1000
    rows = freeze_rows(rec, times)
    logits = topk = None
    if out is not None and isinstance(out, torch.Tensor) and out.device.type != "meta":
        logits = out.detach().float().cpu()
        if logits.dim() == 2 and logits.shape[1] > 1:
            k = min(top_k, logits.shape[1])
            probs = torch.softmax(logits, dim=1)
            values, indices = probs.topk(k, dim=1)
            topk = tuple(
                tuple((int(i), float(v)) for i, v in zip(idx_row, val_row))
                for idx_row, val_row in zip(indices.tolist(), values.tolist())
            )
        logits = _nested(logits.tolist())
    return Trace(
        command="run",
        model=target.info,
        device=device,
        dtype=_dtype_name(x.dtype),
        input_shape=tuple(int(d) for d in x.shape),
        output_shape=rec.output_shape if failure is None else None,
        rows=rows,
        totals=totals(rec),
        error=diagnose(target, rec, failure, rows) if failure is not None else None,
        accepted_sizes=target.accepted_sizes,
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
    shape: Shape, *, seed: int, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The ``run`` input: standard normal, from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


def trace(
    *,
    base_dim: int = 64,
    num_classes: int = 2,
    input_shape: Sequence[int] = (1, 3, 224, 224),
    variant: str = "seed",
    head: str = "avgpool7",
    real: bool = False,
    seed: int = 0,
) -> Trace:
    """Build the seed's model and trace one input.

    ``real=False`` (default) is ``summary``: shapes, params and MACs on ``meta``.
    ``real=True`` is ``run``: the seed's initialisation under ``seed``, a random
    normal input, a CPU forward with activation statistics.
    """
    from resnet_trace.spec import parse_shape, positive

    spec = ModelSpec(positive("base_dim", base_dim), positive("num_classes", num_classes), variant, head)
    shape = parse_shape("x".join(str(int(d)) for d in input_shape))
    if not real:
        return trace_shapes(build_target(spec), shape)
    target = build_target(spec, device="cpu", init_seed=seed)
    return trace_run(target, random_input(shape, seed=seed), seed=seed)
