"""Per-rank bytes under DDP, ZeRO-1 and FSDP2: ``sharding.rank_bytes`` against the engines themselves.

The truth is PyTorch: ``distributed.run_sharded_steps`` starts real gloo ranks on this machine, wraps
the model in DistributedDataParallel, ZeroRedundancyOptimizer or ``fully_shard``, runs a step and reads
every rank's local parameters, gradients and Adam state. The prediction is computed on a copy of the
model built on ``meta``. Two starts (2 and 4 ranks) carry every distributed check of the file.
"""

from __future__ import annotations

import time

import pytest
import torch
from sharding_builds import fails_on_rank_1, frozen_seed, gpt2_model, hangs_on_rank_1, seed_model
from torch import nn

from resnet_trace.choice import ModelChoice
from resnet_trace.distributed import ModelBuild, ShardedStepFailed, Step, run_sharded_step, run_sharded_steps
from resnet_trace.model import BottleNeck, ResNet
from resnet_trace.sharding import (
    RankBytes,
    Shard,
    block_units,
    fsdp_local_rows,
    rank_bytes,
    trainable_ids,
    zero_partition,
)

transformers = pytest.importorskip("transformers")

pytestmark = [
    pytest.mark.skipif(
        not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
        reason="needs torch.distributed with gloo",
    ),
    # one worker under pytest-xdist: the module's two starts run once, and no other file's ranks
    # share the cores with them
    pytest.mark.xdist_group("ranks"),
]

SHARDS = tuple(Shard)
ADAM = 2  # exp_avg and exp_avg_sq


# --- the models, built the same way in every rank and on meta ------------------------------------
# (the builds live in tests/sharding_builds.py: a rank imports the module of the build it unpickles)


def seed_unread(model: nn.Module) -> list[str]:
    """The seed's never-run modules, from its structure: every down block's ``dim_equalizer``."""
    return [
        f"{name}.dim_equalizer.{k}"
        for name, block in model.named_modules()
        if isinstance(block, BottleNeck) and block.down
        for k in ("weight", "bias")
    ]


MODELS = {
    # name: (build, input, block class, the unread parameter names of a built model)
    "seed": (seed_model, torch.randn(1, 3, 32, 32), BottleNeck, seed_unread),
    "gpt2": (
        gpt2_model,
        torch.randint(0, 503, (2, 16)),
        transformers.models.gpt2.modeling_gpt2.GPT2Block,
        None,
    ),
    "frozen": (frozen_seed, torch.randn(1, 3, 32, 32), BottleNeck, seed_unread),
}


def predicted(name: str, world: int, shard: Shard) -> list[RankBytes]:
    build, _, block, unread = MODELS[name]
    with torch.device("meta"):
        meta = build()
    assert all(p.is_meta for p in meta.parameters())
    trainable = trainable_ids(meta, unread(meta) if unread else ())
    return rank_bytes(meta, block_units(meta, [block]), world, shard, ADAM, trainable)


def _run(world: int, names: tuple[str, ...], extra: dict[str, Step]) -> dict[tuple[str, Shard] | str, list]:
    steps = [
        Step(MODELS[n][0], MODELS[n][1], s, "adam", blocks=(MODELS[n][2].__name__,))
        for n in names
        for s in SHARDS
    ]
    keys: list[tuple[str, Shard] | str] = [(n, s) for n in names for s in SHARDS]
    results = run_sharded_steps([*steps, *extra.values()], world=world, timeout_s=240)
    return dict(zip([*keys, *extra], results))


# the pipeline's own recipe: the seed's options, and --trainable's regular expression
CHOICE = ModelChoice(base_dim=4, num_classes=3, head="adaptive")
CHOICE_TRAINABLE = r"^layer_[45]|fc_layer\.weight"


@pytest.fixture(scope="module")
def measured() -> dict[int, dict]:
    """Every distributed check of the file, from two starts: 2 ranks and 4 ranks."""
    choice = Step(ModelBuild(CHOICE, trainable=CHOICE_TRAINABLE), MODELS["seed"][1], "optimizer", "momentum")
    names = ("seed", "gpt2", "frozen")
    return {2: _run(2, names, {"choice": choice}), 4: _run(4, FOUR_RANKS, {})}


# --- the engines against the arithmetic -----------------------------------------------------------


#: At 4 ranks one model: the seed, whose odd sizes give FSDP2 padding on every rank (the cost of
#: a start is 4 processes on this machine's 2 cores).
FOUR_RANKS = ("seed",)


