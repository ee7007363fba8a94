"""The models tests/test_sharding.py sends to real ranks, in a module of their own.

A rank unpickles a build by its module and name, so it imports the module that holds it. This
one imports only torch and the seed's model: a rank that builds the seed no longer imports pytest,
transformers and GPT-2's modelling code (about 2.5 s of CPU a rank; four ranks share two cores).
The GPT-2 build imports transformers itself, in the ranks that build it.
"""

from __future__ import annotations

import os
import time

from torch import nn

from resnet_trace.model import ResNet


def seed_model() -> nn.Module:
    """``ResNet(4, 3)``'s parameters exactly; the adaptive head (no parameters) takes a cheap 32x32."""
    return ResNet(4, 3, head="adaptive")


def frozen_seed() -> nn.Module:
    """The seed with its stem, a whole block and the head's bias frozen: no grad, no state."""
    model = seed_model()
    for p in [*model.layer_1.parameters(), *model.layer_2[1].parameters(), model.fc_layer.bias]:
        p.requires_grad_(False)
    return model


def gpt2_config():
    import transformers

    # odd sizes, so that dim-0 chunks are uneven at 2 and 4 ranks
    return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=503, n_positions=37)


def gpt2_model() -> nn.Module:
    import transformers

    return transformers.GPT2LMHeadModel(gpt2_config())


def fails_on_rank_1() -> nn.Module:
    if os.environ.get("RANK") == "1":
        raise RuntimeError("rank one cannot build\nsecond line")
    return nn.Linear(2, 2)


def hangs_on_rank_1() -> nn.Module:
    if os.environ.get("RANK") == "1":
        time.sleep(600)
    return nn.Linear(2, 2)
