"""Multiply-accumulates of one ATen operation: convolutions, matrix products, fused attention, fused RNNs.

For the whole batch, bias adds excluded: ``FlopCounterMode``'s count / 2. :func:`op_macs` is what
the operation mode (:mod:`resnet_trace.ops.mode`) reports with every operation.

Recurrent layers reach the mode in two forms, and both count ``gates x hidden x (input + hidden)``
per time step, layer and direction (plus ``proj_size x hidden`` for an LSTM's projection):

* decomposed into ``addmm``/``mm`` (every ``nn.GRU``, ``nn.RNN``, the cells, an LSTM with
  ``proj_size``, packed sequences or float64 on the CPU; every recurrent layer on ``meta``): the
  products above already count it, whether the input product is one ``mm`` over all steps (CPU)
  or one per step (``meta``);
* one fused operation per layer (and direction) that ``FlopCounterMode`` counts as 0: oneDNN's
  ``mkldnn_rnn_layer`` (an ``nn.LSTM`` on the CPU, real or fake tensors), and the whole-stack
  ``_cudnn_rnn``, ``miopen_rnn`` and ``_lstm_mps``. Their count is every time step (each row of
  the input: ``T x B``, or the packed rows) times every element of every weight matrix they are
  given: each is one product per step, biases (1-D) excluded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

aten = torch.ops.aten


def _prod(values: Sequence[int]) -> int:
    return math.prod(int(v) for v in values)


def _conv_macs(args: tuple, out: Any) -> int:
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    if not isinstance(out, torch.Tensor):
        return 0
    batch = int(x.shape[0])
    if transposed:
        # weight is (c_in, c_out / groups, *k); every input element meets every kernel tap
        c_in, c_out_g, *kernel = w.shape
        return batch * _prod(x.shape[2:]) * c_in * c_out_g * _prod(kernel)
    c_out, c_in_g, *kernel = w.shape
    return batch * _prod(out.shape[2:]) * c_out * c_in_g * _prod(kernel)


def _mm_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    return int(a.shape[0]) * int(a.shape[1]) * int(b.shape[1])


def _bmm_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    return int(a.shape[0]) * int(a.shape[1]) * int(a.shape[2]) * int(b.shape[2])


def _attention_macs(args: tuple, out: Any) -> int:
    """Q·Kᵀ and A·V of a fused attention kernel: (B, H, L, E) x (B, H, S, E) x (B, H, S, Ev)."""
    q, k, v = args[0], args[1], args[2]
    lead = _prod(q.shape[:-2])
    length, e = int(q.shape[-2]), int(q.shape[-1])
    s, ev = int(k.shape[-2]), int(v.shape[-1])
    return lead * length * s * e + lead * length * s * ev


def _steps(x: torch.Tensor) -> int:
    """Time steps x batch of a recurrent input, batch first or not, or the rows of a packed one."""
    return _prod(x.shape[:-1])


def _rnn_layer_macs(args: tuple, out: Any) -> int:
    """``mkldnn_rnn_layer``: one layer, one direction; ``weight0`` is ``w_ih`` (gates x hidden, input),
    ``weight1`` is ``w_hh`` (gates x hidden, hidden). ``weight2``/``weight3`` are the biases, or
    placeholders the size of the weights when the layer has none: never counted."""
    x, w_ih, w_hh = args[0], args[1], args[2]
    return _steps(x) * (w_ih.numel() + w_hh.numel())


def _rnn_stack_macs(weights_at: int) -> Callable[[tuple, Any], int]:
    """``_cudnn_rnn``, ``miopen_rnn`` (weights ``args[1]``), ``_lstm_mps`` (``args[2]``, after the
    hidden states): every layer and direction in one call, given the module's flat list (``w_ih``,
    ``w_hh``, the biases, ``w_hr`` with ``proj_size``). Every layer runs every step of the input,
    so each weight matrix meets every step once."""

    def rule(args: tuple, out: Any) -> int:
        x, weights = args[0], args[weights_at]
        return _steps(x) * sum(w.numel() for w in weights if isinstance(w, torch.Tensor) and w.dim() == 2)

    return rule


_MACS: dict[Any, Callable[[tuple, Any], int]] = {
    aten.convolution.default: _conv_macs,
    aten._convolution.default: _conv_macs,
    aten.mm.default: lambda a, o: _mm_macs(a[0], a[1]),
    aten.addmm.default: lambda a, o: _mm_macs(a[1], a[2]),
    aten.bmm.default: lambda a, o: _bmm_macs(a[0], a[1]),
    aten.baddbmm.default: lambda a, o: _bmm_macs(a[1], a[2]),
}
for _name in (
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_flash_attention_forward",
    "_efficient_attention_forward",
):
    _packet = getattr(aten, _name, None)
    if _packet is not None:
        for _overload in _packet.overloads():
            _MACS[getattr(_packet, _overload)] = _attention_macs
for _name, _rule in (
    ("mkldnn_rnn_layer", _rnn_layer_macs),
    ("_cudnn_rnn", _rnn_stack_macs(1)),
    ("miopen_rnn", _rnn_stack_macs(1)),
    ("_lstm_mps", _rnn_stack_macs(2)),
):
    _packet = getattr(aten, _name, None)
    if _packet is not None:
        for _overload in _packet.overloads():
            _MACS[getattr(_packet, _overload)] = _rule


def op_macs(func: Any, args: tuple, out: Any) -> int:
    """Multiply-accumulates of one ATen operation (0 for anything but convolutions, products and RNNs)."""
    rule = _MACS.get(func)
    return int(rule(args, out)) if rule is not None else 0
