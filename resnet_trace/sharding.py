"""What each of N devices holds for one training step under PyTorch's own sharding engines.

Pure arithmetic over parameter shapes: the model may live on ``meta`` or be made of FakeTensors;
nothing is allocated. docs/training.md ("Sharding over N devices") states the rules and shows them
against the engines; :mod:`resnet_trace.distributed` runs the real step that measures them.

:class:`Shard` names the engine:

* ``none``: ``DistributedDataParallel``, a full replica per device;
* ``optimizer``: DDP + ``torch.distributed.optim.ZeroRedundancyOptimizer`` (ZeRO-1);
* ``gradients``: FSDP2 ``fully_shard(..., reshard_after_forward=False)`` (ZeRO-2-like);
* ``full``: FSDP2 ``fully_shard`` resharding after forward (ZeRO-3).

The sharding units: every block module is one ``fully_shard`` unit (outermost blocks, in
``model.modules()`` order), and the root, everything not in a block, is one more. A parameter
belongs to the first unit that holds it; the root takes the rest.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from resnet_trace.errors import UsageError
from resnet_trace.records.words import Shard

if TYPE_CHECKING:
    from torch import nn


#: The collectives' backends ``rank_bytes`` knows: NCCL on GPUs, gloo on the CPU.
BACKENDS = ("nccl", "gloo")


@dataclass(frozen=True, slots=True)
class RankBytes:
    """What one rank holds through a training step, in bytes.

    ``params_bytes``, ``grads_bytes`` and ``optimizer_bytes`` are exactly what the engine's local
    tensors hold (``to_local()`` of FSDP's DTensors; ``.grad``; the optimizer's state without its
    scalar ``step``). ``padding_bytes``: FSDP's storage past the end of the local chunks (every
    rank's parameter and gradient chunk is allocated at the first chunk's size). The peak's extra
    terms follow a stated policy (docs/training.md): ``gathered_bytes``, unsharded parameters in
    flight; ``reduce_bytes``, gradient-reduction buffers beyond the local gradients.
    """

    rank: int
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    padding_bytes: int = 0
    gathered_bytes: int = 0
    reduce_bytes: int = 0

    @property
    def held_bytes(self) -> int:
        """What the rank holds between steps: its parameters, gradients, optimizer state and padding."""
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.padding_bytes

    def peak_bytes(self, activations_bytes: int, transient_bytes: int = 0) -> int:
        """The rank's predicted peak: what it holds, the peak's sharding terms, and the step's
        saved activations and backward transient at the per-device batch (the one-device view's)."""
        return self.held_bytes + self.gathered_bytes + self.reduce_bytes + activations_bytes + transient_bytes


def block_units(model: nn.Module, block_types: Sequence[type[nn.Module]]) -> list[nn.Module]:
    """The sharding units besides the root: the modules of ``block_types``, outermost only (a block
    inside a block is part of it), each once, in ``model.modules()`` order."""
    types = tuple(block_types)
    if not types:
        return []
    units: list[nn.Module] = []
    inside: set[int] = set()
    for m in model.modules():
        if id(m) in inside or not isinstance(m, types):
            continue
        units.append(m)
        inside.update(id(sub) for sub in m.modules())
    return units


def trainable_ids(model: nn.Module, unread: Iterable[str] = ()) -> frozenset[int]:
    """Ids of the parameters that get a gradient: ``requires_grad`` and read by the forward.

    ``unread`` names the parameters no operation read (a trace's ``totals.unread_params``, as
    ``model.named_parameters()`` names them); a parameter shared under several names is unread
    only if every one of its names is.
    """
    skip = set(unread)
    read: set[int] = set()
    wanted: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.requires_grad:
            wanted.add(id(p))
            if name not in skip:
                read.add(id(p))
    return frozenset(wanted & read)


def unit_params(model: nn.Module, units: Sequence[nn.Module]) -> list[list[nn.Parameter]]:
    """The parameters each ``fully_shard`` call manages: one list per unit, in ``units`` order,
    then the root's (every parameter no unit holds). A parameter shared by units is the first's."""
    seen: set[int] = set()
    out: list[list[nn.Parameter]] = []
    for unit in (*units, model):
        own = []
        for p in unit.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                own.append(p)
        out.append(own)
    return out


def _nbytes(p: nn.Parameter) -> int:
    return int(p.numel()) * int(p.element_size())


def _dim0_rows(p: nn.Parameter, world: int) -> tuple[int, int]:
    """``fully_shard``'s split of ``p``: (rows per chunk, the first chunk's, which every rank pads to;
    the row's bytes). ``torch.chunk`` semantics: ``ceil(n / world)`` rows each, the last ranks
    smaller or empty."""
    if p.dim() == 0:
        raise UsageError("fully_shard cannot shard a 0-d parameter; use --shard none or optimizer")
    n0 = int(p.shape[0])
    row = math.prod(int(d) for d in p.shape[1:]) * int(p.element_size())
    return math.ceil(n0 / world) if n0 else 0, row


def fsdp_local_rows(p: nn.Parameter, world: int, rank: int) -> int:
    """Rows of ``p`` that ``rank`` holds under ``fully_shard`` (``to_local().shape[0]``)."""
    chunk, _ = _dim0_rows(p, world)
    return max(0, min(chunk, int(p.shape[0]) - rank * chunk))


def zero_partition(params: Sequence[nn.Parameter], world: int) -> list[int]:
    """``ZeroRedundancyOptimizer``'s rank for each parameter (one parameter group, as passed).

    Its algorithm: the parameters sorted by ``numel`` (largest first, a stable sort), each given
    greedily to the rank with the fewest elements so far (the lowest rank on a tie).
    """
    owner = [0] * len(params)
    sizes = [0] * world
    for i in sorted(range(len(params)), key=lambda i: int(params[i].numel()), reverse=True):
        rank = min(range(world), key=lambda r: sizes[r])  # first index of the minimum
        owner[i] = rank
        sizes[rank] += int(params[i].numel())
    return owner


def rank_bytes(
    model: nn.Module,
    units: Sequence[nn.Module],
    world: int,
    shard: Shard | str,
    optimizer_state_multiplier: int,
    trainable: Collection[int] | None = None,
    *,
    backend: str = "nccl",
) -> list[RankBytes]:
    """What each of ``world`` ranks holds under ``shard``, one :class:`RankBytes` per rank.

    ``units``: the block modules, each one ``fully_shard`` unit (the root is one more; see
    :func:`block_units`). ``optimizer_state_multiplier``: copies of a trained parameter the
    optimizer keeps (Adam 2, SGD momentum 1, plain SGD 0). ``trainable``: ids of the parameters
    that get a gradient (:func:`trainable_ids`; ``None``: every parameter with ``requires_grad``).
    ``ZeroRedundancyOptimizer`` is taken to be given ``model.parameters()``, frozen ones included.
    ``backend``: ``nccl`` (GPUs) or ``gloo`` (the CPU), whose all-gather and reduce-scatter each
    stage one more copy of the unsharded unit (a peak term only; the held bytes are the same).
    """
    shard = Shard(shard)
    if world < 1:
        raise UsageError(f"the number of devices must be at least 1, not {world}")
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    params = list(model.parameters())
    trained = (
        {id(p) for p in params if p.requires_grad}
        if trainable is None
        else {id(p) for p in params if id(p) in trainable}
    )
    mult = int(optimizer_state_multiplier)
    every = sum(_nbytes(p) for p in params)
    grads = sum(_nbytes(p) for p in params if id(p) in trained)
    if not shard.fsdp:
        # DDP: a full replica; gradients are views into its buckets (gradient_as_bucket_view), whose
        # slots for parameters that need a gradient but get none stay allocated, and each gradient
        # autograd makes lives beside its slot until it is copied in (the largest one at the peak).
        unfilled = sum(_nbytes(p) for p in params if p.requires_grad and id(p) not in trained)
        unfilled += max((_nbytes(p) for p in params if id(p) in trained), default=0)
        if shard is Shard.NONE:
            states = [mult * grads] * world
        else:
            owner = zero_partition(params, world)
            states = [0] * world
            for p, r in zip(params, owner):
                if id(p) in trained:
                    states[r] += mult * _nbytes(p)
        return [
            RankBytes(
                rank=r,
                params_bytes=every,
                grads_bytes=grads,
                optimizer_bytes=states[r],
                reduce_bytes=unfilled,
            )
            for r in range(world)
        ]

    groups = unit_params(model, units)
    # peak terms, the same on every rank: padded unsharded parameters and trained gradients per unit
    gathered = [sum(_padded_full(p, world) for p in g) for g in groups]
    grad_full = [sum(_padded_full(p, world) for p in g if id(p) in trained) for g in groups]
    blocks, root = gathered[:-1], gathered[-1]
    if shard is Shard.GRADIENTS:
        in_flight = sum(gathered)  # every unit stays unsharded from its forward to its backward
    else:
        # the root is never resharded after forward (FSDP2's heuristic); a block is gathered while it
        # runs and one more is in flight (forward: the last all-gather kept until the next copy-out;
        # backward: the default prefetch of the next unit)
        in_flight = root + sum(sorted(blocks, reverse=True)[:2])
    reduce = 2 * max(grad_full, default=0)  # the unit's unsharded gradients and the reduce-scatter input
    if backend == "gloo":  # all_gather_into_tensor / reduce_scatter_tensor stage a full copy on gloo
        in_flight += max(gathered, default=0)
        reduce += max(grad_full, default=0)
    out = []
    for r in range(world):
        p_local = g_local = pad = 0
        for p in params:
            chunk, row = _dim0_rows(p, world)
            local = fsdp_local_rows(p, world, r) * row
            p_local += local
            pad += chunk * row - local
            if id(p) in trained:
                g_local += local
                pad += chunk * row - local
        out.append(
            RankBytes(
                rank=r,
                params_bytes=p_local,
                grads_bytes=g_local,
                optimizer_bytes=mult * g_local,
                padding_bytes=pad,
                gathered_bytes=in_flight,
                reduce_bytes=reduce,
            )
        )
    return out


def _padded_full(p: nn.Parameter, world: int) -> int:
    """Bytes of ``p`` unsharded as FSDP gathers it: ``world`` chunks of the first chunk's size."""
    chunk, row = _dim0_rows(p, world)
    return world * chunk * row
