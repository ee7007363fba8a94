"""Failure diagnosis: a forward that stopped becomes one plain sentence, a hint and the module."""

from __future__ import annotations

from torch import nn

from resnet_trace.errors import message_of
from resnet_trace.recorder.nesting import NestingError
from resnet_trace.records import Kind, Row, Shape, TraceError, shape_text
from resnet_trace.target import Target

GENERIC_HINT = "check the input shape against what this model accepts"
NESTING_HINT = "return tensors, or a few levels of tuples, lists and dicts of them, each holding no other"


def diagnose(
    target: Target,
    failure: tuple[str, Shape | None, nn.Module | None] | None,
    exc: BaseException,
    rows: tuple[Row, ...],
) -> TraceError:
    """Where the forward stopped and why, in words; the target's own advice when it has some."""
    name, in_shape, module = failure or ("", None, None)
    label = name or type(target.model).__name__
    raw = message_of(exc) or type(exc).__name__  # even when the exception's __str__ is broken
    if isinstance(exc, SystemExit):
        raw = f"the model's code called sys.exit({exc.code!r})"[:300]
    elif not isinstance(exc, (RuntimeError, ValueError, IndexError, TypeError)):
        raw = f"{type(exc).__name__}: {raw}" if raw != type(exc).__name__ else raw
    if isinstance(exc, NestingError):
        hint = NESTING_HINT
    else:
        hint = (
            target.advice(module, in_shape) if target.advice and module is not None else None
        ) or GENERIC_HINT
    message = f"{label} ({type(module).__name__ if module is not None else 'forward'}): {raw}"
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)) and in_shape and len(in_shape) == 4:
        k = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
        h, w = in_shape[2], in_shape[3]
        if h < k[0] or w < k[1]:
            message = (
                f"{label} received a {h}x{w} map, smaller than its {k[0]}x{k[1]} kernel "
                f"(input {shape_text(rows[0].in_shape) if rows else '?'})"
            )
    elif isinstance(module, nn.Linear) and in_shape and in_shape[-1] != module.in_features:
        got = in_shape[-1]
        message = f"{label} takes {module.in_features} features but received {got:,}"
        pools = [r for r in rows if r.kind is Kind.POOL and r.in_shape and r.out_shape]
        if pools and len(pools[-1].in_shape or ()) == 4 and len(pools[-1].out_shape or ()) == 4:
            p = pools[-1]
            pin, pout = p.in_shape or (0, 0, 0, 0), p.out_shape or (0, 0, 0, 0)  # both 4-D, checked above
            c, ih, iw = pin[1], pin[2], pin[3]
            oh, ow = pout[2], pout[3]
            message += (
                f": {p.name} pooled the {ih}x{iw} map to {oh}x{ow}, and {c} channels x {oh}x{ow} = {got:,}"
            )
    return TraceError(module=label, message=message, hint=hint)
