"""One rank of the sharded step: the program each process runs, and the records it reads and writes.

:mod:`resnet_trace.distributed` starts ``world`` Python processes, each running :func:`main`:
it reads the pickled :class:`Step` list, meets its peers on loopback (rank 0 serves the
rendezvous on a free port), and for each step builds the model under the same seed, wraps it as
:class:`~resnet_trace.sharding.Shard` says, runs a training step twice and measures the second
(:class:`MeasuredRank`, its peak by :class:`~resnet_trace.peak.PeakMeter`). Its results, or the
first line of its error, go to files in the folder the parent gave; the parent reads them.

The wrappings (docs/training.md, "Sharding over N devices"):

* ``none``: ``DistributedDataParallel(gradient_as_bucket_view=True, find_unused_parameters=True)``
  and the optimizer over ``model.parameters()``;
* ``optimizer``: the same DDP and ``ZeroRedundancyOptimizer(model.parameters(), optimizer_class=...)``;
* ``gradients`` / ``full``: ``fully_shard(block, reshard_after_forward=False / True)`` on every
  block unit (:func:`~resnet_trace.sharding.block_units`), then on the root.

The loss is the one ``run --backward`` takes: cross-entropy of each sample's flattened output
against class 0. Every rank runs the same batch: the per-device batch.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_trace.records import Device, Optimizer
from resnet_trace.sharding import Shard

if TYPE_CHECKING:  # no torch at import time
    from torch import nn

    from resnet_trace.choice import ModelChoice
    from resnet_trace.feed import Feed


@dataclass(frozen=True)
class ModelBuild:
    """A picklable recipe for the model every rank builds: a :class:`~resnet_trace.choice.ModelChoice`
    (the built-in seed's options or a ``PATH.py:NAME`` reference), built on the CPU under ``seed``.
    ``trainable`` (``--trainable``): a regular expression; a parameter whose name it does not
    ``re.search`` is frozen, as the one-device view freezes it."""

    choice: ModelChoice
    seed: int = 0
    trainable: str | None = None

    def __call__(self) -> nn.Module:
        return self.build()[0]

    def build(self) -> tuple[nn.Module, tuple[type[nn.Module], ...]]:
        """The model and the block classes its target names (empty when they are still to be found)."""
        import re

        from resnet_trace.target import build

        target = build(self.choice, device=Device.CPU, init_seed=self.seed)
        if self.trainable is not None:
            rx = re.compile(self.trainable)
            for name, p in target.model.named_parameters():
                p.requires_grad_(bool(rx.search(name)))
        return target.model, target.block_types


@dataclass(frozen=True)
class Step:
    """One sharded step to run: the model (``build``: a picklable callable returning the module, or a
    :class:`ModelBuild`), its input (a ``Feed``, a tensor, or a tuple of positional tensors), the
    engine, the optimizer and the block classes by name (``()``: the ones ``ModelBuild`` names)."""

    build: Callable[[], Any]
    feed: Any
    shard: Shard | str
    optimizer: Optimizer | str = Optimizer.ADAM
    blocks: tuple[str, ...] = field(default=())
    seed: int = 0  # torch.manual_seed before a plain callable builds


@dataclass(frozen=True, slots=True)
class MeasuredRank:
    """What one rank held after its real step, in bytes.

    ``params_bytes``: the local parameters (``to_local()`` of a DTensor), frozen ones included;
    ``grads_bytes``: the local ``.grad`` tensors; ``optimizer_bytes``: the optimizer's state tensors
    but the scalar ``step``. ``params_storage_bytes``/``grads_storage_bytes``: the distinct storages
    behind them (FSDP's padded chunks and flat reduce-scatter outputs; DDP's gradient buckets).
    ``peak_bytes``: the rank's memory at the peak of the measured step, above its level before the
    model was built: on CUDA ``max_memory_allocated``, on the CPU the resident high-water mark
    (VmHWM; ``None`` where it cannot be read). ``grads``: how many parameters got a gradient.
    """

    rank: int
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    params_storage_bytes: int
    grads_storage_bytes: int
    grads: int
    peak_bytes: int | None
    peak_source: str
    loss: float
    seconds: float


def main(argv: list[str]) -> None:
    """The rank's whole life: ``FOLDER RANK WORLD DEVICE TIMEOUT_S``; ends the process."""
    folder, rank, world, device, timeout_s = (
        Path(argv[0]),
        int(argv[1]),
        int(argv[2]),
        argv[3],
        float(argv[4]),
    )
    try:
        results = _rank(folder, rank, world, device, timeout_s)
    except BaseException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        (folder / f"rank{rank}.err").write_text(
            f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        )
        sys.stdout.flush()
        os._exit(1)  # do not wait on peers or a process group that may be stuck
    tmp = folder / f"rank{rank}.out.tmp"
    tmp.write_bytes(pickle.dumps(results))
    tmp.replace(folder / f"rank{rank}.out")
    sys.stdout.flush()
    os._exit(0)  # a process group's teardown can hang on a peer that already left


def _rank(folder: Path, rank: int, world: int, device: str, timeout_s: float) -> list[MeasuredRank]:
    import faulthandler
    import gc
    import time
    from datetime import timedelta

    started = time.monotonic()
    import torch
    import torch.distributed as dist

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    # what the engines import on first use (DDP pulls in torch._dynamo), loaded before any level is read
    import torch.distributed.fsdp
    import torch.distributed.optim
    import torch.nn.parallel

    with contextlib.suppress(ImportError):
        import torch._dynamo  # noqa: F401
    steps: list[Step] = pickle.loads((folder / "steps.pkl").read_bytes())
    gc.collect()
    gc.freeze()  # later collections scan only what the steps make
    # A hung rank leaves its stacks in its log 3 s before the parent ends it. Armed after the
    # imports: the dump reads every thread's frames without the GIL, and one taken while this
    # thread still ran Python (importing torch) could crash the rank; a hang waits in C.
    left = timeout_s - (time.monotonic() - started)
    faulthandler.dump_traceback_later(max(1.0, left - 3.0), exit=False)
    store = _store(folder, rank, world, timeout_s)
    if device == Device.CUDA:
        torch.cuda.set_device(rank)
    dist.init_process_group(
        "nccl" if device == Device.CUDA else "gloo",
        store=store,
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=timeout_s),
    )
    where = torch.device(device, rank) if device == Device.CUDA else torch.device("cpu")
    return [_one_step(s, rank, world, where) for s in steps]


