"""A user's model traced without --block runs one forward: the blocks are found in it, and the rows
of the blocks found come from a replay of its events, not from a second forward (issue 21).

The truths: the document of the same trace with the found blocks passed as --block, and the
output of the two-forward route (blocks found, then a second forward recorded)."""

from __future__ import annotations

import json

import pytest

import resnet_trace.pipeline as pipeline
from resnet_trace.prepare import with_blocks

NETS = """
import os

import torch
from torch import nn

LOG = {log!r}


def counted(forward):
    def run(self, *args, **kwargs):
        with open(LOG, "a") as f:
            f.write("x")
        return forward(self, *args, **kwargs)

    return run


class Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class Dense(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, 4, 3, padding=1)

    def forward(self, x):
        return torch.cat([x, self.conv(x)], 1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stage = nn.Sequential(Res(8), Res(8))
        self.dense = nn.Sequential(Dense(8), Dense(12))
        self.down = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.fuse = Res(32)
        self.head = nn.Linear(32, 5)

    @counted
    def forward(self, x):
        a = self.stem(x)
        b = self.dense(self.stage(a))
        c = self.up(self.down(b))
        d = self.fuse(torch.cat([c, b], 1))  # a concatenation outside every block, into one
        return self.head(d.mean(dim=(2, 3))) * 2 + self.head.bias


class Attn(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x):
        q, k, v = self.qkv(self.ln(x)).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        return x + self.out(a)


class Layer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attn = Attn(d)
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        x = self.attn(x)
        return x + self.mlp(x)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.layers = nn.ModuleList([Layer(16) for _ in range(3)])
        self.norm = nn.LayerNorm(16)

    @counted
    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x) @ self.embed.weight.t()


class Turn(nn.Module):
    def forward(self, x):
        y = x.clone()
        y.unsqueeze_(0)  # in place: the same tensor takes a new shape (a review found the replay
        y.squeeze_(0)  # kept the first one, and lost the next block's skip)
        y.transpose_(2, 3)
        return y


class Turned(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = Res(8)
        self.turn = Turn()
        self.b2 = Res(8)

    @counted
    def forward(self, x):
        return self.b2(self.turn(self.b1(self.stem(x))))


class Table(nn.Module):
    def forward(self, x):
        if not hasattr(self, "table"):  # made on the first call only, then reused: a cache
            n = x.shape[-1]
            self.register_buffer("table", torch.arange(n, dtype=x.dtype)[:, None] @ torch.ones(1, n), persistent=False)
        return x @ self.table


class Cached(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = Table()
        self.b1 = Res(3)
        self.b2 = Res(3)

    @counted
    def forward(self, x):
        return self.b2(self.b1(self.table(x)))
"""

CASES = [
    ("Net", "Res,Dense", ["-i", "1x3x16x16"]),
    ("Net", "Res,Dense", ["-i", "1x3x16x16", "-i", "2x3x8x8"]),
    ("Tiny", "Layer", ["-i", "ids=2x7:int64[0,50)"]),
    ("Turned", "Res", ["-i", "1x3x8x6"]),
]


@pytest.fixture
def nets(tmp_path):
    log = tmp_path / "forwards.txt"
    path = tmp_path / "nets.py"
    path.write_text(NETS.format(log=str(log)), encoding="utf-8")

    def forwards() -> int:
        n = len(log.read_text()) if log.exists() else 0
        log.write_text("")
        return n

    return path, forwards


def _two_forwards(target, call):
    """The route before: the blocks found in one forward, the rows recorded in another."""
    return with_blocks(target, call), None


@pytest.mark.parametrize("name,blocks,inputs", CASES)
def test_summary_without_block_runs_one_forward(cli, nets, name, blocks, inputs, monkeypatch):
    path, forwards = nets
    ref = f"{path}:{name}"
    forwards()
    found = _docs(cli.json("summary", "--model", ref, *inputs, "--depth", "layer"))
    assert forwards() == len([i for i in inputs if i != "-i"])  # one forward per input
    given = _docs(cli.json("summary", "--model", ref, *inputs, "--depth", "layer", "--block", blocks))
    for f, g in zip(found, given):
        assert f["model"]["block"] == blocks and f["model"].pop("block_found") is True
        assert g["model"].pop("block_found") is False
    assert found == given
    # every format, byte for byte, as the route of two forwards writes it
    new = {f: cli("summary", "--model", ref, *inputs, "-f", f).stdout for f in ("table", "json", "csv")}
    monkeypatch.setattr(pipeline, "blocks_and_trace", _two_forwards)
    forwards()
    old = {f: cli("summary", "--model", ref, *inputs, "-f", f).stdout for f in ("table", "json", "csv")}
    assert forwards() == 3 * (1 + len([i for i in inputs if i != "-i"]))
    assert new == old
    assert all(d["model"]["block"] == blocks for d in _docs(json.loads(new["json"])))


def _docs(document: dict | list) -> list[dict]:
    return document if isinstance(document, list) else [document]


def test_a_buffer_made_in_forward_is_seen_by_a_second_forward_as_before(cli, nets, monkeypatch):
    """A cache made on the first call (a buffer registered in ``forward``) changes what the next
    call does: the rows come from a second forward, as they always did (a review found the replay
    recorded the first call's matmul)."""
    path, forwards = nets
    ref = f"{path}:Cached"
    forwards()
    new = {f: cli("summary", "--model", ref, "-i", "1x3x4x4", "-f", f).stdout for f in ("json", "csv")}
    assert forwards() == 2 * 2
    monkeypatch.setattr(pipeline, "blocks_and_trace", _two_forwards)
    old = {f: cli("summary", "--model", ref, "-i", "1x3x4x4", "-f", f).stdout for f in ("json", "csv")}
    assert new == old
    doc = json.loads(new["json"])
    assert doc["model"]["block"] == "Res" and doc["totals"]["macs"] > 0