@pytest.mark.parametrize(
    ("world", "name"), [(2, "seed"), (2, "gpt2"), (2, "frozen"), *((4, n) for n in FOUR_RANKS)]
)
@pytest.mark.parametrize("shard", SHARDS, ids=str)
def test_rank_bytes_equal_the_engine(measured, world, name, shard):
    got = measured[world][(name, shard)]
    want = predicted(name, world, shard)
    model = MODELS[name][0]()
    assert [m.rank for m in got] == list(range(world))
    for m, p in zip(got, want):
        assert (m.params_bytes, m.grads_bytes, m.optimizer_bytes) == (
            p.params_bytes,
            p.grads_bytes,
            p.optimizer_bytes,
        ), (name, world, shard, m.rank)
        if shard.fsdp:
            # every local chunk is allocated at the first chunk's size (params; flat gradients)
            assert m.params_storage_bytes + m.grads_storage_bytes == (
                p.params_bytes + p.grads_bytes + p.padding_bytes
            )
        else:
            # gradients are views into DDP's buckets, which keep a slot for every required parameter
            assert m.params_storage_bytes == p.params_bytes
            assert m.grads_storage_bytes == sum(q.numel() * 4 for q in model.parameters() if q.requires_grad)
        # resident memory is no measure at these sizes (freed heap is reused); docs/training.md
        # compares peaks on GPT-2 small
        assert m.peak_bytes is None or m.peak_bytes >= 0
    # the ranks together hold one model's worth of shards (DDP: one replica each)
    total = sum(m.params_bytes for m in got)
    one = sum(q.numel() * q.element_size() for q in model.parameters())
    assert total == (one if shard.fsdp else world * one)


def test_frozen_parameters_get_no_grad_and_no_state(measured):
    build, _, block, unread = MODELS["frozen"]
    model = build()
    trainable = trainable_ids(model, unread(model))
    frozen = sum(p.numel() * 4 for p in model.parameters() if not p.requires_grad)
    assert frozen > 0
    for shard in SHARDS:
        assert {m.grads for m in measured[2][("frozen", shard)]} == {len(trainable)}, shard
    ddp = measured[2][("frozen", Shard.NONE)][0]
    assert ddp.grads_bytes == sum(p.numel() * 4 for p in model.parameters() if id(p) in trainable)
    assert ddp.optimizer_bytes == 2 * ddp.grads_bytes
    seed_ddp = measured[2][("seed", Shard.NONE)][0]
    assert seed_ddp.grads_bytes - ddp.grads_bytes == frozen  # no frozen one is unread


def test_every_mode_trains_the_same_step(measured):
    for world, name in ((2, "seed"), (2, "gpt2"), *((4, n) for n in FOUR_RANKS)):
        losses = {round(m.loss, 4) for s in SHARDS for m in measured[world][(name, s)]}
        assert len(losses) == 1, (world, name, losses)


# --- the arithmetic on its own (no ranks) ---------------------------------------------------------


def test_dim0_chunks_follow_torch_chunk():
    with torch.device("meta"):
        p = nn.Parameter(torch.empty(5, 3))
    # ceil(5 / 4) = 2 rows per chunk: 2, 2, 1 and an empty last rank
    assert [fsdp_local_rows(p, 4, r) for r in range(4)] == [2, 2, 1, 0]
    assert [fsdp_local_rows(p, 2, r) for r in range(2)] == [3, 2]
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(3, 5))
    got = rank_bytes(model, [], 4, Shard.FULL, 1)
    # weight 5x3, bias 5: rows 2,2,1,0 of 12 and 4 bytes; padded to 2 rows on every rank
    assert [r.params_bytes for r in got] == [32, 32, 16, 0]
    assert [r.grads_bytes for r in got] == [32, 32, 16, 0]
    assert [r.optimizer_bytes for r in got] == [32, 32, 16, 0]
    assert [r.padding_bytes for r in got] == [0, 0, 2 * 16, 2 * 32]


def test_zero_partition_is_greedy_largest_first():
    with torch.device("meta"):
        sizes = [3, 10, 4, 10, 1, 6]
        params = [nn.Parameter(torch.empty(n)) for n in sizes]
    # sorted: 10 (idx 1), 10 (idx 3), 6, 4, 3, 1; each to the least-loaded rank, lowest on a tie
    # 2 ranks: 10->r0, 10->r1, 6->r0 (16), 4->r1 (14), 3->r1 (17), 1->r0 (17)
    assert zero_partition(params, 2) == [1, 0, 1, 1, 0, 0]
    # 3 ranks: 10->r0, 10->r1, 6->r2, 4->r2 (10,10,10), 3->r0 (13), 1->r1 (11)
    assert zero_partition(params, 3) == [0, 0, 2, 1, 1, 2]


