"""One forward for two recorders: a ``find_blocks`` forward's events, replayed for the blocks it found.

A user's model traced without ``block`` needs its blocks before its rows (a row's kind, the stage
and frame rows, each block's skips depend on them), and its blocks come from a forward. Rather
than a second forward, the first keeps a :class:`Log` of what the recorder saw: every module call
(the module, whether it is a leaf, the first input's shape, its arguments' and results' tensors)
and every operation (its MACs, whether it read a parameter, its tensors, an add's operands, a
concatenation's). Each tensor is logged as a :class:`Ghost` that keeps its shape and whether it
is floating: one ghost per tensor object while it lives (a new tensor at a dead one's ``id`` gets
a new ghost, as the recorder's weak references tell the two apart). :func:`replay` feeds the
events, in order, to a fresh :class:`~resnet_trace.recorder.recorder.Recorder` of the blocks
found: the same rows, skips and totals as a second forward, without its operations.

Only for a forward with nothing a replay cannot give: no statistics, timings or saved tensors.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from torch import nn

from resnet_trace.recorder.dataflow import OpFacts
from resnet_trace.recorder.recorder import Recorder
from resnet_trace.records import Shape


class Ghost:
    """A tensor's stand-in on a replay: its shape, and whether it is floating."""

    __slots__ = ("shape", "_floating", "__weakref__")

    def __init__(self, shape: Any, floating: bool) -> None:
        self.shape = shape
        self._floating = floating

    def is_floating_point(self) -> bool:
        return self._floating


_PRE, _POST, _OP, _RESHAPED = 0, 1, 2, 3


class Log:
    """The events of one forward, their tensors as :class:`Ghost` objects (kept alive with the log).

    A tensor whose shape changes in place (``unsqueeze_``, ``resize_``, an ``out=`` of another size)
    keeps its ghost, and the change is an event of its own: on the replay the ghost takes the new
    shape where the forward's tensor took it.
    """

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self._ghosts: dict[int, tuple[weakref.ref, Ghost, Any]] = {}  # ..., the shape last logged

    def _g(self, t: Any) -> Ghost:
        shape = t.shape
        entry = self._ghosts.get(id(t))
        if entry is not None and entry[0]() is t:
            ghost = entry[1]
            if shape != entry[2]:
                self.events.append((_RESHAPED, ghost, shape))
                self._ghosts[id(t)] = (entry[0], ghost, shape)
            return ghost
        ghost = Ghost(shape, t.is_floating_point())
        self._ghosts[id(t)] = (weakref.ref(t), ghost, shape)
        return ghost

    def _all(self, tensors: list[Any]) -> list[Ghost]:
        g = self._g
        return [g(t) for t in tensors]

    def pre(self, module: nn.Module, leaf: bool, in_shape: Shape | None, tensors: list[Any]) -> None:
        self.events.append((_PRE, module, leaf, in_shape, self._all(tensors)))

    def post(self, outs: list[Any], tensors: list[Any]) -> None:
        self.events.append((_POST, self._all(outs), self._all(tensors)))

    def op(self, op: OpFacts) -> None:
        g, all_ = self._g, self._all
        self.events.append(
            (
                _OP,
                OpFacts(
                    op.macs,
                    op.reads,
                    all_(op.inputs),
                    all_(op.outs),
                    op.single,
                    None if op.pair is None else (g(op.pair[0]), g(op.pair[1])),
                    None if op.cat is None else all_(op.cat),
                ),
            )
        )


def replay(found: Recorder, into: Recorder) -> Recorder:
    """``into`` (a fresh recorder, blocks chosen) fed the events of ``found``'s :class:`Log`."""
    log = found.log
    assert log is not None
    into.read = set(found.read)
    for event in log.events:
        kind = event[0]
        if kind == _OP:
            into._op(event[1])
        elif kind == _PRE:
            _, module, leaf, in_shape, tensors = event
            into._pre(module, leaf, in_shape, _given(tensors))
        elif kind == _RESHAPED:
            event[1].shape = event[2]
        else:
            _, outs, tensors = event
            into._post(outs, _given(tensors), None, 0.0)
    return into


def _given(tensors: list[Ghost]) -> Callable[[], list[Any]]:
    return lambda: tensors
