"""Timing: hooked and plain forwards, alternated, so per-row times and the hooks' cost are medians."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from resnet_trace.errors import ModelFailed, message_of
from resnet_trace.recorder import hook_session, keep_training_flags, row_keys
from resnet_trace.target import Target


@dataclass(frozen=True)
class Timings:
    per_row: dict[tuple[str, int], float | None]  # median seconds per row key
    forward_s: float  # median hooked forward
    overhead_s: float | None  # median(hooked) - median(plain), None when below the noise


def timed_forwards(
    target: Target,
    x: object,
    repeat: int,
    rows_modules: set[int],
    progress: Callable[[int], None] | None = None,
    *,
    leaves: bool = False,
) -> Timings:
    """``repeat`` hooked and ``repeat`` plain forwards in ``eval()`` under ``no_grad``, alternated.

    Only the modules of rows (and with ``leaves`` every leaf) are hooked, and no operation
    mode runs, so the hooks cost little next to the calls they time.
    """
    import statistics  # here: its imports (fractions, decimal) cost a plain run 3 ms

    device = _device(x)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model = target.model
    only = set(rows_modules)
    if leaves:
        only |= {id(m) for m in model.modules() if next(iter(m.children()), None) is None}
    samples: dict[tuple[str, int], list[float]] = {}
    hooked_walls: list[float] = []
    plain_walls: list[float] = []
    for i in range(repeat):
        with (
            hook_session(model, target.block_types, events=device == "cuda", only=only, ops=False) as session,
            session.recording() as rec,
            torch.no_grad(),
        ):
            model.eval()
            sync()
            t0 = time.perf_counter()
            _timed_call(model, x, 2 * i + 2)
            sync()
            hooked_walls.append(time.perf_counter() - t0)
        for key, r in zip(row_keys(rec.rows), rec.rows):
            s = r.seconds()
            if s is not None:
                samples.setdefault(key, []).append(max(s, 0.0))
        with keep_training_flags(model), torch.no_grad():
            model.eval()
            sync()
            t0 = time.perf_counter()
            _timed_call(model, x, 2 * i + 3)
            sync()
            plain_walls.append(time.perf_counter() - t0)
        if progress:
            progress(i + 1)
    forward = statistics.median(hooked_walls)
    overhead = forward - statistics.median(plain_walls)
    spread = _spread(plain_walls)
    return Timings(
        per_row={k: statistics.median(v) for k, v in samples.items()},
        forward_s=forward,
        overhead_s=overhead if overhead > spread else None,
    )


def _spread(values: list[float]) -> float:
    """Half the interquartile range of the plain forwards: differences below it are noise."""
    import statistics

    if len(values) < 2:
        return float("inf")
    q = statistics.quantiles(values, n=4)
    return max((q[2] - q[0]) / 2, 0.0)


def _device(x: object) -> str:
    from resnet_trace.feed import Feed
    from resnet_trace.ops import tensors_in

    t = next(tensors_in(x.tensors() if isinstance(x, Feed) else x), None)
    return t.device.type if t is not None else "cpu"


def _timed_call(model: torch.nn.Module, x: object, n: int) -> object:
    """Forward number ``n`` of the run (the traced one was the first): whatever the model's code
    raises now, after a forward that ran, is its failure (exit 3), said in one line."""
    from resnet_trace.recorder import HookFailure

    try:
        return _call(model, x)
    except (HookFailure, KeyboardInterrupt):
        raise
    except BaseException as exc:  # SystemExit too: the model's code, on a later call
        what = f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else message_of(exc)
        raise ModelFailed(
            f"the model's forward failed on call {n} (run --repeat), after the first ran: "
            f"{type(exc).__name__}: {what}"
        ) from None


def _call(model: torch.nn.Module, x: object) -> object:
    from resnet_trace.feed import Feed

    if isinstance(x, Feed):
        return x.call(model)
    if isinstance(x, dict):
        return model(**x)
    return model(x)