def test_trainable_needs_grad_and_a_read():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].bias.requires_grad_(False)
    ids = trainable_ids(model, ["1.weight"])
    assert ids == {id(model[0].weight), id(model[1].bias)}
    got = rank_bytes(model, [], 2, Shard.NONE, 2, ids)[0]
    assert (got.params_bytes, got.grads_bytes, got.optimizer_bytes) == (48, 24, 48)
    # the unread one keeps its bucket slot (16), the frozen one has none; the largest gradient (16)
    # lives beside its slot until it is copied in
    assert got.reduce_bytes == 16 + 16


def test_block_units_are_outermost_blocks():
    with torch.device("meta"):
        model = ResNet(4, 3)
    units = block_units(model, [BottleNeck])
    assert len(units) == 16 and all(isinstance(u, BottleNeck) for u in units)
    assert block_units(model, [nn.Sequential, BottleNeck])[0] is model.layer_1


def test_gloo_stages_a_copy_of_the_largest_unit():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    units = [model[0]]  # 8x4 + 8 = 160 bytes; the root holds 8x2 + 2 = 72
    nccl = rank_bytes(model, units, 2, Shard.GRADIENTS, 2)[0]
    gloo = rank_bytes(model, units, 2, Shard.GRADIENTS, 2, backend="gloo")[0]
    assert (nccl.gathered_bytes, nccl.reduce_bytes) == (160 + 72, 2 * 160)
    assert (gloo.gathered_bytes, gloo.reduce_bytes) == (160 + 72 + 160, 3 * 160)
    assert gloo.held_bytes == nccl.held_bytes
    full = rank_bytes(model, units, 2, Shard.FULL, 2)[0]
    assert full.gathered_bytes == 72 + 160  # the root, kept after forward, and the one block


def test_scalar_parameters_cannot_be_fully_sharded():
    from resnet_trace.errors import UsageError

    model = nn.Module()
    with torch.device("meta"):
        model.scale = nn.Parameter(torch.empty(()))
    assert rank_bytes(model, [], 2, Shard.NONE, 2)[0].params_bytes == 4
    with pytest.raises(UsageError, match="0-d"):
        rank_bytes(model, [], 2, Shard.FULL, 2)


# --- failures end every rank ----------------------------------------------------------------------


def test_a_failing_rank_ends_the_others_with_one_line():
    start = time.monotonic()
    with pytest.raises(ShardedStepFailed) as err:
        run_sharded_step(fails_on_rank_1, torch.randn(1, 2), 2, Shard.FULL, timeout_s=60)
    assert str(err.value) == "rank 1 of 2 failed in the sharded step: RuntimeError: rank one cannot build"
    assert err.value.exit_code == 3
    assert time.monotonic() - start < 30


def test_a_hung_rank_is_ended_at_the_timeout():
    # Each rank arms faulthandler to dump its stacks 3 s before the timeout (1 s at the least). At a
    # 3 s timeout that dump came while the rank was still importing torch, and a dump taken while
    # the main thread runs Python can crash the rank (SIGSEGV, 2-3 runs in 25 with the cores busy).
    # At 10 s it comes once both ranks wait: rank 0 on rank 1 in DDP's broadcast, rank 1 asleep.
    timeout = 10
    start = time.monotonic()
    with pytest.raises(ShardedStepFailed, match=f"did not finish within {timeout} s"):
        run_sharded_step(hangs_on_rank_1, torch.randn(1, 2), 2, Shard.NONE, timeout_s=timeout)
    assert time.monotonic() - start < timeout + 12


def test_a_build_that_cannot_be_sent_is_refused_before_any_start():
    with pytest.raises(ShardedStepFailed, match="cannot be sent"):
        run_sharded_step(lambda: nn.Linear(2, 2), torch.randn(1, 2), 2, Shard.NONE)


def test_a_model_choice_builds_in_every_rank(measured):
    """``ModelBuild``: the seed's options and ``--trainable``; SGD with momentum under ZeRO-1."""
    import re

    with torch.device("meta"):
        meta = ResNet(4, 3)
    for name, p in meta.named_parameters():
        p.requires_grad_(bool(re.search(CHOICE_TRAINABLE, name)))
    trainable = trainable_ids(meta, seed_unread(meta))
    assert 0 < len(trainable) < len(list(meta.parameters()))
    want = rank_bytes(meta, block_units(meta, [BottleNeck]), 2, Shard.OPTIMIZER, 1, trainable)
    got = measured[2]["choice"]
    assert [(m.params_bytes, m.grads_bytes, m.optimizer_bytes) for m in got] == [
        (w.params_bytes, w.grads_bytes, w.optimizer_bytes) for w in want
    ]
    assert {m.grads for m in got} == {len(trainable)}
    assert got[0].optimizer_bytes != got[1].optimizer_bytes  # each rank its own partition
