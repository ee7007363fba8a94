"""Whether a tensor is fake: shape-only traces of a model of your own run on ``FakeTensorMode``."""

from __future__ import annotations


def is_fake(t: object) -> bool:
    """A ``FakeTensor`` (imported on first use: the seed's trace never needs the module)."""
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)
