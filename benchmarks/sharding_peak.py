"""Where a sharded step's CPU peak comes from: the allocator's live bytes beside the resident set.

For each ``--shard`` mode, ``world`` fresh gloo ranks (``torch.multiprocessing``, independent of
``resnet_trace.distributed``) build GPT-2 small (or a smaller config), wrap it as the tool does and
run two Adam steps. PyTorch's profiler (``profile_memory=True``) records every CPU allocation and
free of c10's allocator from before the model is built; their running sum is the allocator's live
bytes, and its maximum during the second step is the allocator-level peak. Beside it: the resident
high-water mark (VmHWM after ``clear_refs``) of a run without the profiler, as the tool measures it,
and ``rank_bytes``' prediction. At the allocator peak the innermost running operation is named.

    python benchmarks/sharding_peak.py --world 4 --activations 171076608 --transient 205852672
    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/sharding_peak.py ... --no-profile

(``--activations``/``--transient``: ``summary --train``'s figures for the same model and tokens.)
The profiler records the allocations of the thread that runs the step only, not gloo's threads'.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.fsdp  # noqa: F401  (imported before any level is read)
import torch.distributed.optim  # noqa: F401
import torch.multiprocessing as mp

MIB = 2**20


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(field)


def _trim() -> None:
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def _config(layers: int):  # noqa: ANN202
    import transformers

    return transformers.GPT2Config(n_layer=layers)


def _wrap(model, shard: str, world: int):  # noqa: ANN001, ANN202
    import transformers

    if shard in ("gradients", "full"):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        again = shard == "full"
        for m in model.modules():
            if isinstance(m, transformers.models.gpt2.modeling_gpt2.GPT2Block):
                fully_shard(m, mesh=mesh, reshard_after_forward=again)
        fully_shard(model, mesh=mesh, reshard_after_forward=again)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)
    if shard == "single":
        return model, torch.optim.Adam(model.parameters(), lr=1e-3)
    from torch.nn.parallel import DistributedDataParallel

    runner = DistributedDataParallel(model, gradient_as_bucket_view=True, find_unused_parameters=True)
    if shard == "optimizer":
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return runner, ZeroRedundancyOptimizer(
            list(model.parameters()), optimizer_class=torch.optim.Adam, lr=1e-3
        )
    return runner, torch.optim.Adam(model.parameters(), lr=1e-3)


def _step(runner, optim, ids) -> None:  # noqa: ANN001
    logits = runner(ids).logits
    labels = torch.zeros(logits.shape[0], dtype=torch.long)
    loss = torch.nn.functional.cross_entropy(logits.reshape(logits.shape[0], -1).float(), labels)
    loss.backward()
    optim.step()


def _rank(rank: int, world: int, shard: str, layers: int, tokens: int, folder: str, profiled: bool) -> None:
    import transformers
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)

    if shard != "single":
        store = dist.FileStore(os.path.join(folder, "store"), world)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    ids = torch.randint(0, 50257, (1, tokens), generator=torch.Generator().manual_seed(0))
    gc.collect()
    _trim()
    base = _status("VmRSS")
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True) if profiled else None
    if prof:
        prof.__enter__()
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(_config(layers)).train()
    runner, optim = _wrap(model, shard, world)
    _step(runner, optim, ids)
    optim.zero_grad(set_to_none=True)
    gc.collect()
    _trim()
    Path("/proc/self/clear_refs").write_text("5")
    if prof:
        with torch.profiler.record_function("STEP2"):
            _step(runner, optim, ids)
    else:
        _step(runner, optim, ids)
    out = {"rss_peak": _status("VmHWM") - base}
    if prof:
        prof.__exit__(None, None, None)
        evs = prof.profiler.kineto_results.events()
        mems = sorted(
            ((e.start_ns(), e.nbytes()) for e in evs if e.name() == "[memory]" and int(e.device_type()) == 0),
        )
        step2 = [e for e in evs if e.name() == "STEP2"]
        t0, t1 = step2[0].start_ns(), step2[0].end_ns()
        live = peak = 0
        at = t0
        level = None
        for t, n in mems:
            if t >= t0 and level is None:
                level = live
                peak = live
            live += n
            if t0 <= t <= t1 and live > peak:
                peak, at = live, t
        ops = [
            e
            for e in evs
            if e.name() != "[memory]" and e.start_ns() <= at <= e.end_ns() and e.name() != "STEP2"
        ]
        ops.sort(key=lambda e: e.end_ns() - e.start_ns())
        out.update(alloc_peak=peak, alloc_level=level, where=[e.name() for e in ops[:6]])
    Path(folder, f"rank{rank}.json").write_text(json.dumps(out))
    if shard != "single":
        dist.barrier()
        dist.destroy_process_group()


def predicted(world: int, shard: str, layers: int, act: int, trans: int) -> int:
    import transformers

    from resnet_trace.sharding import block_units, rank_bytes, trainable_ids

    with torch.device("meta"):
        meta = transformers.GPT2LMHeadModel(_config(layers))
    if shard == "single":
        p = sum(q.numel() * 4 for q in meta.parameters())
        return 4 * p + act + trans
    blocks = [transformers.models.gpt2.modeling_gpt2.GPT2Block]
    r = rank_bytes(meta, block_units(meta, blocks), world, shard, 2, trainable_ids(meta), backend="gloo")
    return max(x.peak_bytes(act, trans) for x in r)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--shards", nargs="*", default=["single", "none", "optimizer", "gradients", "full"])
    ap.add_argument("--activations", type=int, required=True, help="summary --train's activations_bytes")
    ap.add_argument("--transient", type=int, required=True, help="summary --train's transient_bytes")
    ap.add_argument("--no-rss", action="store_true", help="only the profiled run")
    ap.add_argument("--no-profile", action="store_true", help="only the resident high-water mark")
    a = ap.parse_args()
    for shard in a.shards:
        world = 1 if shard == "single" else a.world
        row = {
            "shard": shard,
            "predicted_mib": round(predicted(world, shard, a.layers, a.activations, a.transient) / MIB, 1),
        }
        for profiled in [x for x in (True, False) if (x and not a.no_profile) or (not x and not a.no_rss)]:
            with tempfile.TemporaryDirectory() as folder:
                mp.spawn(_rank, (world, shard, a.layers, a.tokens, folder, profiled), nprocs=world)
                ranks = [json.loads(Path(folder, f"rank{r}.json").read_text()) for r in range(world)]
            if profiled:
                row["alloc_peak_mib"] = [round(r["alloc_peak"] / MIB, 1) for r in ranks]
                row["where"] = ranks[0]["where"]
            else:
                row["rss_peak_mib"] = [round(r["rss_peak"] / MIB, 1) for r in ranks]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
