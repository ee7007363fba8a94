"""The operation mode: every ATen operation of a forward, reported once to an observer.

:class:`OpMode` is a ``TorchDispatchMode`` (the pattern of PyTorch's own
``torch/utils/flop_counter.py``). Every operation the model issues, from whichever
module or function, passes through it once, after autograd and decompositions, so
``F.linear``, ``torch.matmul``, ``einsum``, ``F.multi_head_attention_forward`` and every
attention backend all arrive as the same few operations. For each one it tells the
observer:

* its multiply-accumulates (:func:`~resnet_trace.ops.macs.op_macs`);
* the tensors it read and produced (:func:`tensors_in`), so the observer can tell which
  parameters were read and where residual adds join two paths.

On ``meta`` tensors it answers the output of a few common operations directly
(:data:`~resnet_trace.ops.meta.META_RULES`); anything else falls through to PyTorch unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from resnet_trace.ops.macs import op_macs
from resnet_trace.ops.meta import META_RULES
from resnet_trace.ops.workspace import FUSED_LSTM, with_workspace

aten = torch.ops.aten


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Tensors in an argument or result, through tuples, lists and dicts (subclasses too), in order.

    A dataclass is not looked into (callers that want its fields, ``tracer.first_tensor``, pass
    them). Not ``torch.utils._pytree.tree_leaves``: it finds nothing in an unregistered subclass of
    dict or list (a model's own output class), walks a ``deque`` and whatever else is registered
    with it, and took 1.8x as long here on a convolution's arguments.
    """
    if isinstance(value, torch.Tensor):
        yield value
        return
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (tuple, list)):
        return
    for v in value:
        # Most items are tensors or plain numbers (an operation's strides and paddings): only a
        # nested container gets a generator of its own. This runs for every operation and call.
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, (tuple, list, dict)):
            yield from tensors_in(v)


ADDS = frozenset({aten.add.Tensor, aten.add_.Tensor})


class OpObserver(Protocol):
    def on_op(self, func: Any, args: tuple, kwargs: dict, out: Any, macs: int) -> None: ...


class OpMode(TorchDispatchMode):
    """Count and report every operation; answer common ``meta`` operations without PyTorch's meta kernels."""

    def __init__(self, observer: OpObserver, *, shortcuts: bool = True) -> None:
        super().__init__()
        self.observer = observer
        self.shortcuts = shortcuts

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode wraps a subclass's __torch_dispatch__ in torch._disable_dynamo unless
        # this says False; that wrapper imports torch._dynamo (and sympy) on its first call, about
        # 1 s per process, for a guard against torch.compile tracing into the mode, which never
        # happens here. Read at class creation (TorchDispatchMode.__init_subclass__).
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = NotImplemented
        if self.shortcuts:
            rule = META_RULES.get(func)
            if rule is not None and args and getattr(args[0], "is_meta", False):
                out = rule(*args, **kwargs)
        if out is NotImplemented:
            out = func(*args, **kwargs)
            if func is FUSED_LSTM:
                out = with_workspace(func, args, out)
        self.observer.on_op(func, args, kwargs, out, op_macs(func, args, out))
        return out
