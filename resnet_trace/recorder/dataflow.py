"""Skip paths from the dataflow: which adds and concatenations join a block's stream, and with what.

The :class:`~resnet_trace.recorder.recorder.Recorder` opens a *scope* for every block call (and,
when finding blocks, for every non-leaf call but the model's own) and hands this module every
operation. Every floating-point tensor made inside a scope is a *node*, and carries, for each
node it descends from in an open scope, the work done on its way from there (MACs, operations,
the scope's child modules it passed, whether any of it did MACs or read a parameter). A
scope's floating-point inputs are nodes of their own; so is what a child scope returns, as seen
from its parent. Integer and boolean tensors carry nothing: index arithmetic (a mask, T5's
buckets, position ids) is never a stream.

A **residual** is an add of two floating-point tensors of one shape that joins a scope's stream
with the branch the scope computed on it:

* the operands' nearest common ancestor ``c`` is a node of the scope (operands with no common
  ancestor never join); the side that did less work from ``c`` is the skip, and the other, the
  branch, did some work (MACs or a parameter), so two products of one tensor (RoPE's
  ``q * cos + rotate_half(q) * sin``) are no residual;
* the add and ``c`` both lie on the scope's **spine**: the way back from what the scope returns
  to one of its inputs, through every operation's *stream operand* (the one that did the least
  work from the operands' nearest common ancestor: the skip side of an add, ``v`` of an
  attention, ``x`` of ``x * rsqrt(mean(x²))``; with no common ancestor, the one from the scope's
  first input), so past a post-norm too (BERT's ``LayerNorm(x + f(x))``). Adds off the spine
  (RoPE inside an attention) are not the scope's stream; a join inside a child scope, on the
  child's spine, is judged by the scope that owns ``c``.

A **concatenation skip** is a ``cat`` on the spine of the scope that runs it, joining the stream
operand (the one from the scope's first input, the latest of those) with another operand:

* one the stream descends from, inside the scope: the scope's own input (``concat identity``,
  a DenseNet layer's ``cat([x, f(x)])``) or an earlier child's output (``concat layers.0``),
  provided the stream did some work since (slices of one tensor, RoPE's halves or a patch
  merge's quarters, are no skip);
* one from outside the scope, through another of its inputs (a U-Net's encoder feature):
  ``concat`` and the row name of the module that returned it (``concat down_blocks.1``;
  ``concat input`` for the model's own input).

A ``cat`` done outside every scope is noted on its result instead (its stream: the operand a
module returned last), and the first scope that takes that result names the other operands
the same way: the row that consumes the concatenation shows it (diffusers' up blocks
concatenate, their resnets take it). Each scope's skips are its own joins and those of the
scopes inside it that lie on its spine, in forward order.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from resnet_trace.ops import ADDS, tensors_in

IDENTITY = "identity"
CONCAT = "concat"
INPUT = "input"  # the origin of the model's own input in a concatenation skip
_CAT = torch.ops.aten.cat.default

# work on a way from a node: (MACs, operations, the owner's child modules passed, did MACs or read a parameter)
Path = tuple[int, int, frozenset[str], bool]
_ZERO: Path = (0, 0, frozenset(), False)


@dataclass(eq=False)
class Join:
    """An add or a concatenation that may join a scope's stream with something else."""

    owner: Scope
    fork: int  # an add's operands' nearest common ancestor, also on the owner's spine (0: a concatenation)
    node: int  # the result's node: the join's place in forward order
    text: str  # the skip, in the row's words
    residual: bool  # an add, or a concatenation onto the scope's own stream (not one from outside)
    accepted: bool = False


@dataclass(eq=False)
class Scope:
    """An open block call (or, when finding blocks, any non-leaf call but the model's)."""

    module: nn.Module
    name: str
    depth: int  # index of the call on the recorder's stack
    forks: set[int] = field(default_factory=set)
    # input node -> (position, the tensor's node outside, the module that made it)
    inputs: dict[int, tuple[int, int, str | None]] = field(default_factory=dict)
    consumed: list[str] = field(default_factory=list)  # concatenations it took as input, from outside
    found: list[str] = field(default_factory=list)  # its skips, in order, once closed