def _store(folder: Path, rank: int, world: int, timeout_s: float) -> Any:
    """The ranks' rendezvous on loopback: rank 0 serves it on a free port and writes the port down
    (no port is guessed, none raced for); the others read it and connect."""
    from datetime import timedelta

    import torch.distributed as dist

    wait = timedelta(seconds=timeout_s)
    found = folder / "port"
    if rank == 0:
        store = dist.TCPStore("127.0.0.1", 0, world, True, wait, wait_for_workers=False)
        (folder / "port.tmp").write_text(str(store.port))
        (folder / "port.tmp").replace(found)
        return store
    deadline = time.monotonic() + timeout_s
    while not found.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("rank 0 never opened the rendezvous")
        time.sleep(0.02)
    return dist.TCPStore("127.0.0.1", int(found.read_text()), world, False, wait)


def _one_step(step: Step, rank: int, world: int, where: Any) -> MeasuredRank:
    """Build, wrap, two training steps, the second measured; every rank done before the next step."""
    import gc

    import torch
    import torch.distributed as dist

    from resnet_trace.peak import PeakMeter

    meter = PeakMeter(where)  # the level before the model exists
    model, block_types, feed = _build(step, where)
    runner, optim, state_of = _wrap(
        model, block_types, Shard(step.shard), Optimizer(step.optimizer), world, where
    )
    # The first step allocates the optimizer's state and wakes the engines' lazy set-up; the second,
    # measured, is the steady one (the state held through it, as the prediction has it).
    _train_step(runner, optim, feed)
    optim.zero_grad(set_to_none=True)
    gc.collect()
    meter.reset()
    start = time.perf_counter()
    loss = _train_step(runner, optim, feed)
    seconds = time.perf_counter() - start
    peak = meter.peak()
    params = list(model.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    states = [
        v
        for s in state_of.state.values()
        for k, v in s.items()
        if k != "step" and isinstance(v, torch.Tensor)
    ]
    measured = MeasuredRank(
        rank=rank,
        params_bytes=sum(_local_bytes(p) for p in params),
        grads_bytes=sum(_local_bytes(g) for g in grads),
        optimizer_bytes=sum(_local_bytes(v) for v in states),
        params_storage_bytes=_storage_bytes(params),
        grads_storage_bytes=_storage_bytes(grads),
        grads=len(grads),
        peak_bytes=peak,
        peak_source=meter.source,
        loss=loss,
        seconds=seconds,
    )
    dist.barrier()  # every rank done with this model before the next step's collectives
    return measured


def _build(step: Step, where: Any) -> tuple[Any, tuple[type, ...], Feed]:
    """The step's model on ``where`` in training mode, its block classes, and its input there."""
    import torch
    from torch import nn

    from resnet_trace.feed import Feed
    from resnet_trace.target import resolve_blocks

    if isinstance(step.build, ModelBuild):
        model, block_types = step.build.build()
    else:
        torch.manual_seed(step.seed)
        model, block_types = step.build(), ()
    if not isinstance(model, nn.Module):
        raise TypeError(f"the build returned a {type(model).__name__}, not a torch.nn.Module")
    if step.blocks:
        block_types = resolve_blocks(model, list(step.blocks))[0]
    model = model.to(where).train()
    feed = step.feed
    if not isinstance(feed, Feed):
        feed = Feed((feed,) if isinstance(feed, torch.Tensor) else tuple(feed))
    return model, tuple(block_types), feed.to(str(where))


def _wrap(
    model: Any, block_types: tuple[type, ...], shard: Shard, word: Optimizer, world: int, where: Any
) -> tuple[Any, Any, Any]:
    """The module to call, the optimizer to step, and the optimizer that holds the state."""
    import torch

    cls = {
        Optimizer.SGD: torch.optim.SGD,
        Optimizer.MOMENTUM: torch.optim.SGD,
        Optimizer.ADAM: torch.optim.Adam,
        Optimizer.ADAMW: torch.optim.AdamW,
    }[word]
    kwargs: dict[str, Any] = {"lr": 1e-3}
    if word is Optimizer.MOMENTUM:
        kwargs["momentum"] = 0.9
    if shard.fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        from resnet_trace.sharding import block_units

        mesh = init_device_mesh(where.type, (world,))
        again = shard is Shard.FULL
        for unit in block_units(model, block_types):
            fully_shard(unit, mesh=mesh, reshard_after_forward=again)
        fully_shard(model, mesh=mesh, reshard_after_forward=again)
        optim = cls(model.parameters(), **kwargs)
        return model, optim, optim
    from torch.nn.parallel import DistributedDataParallel

    runner = DistributedDataParallel(
        model,
        device_ids=[where.index] if where.type == "cuda" else None,
        gradient_as_bucket_view=True,
        find_unused_parameters=True,  # the seed's dim_equalizers never run
    )
    if shard is Shard.OPTIMIZER:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        zero = ZeroRedundancyOptimizer(list(model.parameters()), optimizer_class=cls, **kwargs)
        return runner, zero, zero.optim
    optim = cls(model.parameters(), **kwargs)
    return runner, optim, optim


def _train_step(runner: Any, optim: Any, feed: Feed) -> float:
    """Forward, cross-entropy of each sample's flattened output against class 0, backward, step."""
    import torch
    from torch import nn

    from resnet_trace.training import loss_logits

    logits = loss_logits(feed.call(runner))
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    loss = nn.functional.cross_entropy(logits.reshape(logits.shape[0], -1).float(), labels)
    loss.backward()
    optim.step()
    return float(loss.detach())


def _local(t: Any) -> Any:
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def _local_bytes(t: Any) -> int:
    local = _local(t)
    return int(local.numel()) * int(local.element_size())


def _storage_bytes(tensors: Sequence[Any]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (by data pointer; empty ones ignored)."""
    seen: dict[int, int] = {}
    for t in tensors:
        s = _local(t).untyped_storage()
        if s.nbytes() and s.data_ptr() not in seen:
            seen[s.data_ptr()] = int(s.nbytes())
    return sum(seen.values())
