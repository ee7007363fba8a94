"""What ``run`` says of a model's outputs: their values up to a size, the top-k classes, and
statistics read through a view (an ``expand()`` costs what its storage costs)."""

from __future__ import annotations

from typing import Any

import torch

from resnet_trace.freeze import first_tensor, output_tensors
from resnet_trace.records import Activation, Device

#: ``run``'s JSON holds the logits' values up to this many elements (the seed's N x classes at any
#: sensible batch); a bigger output (a segmentation map) is summarised: shape, dtype, statistics.
VALUES_LIMIT = 10_000


def output_values(output: Any, top_k: int) -> tuple[Any, Any]:
    """The output's values (nested tuples, up to :data:`VALUES_LIMIT` elements) and, for
    N x classes, the top-k classes per sample; None and None for no output (a forward that
    stopped). Nothing bigger than the values is made: a broadcast view is not materialised, and a
    big output is not copied."""
    out = first_tensor(output) if output is not None else None
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        out = output["logits"]
    if out is None or out.device.type == Device.META or not out.is_floating_point():
        return None, None
    topk = None
    if out.dim() == 2 and out.shape[1] > 1:
        k = min(top_k, int(out.shape[1]))
        rows = out.detach()[: max(1, VALUES_LIMIT // k)]  # top-k of as many samples as the JSON holds
        stored = out.untyped_storage().nbytes() // max(out.element_size(), 1)
        if (
            rows.numel() > VALUES_LIMIT and rows.numel() > stored
        ):  # a broadcast view: softmax would materialise it
            return None, None
        pv, pi = torch.softmax(rows.float(), dim=1).topk(k, dim=1)
        topk = tuple(
            tuple((int(i), float(v)) for i, v in zip(idx_row, val_row))
            for idx_row, val_row in zip(pi.cpu().tolist(), pv.cpu().tolist())
        )
    if out.dim() < 1 or out.numel() > VALUES_LIMIT:
        return None, topk
    values = out.detach().float().cpu()
    return tuple(_nested(row) for row in values.tolist()), topk


def output_stats(value: Any) -> dict[str, Activation]:
    """Statistics of every floating output tensor, by path. A broadcast view (``expand()``, a
    stride of 0) is read through its distinct elements only: it costs what its storage costs."""
    from resnet_trace.recorder import ActivationStats

    measure = ActivationStats()
    stats: dict[str, Activation] = {}
    for path, t in output_tensors(value):
        if t.is_meta or not t.is_floating_point() or t.numel() == 0:
            continue
        distinct = t.detach()[tuple(slice(0, 1) if st == 0 else slice(None) for st in t.stride())]
        found = measure(distinct)
        measure.forget()
        if found is not None:
            stats[path] = found
    return stats


def _nested(value: object) -> object:
    return tuple(_nested(v) for v in value) if isinstance(value, list) else value
