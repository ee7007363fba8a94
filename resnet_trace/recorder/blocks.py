"""Which classes are a model's blocks, from one forward that opened a scope for every call.

:func:`choose_blocks` reads the :class:`~resnet_trace.recorder.dataflow.Joiner` calls of a
``find_blocks`` forward (every non-leaf call but the model's own was a scope):

1. calls that join their own stream: a residual add, or a concatenation onto it (a DenseNet
   layer), and calls that only concatenate something from outside (a U-Net's up block) where no
   call inside them joins its own stream (diffusers' up block holds resnets: those are the blocks);
2. less the *containers*: a class with one module that ran, whose joins are fewer than those of
   the calls inside it (wav2vec2's encoder adds its positional convolution onto its input, but
   its layers are the blocks);
3. of the rest, the outermost: BERT's ``BertAttention`` adds onto its input, but so does the
   ``BertLayer`` around it (the feed-forward's residual), and the layer holds both residuals;
   T5's ``T5Block`` joins nothing of its own, so its three sub-layers are the blocks;
4. their classes, in forward order, less any class one of whose modules lies inside a module of
   a chosen class (a class nesting in itself too): found blocks never nest, so block rows and
   the rows between them add up to the total.

Failing that, the most repeated class of the model's longest ``Sequential`` or ``ModuleList``,
if its modules do not nest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from torch import nn

from resnet_trace.recorder.dataflow import Joiner


class BlockRule(str, Enum):
    """How the blocks were found."""

    JOINS = "joins"  # the modules that join their own stream (a residual add or a concatenation)
    REPEATED = "repeated"  # the repeated class of the longest Sequential or ModuleList
    NONE = "none"  # neither: no blocks


@dataclass(frozen=True)
class BlockChoice:
    types: tuple[type[nn.Module], ...]
    rule: BlockRule


def choose_blocks(model: nn.Module, joiners: Sequence[Joiner]) -> BlockChoice:
    """The block classes of ``model`` from the joiners of a ``find_blocks`` forward, else by repetition."""
    around_residual: set[int] = set()
    for j in joiners:
        if j.residual:
            around_residual |= j.callers
    modules_of: dict[type[nn.Module], set[int]] = {}
    for j in joiners:
        modules_of.setdefault(type(j.module), set()).add(id(j.module))

    def container(o: Joiner) -> bool:
        inside = sum(j.joins for j in joiners if id(o.module) in j.callers)
        return len(modules_of[type(o.module)]) == 1 and inside > o.joins

    picked = [j for j in joiners if (j.residual or id(j.module) not in around_residual) and not container(j)]
    ids = {id(j.module) for j in picked}
    outermost = [j for j in picked if not (j.callers & ids)]
    types: list[type[nn.Module]] = []
    for j in outermost:
        if type(j.module) not in types:
            types.append(type(j.module))
    found = unnested(model, types)
    if found:
        return BlockChoice(found, BlockRule.JOINS)
    repeated = unnested(model, _most_repeated(model))
    return BlockChoice(repeated, BlockRule.REPEATED if repeated else BlockRule.NONE)


def unnested(model: nn.Module, types: Sequence[type[nn.Module]]) -> tuple[type[nn.Module], ...]:
    """``types`` less every class with a module inside a module of one of them (itself included)."""
    kept = list(types)
    while kept:
        where: dict[str, type[nn.Module]] = {}
        for name, m in model.named_modules():
            cls = next((t for t in kept if isinstance(m, t)), None)
            if cls is not None:
                where[name] = cls
        inner = next(
            (
                cls
                for name, cls in where.items()
                if name and any(".".join(name.split(".")[:i]) in where for i in range(name.count(".") + 1))
            ),
            None,
        )
        if inner is None:
            break
        kept.remove(inner)
    return tuple(kept)


def _most_repeated(model: nn.Module) -> list[type[nn.Module]]:
    longest: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, (nn.Sequential, nn.ModuleList)) and len(m) > len(longest):
            longest = list(m)
    if len(longest) < 2:
        return []
    counts: dict[type[nn.Module], int] = {}
    for m in longest:
        counts[type(m)] = counts.get(type(m), 0) + 1
    best = max(counts, key=lambda k: counts[k])
    return [best] if counts[best] > 1 else []