@dataclass(slots=True)
class OpFacts:
    """What the dataflow and the rows need of one operation (its tensors, or their stand-ins on a replay).

    ``pair``: an add's two tensor operands; ``cat``: a concatenation's floating, non-empty operands
    (a ``cat`` of a list); ``outs``: the tensors it returned (``single``: one tensor, not a nest).
    """

    macs: int
    reads: bool
    inputs: list[Any]
    outs: list[Any]
    single: bool
    pair: tuple[Any, Any] | None
    cat: list[Any] | None


def op_facts(func: Any, args: tuple, kwargs: dict, out: Any, macs: int, reads: bool, inputs: list) -> OpFacts:
    """The :class:`OpFacts` of an operation ``func(*args, **kwargs) -> out``."""
    single = isinstance(out, torch.Tensor)
    pair = cat = None
    if func in ADDS:
        if len(args) >= 2 and isinstance(args[0], torch.Tensor) and isinstance(args[1], torch.Tensor):
            pair = (args[0], args[1])
    elif func is _CAT and args and isinstance(args[0], (list, tuple)):
        cat = [t for t in args[0] if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    return OpFacts(macs, reads, inputs, [out] if single else list(tensors_in(out)), single, pair, cat)


@dataclass(frozen=True)
class Joiner:
    """A call (when finding blocks) with joins of its own: the module, its callers, what it joins."""

    module: nn.Module
    callers: frozenset[int]  # ids of the modules whose calls were open around it
    residual: bool  # joins its own stream (a residual add or a concatenation onto it)
    joins: int  # how many: its own joins, and the concatenations it took from outside


class Dataflow:
    """The nodes, ways and joins of one forward (made by the recorder, which owns the call stack)."""

    def __init__(self, stack: Sequence[Any], *, find: bool) -> None:
        self.stack = stack  # the recorder's open calls (``.name``, ``.module``)
        self.find = find
        self.scopes: list[Scope] = []
        self.joiners: list[Joiner] = []
        self._lineage: dict[int, tuple[weakref.ref, dict[int, Path], int]] = {}
        self._owner: dict[int, Scope] = {}
        self._spine: dict[int, int] = {}  # node -> the node its stream came from
        self._marks: dict[int, list[Join]] = {}  # node -> joins met there
        self._origin: dict[int, tuple[weakref.ref, str, int]] = {}  # tensor -> (ref, module, order)
        self._notes: dict[int, tuple[weakref.ref, list[str]]] = {}  # a cat's result -> its skips
        self._next = 0
        self._order = 0

    # -- scopes ------------------------------------------------------------------
    def open(self, module: nn.Module, name: str, depth: int, tensors: Sequence[Any]) -> Scope:
        """A scope for a call: its floating-point inputs (``tensors``: its arguments' tensors, in
        order) become its input nodes."""
        scope = Scope(module=module, name=name, depth=depth)
        self.scopes.append(scope)
        position = 0
        for t in tensors:
            if not t.is_floating_point():
                continue
            note = self._notes.pop(id(t), None)
            if note is not None and note[0]() is t:
                scope.consumed.extend(note[1])
            lineage, node = self._entry(t)
            if node in scope.inputs:  # the same tensor passed twice: its node outside
                node = scope.inputs[node][1]
            fork = self._fork(scope)
            origin = self._origin_of(t)
            scope.inputs[fork] = (position, node, origin[0] if origin is not None else None)
            position += 1
            self._set(t, {**lineage, fork: _ZERO}, fork)
        return scope

    def close(self, scope: Scope, out: Sequence[Any]) -> list[str]:
        """Close the innermost scope (``scope``; ``out``: the tensors it returned): its skips, from its spine."""
        self.scopes.pop()
        outs = [t for t in out if t.is_floating_point()]
        visited: set[int] = set()
        reached = 0
        met: dict[int, Join] = {}
        for t in outs:
            n = self._entry(t)[1]
            while n and n not in visited and self._owner.get(n) is scope:
                visited.add(n)
                for j in self._marks.get(n, ()):
                    met[id(j)] = j
                if n in scope.inputs:
                    reached = reached or n
                    break
                n = self._spine.get(n, 0)
        passed: list[Join] = []  # joins this scope's stream carries: its own, and its children's
        own: list[Join] = []
        for j in met.values():
            if j.owner is scope and not j.accepted:
                if j.fork and j.fork not in visited:
                    continue  # joins two ways from a node off the stream
                j.accepted = True
                own.append(j)
            passed.append(j)  # accepted below, or a join for an enclosing scope to judge
        scope.found = scope.consumed + [j.text for j in sorted(passed, key=_node) if j.accepted]
        if self.find and (own or scope.consumed):
            callers = frozenset(id(c.module) for c in self.stack)
            residual = any(j.residual for j in own)
            self.joiners.append(Joiner(scope.module, callers, residual, len(own) + len(scope.consumed)))
        for f in scope.forks:
            self._owner.pop(f, None)
            self._spine.pop(f, None)
            self._marks.pop(f, None)
        if self.scopes:  # what it returns is a node of its parent, its stream from the reached input
            parent = self.scopes[-1]
            back = scope.inputs[reached][1] if reached else 0
            for t in outs:
                lineage = self._get(t)
                fork = self._fork(parent)
                self._spine[fork] = back
                if passed:
                    self._marks[fork] = passed
                self._set(t, {**lineage, fork: _ZERO}, fork)
        return scope.found

    # -- origins: which module made a tensor (the words of a concatenation skip) ----------------
    # Recorded for what each call returns, outside scopes and one call deep inside the innermost
    # (its children: what a concatenation names), and carried through operations outside scopes;
    # inside a scope, an operand an operation made is traced back to the scope's input instead.
    def inputs(self, tensors: Sequence[Any]) -> None:
        """The model's own input tensors."""
        self._order += 1
        for t in tensors:
            self._origin[id(t)] = (weakref.ref(t), INPUT, self._order)

    def made(self, depth: int, name: str, args: Callable[[], Sequence[Any]], out: Sequence[Any]) -> None:
        """``out`` (its tensors) is what the module ``name`` (a call at ``depth`` on the stack) returned;
        ``args()``: the tensors it was called with."""
        if self.scopes and depth > self.scopes[-1].depth + 1:
            return  # deeper inside a scope than any concatenation there names
        self._order += 1
        origins = self._origin
        passed: set[int] | None = None
        for t in out:
            entry = origins.get(id(t))
            if entry is not None and entry[0]() is t:
                if passed is None:
                    passed = {id(a) for a in args()}
                if id(t) in passed:
                    continue  # handed back as it came in (an identity, a dropout in eval)
                origins[id(t)] = (entry[0], name, self._order)
            elif t.is_floating_point():
                origins[id(t)] = (weakref.ref(t), name, self._order)

    def _origin_of(self, t: torch.Tensor) -> tuple[str, int] | None:
        entry = self._origin.get(id(t))
        return (entry[1], entry[2]) if entry is not None and entry[0]() is t else None

    # -- operations ------------------------------------------------------------------
    def on_op(self, op: OpFacts) -> None:
        """One operation: its inputs' (``op.inputs``) origins and ways, on to its outputs; joins noted."""
        inputs, out = op.inputs, op.outs
        if not self.scopes:
            self._carry_origin(inputs, out)
            if op.cat is not None:
                self._note(op.cat, out, op.single)
            return
        macs, reads = op.macs, op.reads
        live = [(t, lin) for t in inputs if (lin := self._get(t))]  # only floating tensors have ways
        if len(live) == 1:
            merged = live[0][1]
        else:
            merged = {}
            for _, lineage in live:
                for f, (m, n, mods, w) in lineage.items():
                    old = merged.get(f)
                    merged[f] = (
                        (max(m, old[0]), max(n, old[1]), mods | old[2], w or old[3])
                        if old
                        else (m, n, mods, w)
                    )
        worked = bool(macs) or reads
        children = {id(s): self._child(s) for s in self.scopes}
        owner = self._owner
        result: dict[int, Path] = {}
        for f, (m, n, mods, w) in merged.items():
            child = children[id(owner[f])]
            if child and child not in mods:
                mods = mods | {child}
            result[f] = (m + macs, n + 1, mods, w or worked)
        scope = self.scopes[-1]
        node = self._fork(scope)
        self._spine[node] = self._stream(scope, live) if live else 0
        if op.pair is not None:
            a, b = op.pair
            by_id = {id(t): lin for t, lin in live}
            self._add(a, b, by_id.get(id(a), {}), by_id.get(id(b), {}), node)
        elif op.cat is not None:
            self._cat(scope, op.cat, node)
        result[node] = _ZERO
        for t in out:
            if t.is_floating_point():
                self._set(t, result, node)

    def _stream(self, scope: Scope, live: list[tuple[torch.Tensor, dict[int, Path]]]) -> int:
        """The node an operation's stream came from: its stream operand's."""
        if len(live) == 1:
            return self._node(*live[0])
        common = set(live[0][1]).intersection(*(lin for _, lin in live[1:]))
        if common:
            c = max(common)
            return self._node(*min(live, key=lambda p: p[1][c][:2]))
        return self._node(*live[self._stream_index(scope, live)])

    def _stream_index(self, scope: Scope, operands: list[tuple[torch.Tensor, dict[int, Path]]]) -> int:
        """The stream operand: the one from the scope's first input, the latest of those."""

        def rank(i: int) -> tuple[int, int]:
            t, lineage = operands[i]
            first = min((scope.inputs[f][0] for f in lineage if f in scope.inputs), default=1 << 30)
            return first, -self._node(t, lineage)

        return min(range(len(operands)), key=rank)

    def _add(self, a: Any, b: Any, lin_a: dict[int, Path], lin_b: dict[int, Path], node: int) -> None:
        call = self.stack[-1] if self.stack else None
        if call is None or (call.leaf and call.block is None):
            return  # the arithmetic inside a leaf module (a GELU's polynomial)
        if a.shape != b.shape or not (a.is_floating_point() and b.is_floating_point()):
            return
        common = lin_a.keys() & lin_b.keys()
        if not common:
            return
        c = max(common)  # the most recent node both descend from
        pa, pb = lin_a[c], lin_b[c]
        skip, branch = (pa, pb) if pa[:2] < pb[:2] else (pb, pa)
        if not branch[3]:
            return  # neither side did MACs or read a parameter: arithmetic on one tensor (RoPE)
        text = "+".join(sorted(skip[2])) if skip[2] else IDENTITY
        self._mark(node, Join(self._owner[c], c, node, text, residual=True))

    def _cat(self, scope: Scope, tensors: Sequence[Any], node: int) -> None:
        if len(tensors) < 2:
            return  # a cache's first step concatenates onto an empty tensor
        operands = [(t, self._get(t)) for t in tensors]
        s = self._stream_index(scope, operands)
        stream = operands[s][1]
        for i, (t, lineage) in enumerate(operands):
            if i == s:
                continue
            own = self._node(t, lineage)
            common = lineage.keys() & stream.keys()
            c = max(common) if common else 0
            if c and self._owner[c] is scope:
                if own not in stream or not stream[own][3]:
                    continue  # not where the stream came from, or nothing done since (slices of one tensor)
                text = self._child_made(scope, t) if own not in scope.inputs else IDENTITY
                self._mark(node, Join(scope, 0, node, f"{CONCAT} {text}", residual=True))
            elif any(f in scope.inputs for f in lineage):  # from outside, through another input
                origin = self._origin_of(t)
                name = origin[0] if origin is not None else self._input_made(scope, own)
                if name is not None:
                    self._mark(node, Join(scope, 0, node, f"{CONCAT} {name}", residual=False))

    def _input_made(self, scope: Scope, node: int) -> str | None:
        """The module that made the scope's input ``node`` comes from (back along its stream)."""
        while node and node not in scope.inputs and self._owner.get(node) is scope:
            node = self._spine.get(node, 0)
        return scope.inputs[node][2] if node in scope.inputs else None

    def _child_made(self, scope: Scope, t: Any) -> str:
        """The scope's child module that made ``t`` (relative name), or ``identity``: from its input."""
        origin = self._origin_of(t)
        prefix = scope.name + "." if scope.name else ""
        if (
            origin is None
            or origin[0] == INPUT
            or not origin[0].startswith(prefix)
            or origin[0] == scope.name
        ):
            return IDENTITY
        return origin[0][len(prefix) :]

    def _note(self, tensors: Sequence[Any], outs: Sequence[Any], single: bool) -> None:
        """A ``cat`` outside every scope: its joined operands, for the scope that takes the result."""
        if not single:
            return
        out = outs[0]
        origins = [o for t in tensors for o in [self._origin_of(t)] if o is not None]
        if len(origins) >= 2:
            latest = max(order for _, order in origins)  # the stream: what was made last
            skips = [f"{CONCAT} {name}" for name, order in origins if order != latest]
            if skips:  # slices of one tensor join nothing
                self._notes[id(out)] = (weakref.ref(out), skips)

    def _carry_origin(self, inputs: Sequence[Any], out: Sequence[Any]) -> None:
        """An operation's result comes from its one input's module, or from the module running it."""
        origins = self._origin
        found = None
        for t in inputs:
            entry = origins.get(id(t))
            if entry is not None and entry[0]() is t:
                if found is not None:  # several: the module running the operation made it
                    self._order += 1
                    call = self.stack[-1] if self.stack else None
                    name = (call.name or type(call.module).__name__) if call is not None else entry[1]
                    found = (entry[0], name, self._order)
                    break
                found = entry
        if found is None:
            return
        for t in out:
            origins[id(t)] = (weakref.ref(t), found[1], found[2])

    # -- nodes and ways -------------------------------------------------------------
    def _fork(self, scope: Scope) -> int:
        self._next += 1
        scope.forks.add(self._next)
        self._owner[self._next] = scope
        return self._next

    def _mark(self, node: int, join: Join) -> None:
        self._marks.setdefault(node, []).append(join)

    def _entry(self, t: torch.Tensor) -> tuple[dict[int, Path], int]:
        lineage = self._get(t)
        return lineage, self._node(t, lineage)

    def _node(self, t: torch.Tensor, lineage: dict[int, Path]) -> int:
        """The tensor's own node, or failing that the nearest open one it descends from."""
        entry = self._lineage.get(id(t))
        if entry is not None and entry[0]() is t and entry[2] in self._owner:
            return entry[2]
        return max(lineage) if lineage else 0

    def _get(self, t: torch.Tensor) -> dict[int, Path]:
        entry = self._lineage.get(id(t))
        if entry is None or entry[0]() is not t:
            return {}
        owner = self._owner
        return {f: p for f, p in entry[1].items() if f in owner}

    def _set(self, t: torch.Tensor, lineage: dict[int, Path], node: int) -> None:
        self._lineage[id(t)] = (weakref.ref(t), lineage, node)

    def _child(self, scope: Scope) -> str | None:
        """The scope's child module running now (its name relative to the scope), if any."""
        if len(self.stack) <= scope.depth + 1:
            return None
        parent, child = self.stack[scope.depth].name, self.stack[scope.depth + 1].name
        return child[len(parent) + 1 :] if parent and child.startswith(parent + ".") else child


def _node(join: Join) -> int:
    return join.node
