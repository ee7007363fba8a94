"""oneDNN's fused LSTM layer on fake tensors: the workspace the CPU saves for the backward.

On the CPU an ``nn.LSTM`` in training runs ``aten.mkldnn_rnn_layer``, which returns a workspace
(the gates of every step) that autograd saves for the backward. Its fake kernel returns an empty
one, so a shape-only ``--train`` trace would miss it: a quarter of a small LSTM classifier's saved
bytes. Its size is oneDNN's own (padded, per layer and direction), with no formula to mirror; so
the layer is run once for real on zeros of the same shapes, when that costs at most
:data:`WORKSPACE_LIMIT` bytes, and the size is remembered per shape. A bigger layer keeps the empty
workspace: its saved bytes then miss it (docs/training.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from resnet_trace.ops.fake import is_fake

aten = torch.ops.aten
FUSED_LSTM = aten.mkldnn_rnn_layer.default
#: The most memory the real run of one layer may take (inputs, weights, outputs, workspace).
WORKSPACE_LIMIT = 256 * 2**20

_sizes: dict[tuple, int | None] = {}


def with_workspace(func: Any, args: tuple, out: Any) -> Any:
    """``out`` of a fused LSTM layer on fake tensors in training, its workspace sized as the CPU's."""
    if func is not FUSED_LSTM or not isinstance(out, tuple) or len(out) != 4:
        return out
    ws = out[3]
    if not is_fake(ws) or ws.numel() != 0 or len(args) < 16 or not args[15]:
        return out
    if args[0].device.type != "cpu":
        return out
    size = workspace_bytes(args)
    if not size:
        return out
    return (out[0], out[1], out[2], ws.new_empty((size,), dtype=torch.uint8))


def workspace_bytes(args: tuple) -> int | None:
    """The bytes of the workspace oneDNN makes for this layer (None when too big to find out)."""
    tensors = [a for a in args[:7] if isinstance(a, torch.Tensor)]
    key = (
        tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else None for a in args[:7]),
        tuple(tuple(a) if isinstance(a, (list, tuple)) else a for a in args[7:]),
    )
    if key in _sizes:
        return _sizes[key]
    x = args[0]
    hidden = int(args[10])
    steps_batch = math.prod(int(d) for d in x.shape[:-1])
    cost = sum(t.numel() * t.element_size() for t in tensors) + 16 * steps_batch * hidden * x.element_size()
    if cost > WORKSPACE_LIMIT:
        _sizes[key] = None
        return None
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes(), torch.no_grad():
        real = [
            torch.zeros(tuple(a.shape), dtype=a.dtype) if isinstance(a, torch.Tensor) else a for a in args
        ]
        got = FUSED_LSTM(*real)
        size = int(got[3].untyped_storage().nbytes())
    _sizes[key] = size
    return size
