"""The real sharded training step, from the parent's side: start ``world`` ranks, wait, collect.

:func:`run_sharded_step` starts ``world`` Python processes on this machine (gloo over loopback on
the CPU, NCCL on CUDA, one GPU per rank), each running :func:`resnet_trace.rankstep.main`: it
builds the same model under the same seed, wraps it as :class:`~resnet_trace.sharding.Shard`
says, runs a training step (forward, a cross-entropy backward, ``optimizer.step()``) twice, and
reports its local bytes after the second and the second's peak (:class:`MeasuredRank`): the
first allocates the optimizer's state and wakes the engines' lazy set-up, so the second is the
steady step the prediction describes. A rank that fails or hangs ends them all within
``timeout_s`` and raises :class:`ShardedStepFailed` (one line).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from resnet_trace.errors import ExitCode, TraceToolError
from resnet_trace.rankstep import MeasuredRank, ModelBuild, Step
from resnet_trace.records import Device, Optimizer
from resnet_trace.sharding import Shard

__all__ = ["MeasuredRank", "ModelBuild", "ShardedStepFailed", "Step", "run_sharded_step", "run_sharded_steps"]


class ShardedStepFailed(TraceToolError):
    """A rank of the sharded step failed, hung or could not start (the CLI ends with exit 3)."""

    exit_code = ExitCode.MODEL_REJECTED


def run_sharded_step(
    build: Callable[[], Any],
    feed: Any,
    world: int,
    shard: Shard | str,
    optimizer: Optimizer | str = Optimizer.ADAM,
    *,
    blocks: Sequence[str] = (),
    device: str = Device.CPU,
    timeout_s: float = 120.0,
    seed: int = 0,
) -> list[MeasuredRank]:
    """One real training step sharded over ``world`` local processes; per rank what it held.

    ``build`` must be picklable (a top-level function, a ``functools.partial`` of one, or a
    :class:`ModelBuild`); ``blocks`` names the block classes (each block module is one
    ``fully_shard`` unit). Raises :class:`ShardedStepFailed` when a rank fails or the step takes
    longer than ``timeout_s`` seconds (every rank is ended first).
    """
    step = Step(build, feed, shard, optimizer, tuple(blocks), seed)
    return run_sharded_steps([step], world=world, device=device, timeout_s=timeout_s)[0]


def run_sharded_steps(
    steps: Sequence[Step], *, world: int, device: str = Device.CPU, timeout_s: float = 120.0
) -> list[list[MeasuredRank]]:
    """Several steps, one after the other, in the same ``world`` processes (one start for them all)."""
    import torch.distributed as dist

    if world < 1:
        raise ShardedStepFailed(f"the number of devices must be at least 1, not {world}")
    if not dist.is_available():
        raise ShardedStepFailed("this PyTorch build has no torch.distributed")
    device = str(Device(device))
    if device == Device.CUDA:
        import torch

        if torch.cuda.device_count() < world:
            raise ShardedStepFailed(
                f"--gpus {world} needs {world} CUDA devices; this machine has {torch.cuda.device_count()}"
            )
    elif device != Device.CPU:
        raise ShardedStepFailed(f"a sharded step runs on cpu or cuda, not {device}")
    steps = [
        Step(s.build, s.feed, Shard(s.shard), Optimizer(s.optimizer), tuple(s.blocks), s.seed) for s in steps
    ]
    try:
        payload = pickle.dumps(steps)
    except Exception as exc:  # a lambda, a local function, an open file...
        raise ShardedStepFailed(f"the model's build cannot be sent to the ranks: {exc}") from None
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryDirectory(prefix="resnet-trace-ranks-") as tmp:
        folder = Path(tmp)
        (folder / "steps.pkl").write_bytes(payload)
        env = _child_env(world)
        procs: list[subprocess.Popen[bytes]] = []
        with contextlib.ExitStack() as logs:
            try:
                for rank in range(world):
                    log = logs.enter_context(open(folder / f"rank{rank}.log", "wb"))
                    args = [str(folder), str(rank), str(world), device, repr(timeout_s)]
                    rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, "-c", _CHILD, *args],
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            env=rank_env,
                            start_new_session=True,  # its own process group, ended as one
                        )
                    )
                _wait(procs, folder, deadline, timeout_s)
            finally:
                for p in procs:
                    _end(p)
        out: list[list[MeasuredRank]] = [[] for _ in steps]
        for rank in range(world):
            results = pickle.loads((folder / f"rank{rank}.out").read_bytes())
            for i, m in enumerate(results):
                out[i].append(m)
        return out


# The child's whole program (its sys.path is the parent's, through PYTHONPATH).
_CHILD = "import sys; from resnet_trace.rankstep import main; main(sys.argv[1:])"


def _child_env(world: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # a build from the caller's path
    env["MASTER_ADDR"] = "127.0.0.1"
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
        env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    elif sys.platform == "darwin":
        env.setdefault("GLOO_SOCKET_IFNAME", "lo0")
    threads = max(1, (os.cpu_count() or 1) // world)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _wait(procs: list[subprocess.Popen[bytes]], folder: Path, deadline: float, timeout_s: float) -> None:
    """Until every rank has ended well; the first failure (or the deadline) raises, naming the rank."""
    world = len(procs)
    while True:
        codes = [p.poll() for p in procs]
        failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            first = min(failed, key=lambda r: _failed_at(folder, r))
            why = _why(folder, first, procs[first].returncode)
            raise ShardedStepFailed(f"rank {first} of {world} failed in the sharded step: {why}")
        if all(c == 0 for c in codes):
            missing = [r for r in range(world) if not (folder / f"rank{r}.out").exists()]
            if missing:
                raise ShardedStepFailed(f"rank {missing[0]} of {world} ended without a result")
            return
        if time.monotonic() > deadline:
            waiting = [str(r) for r, c in enumerate(codes) if c is None]
            which = f"rank{'s' if len(waiting) > 1 else ''} {', '.join(waiting)} of {world}"
            raise ShardedStepFailed(
                f"the sharded step did not finish within {timeout_s:g} s ({which} still running; ended)"
            )
        time.sleep(0.05)


def _failed_at(folder: Path, rank: int) -> float:
    """When a rank failed, to name the first of those seen together (its peers fail after it, on
    the broken connection): a rank that wrote no error (a crash, a signal) first, then by the time
    its error was written."""
    err = folder / f"rank{rank}.err"
    return err.stat().st_mtime_ns if err.exists() else -1.0


def _why(folder: Path, rank: int, code: int) -> str:
    err = folder / f"rank{rank}.err"
    if err.exists():
        return err.read_text(errors="replace").strip().splitlines()[0][:500]
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"ended by {signal.Signals(-code).name}"
    log = (folder / f"rank{rank}.log").read_text(errors="replace").strip().splitlines()
    return log[-1][:500] if log else f"exit status {code}"


def _end(p: subprocess.Popen[bytes]) -> None:
    """End a rank we started, and its process group, if it still runs."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            p.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=10)
