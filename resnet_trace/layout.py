"""The seed's stage plan as data, and the size arithmetic that follows from it.

Pure Python on purpose: the CLI uses it to validate inputs and to derive the
range of image sizes the seed's head accepts, without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True, slots=True)
class BlockPlan:
    """One ``BottleNeck`` of the seed: channel multipliers of ``base_dim`` and ``down``."""

    stage: str
    index: int
    in_mult: int
    mid_mult: int
    out_mult: int
    down: bool


def _stage(stage: str, in_mult: int, mid_mult: int, blocks: int, down_last: bool) -> list[BlockPlan]:
    out_mult = mid_mult * 4
    plans = []
    for i in range(blocks):
        plans.append(
            BlockPlan(
                stage=stage,
                index=i,
                in_mult=in_mult if i == 0 else out_mult,
                mid_mult=mid_mult,
                out_mult=out_mult,
                # The seed reduces the map in the *last* block of stages 2-4.
                down=down_last and i == blocks - 1,
            )
        )
    return plans


#: The sixteen blocks of the seed, in forward order (3 + 4 + 6 + 3).
BLOCKS: tuple[BlockPlan, ...] = tuple(
    _stage("layer_2", 1, 1, 3, True)
    + _stage("layer_3", 4, 2, 4, True)
    + _stage("layer_4", 8, 4, 6, True)
    + _stage("layer_5", 16, 8, 3, False)
)

STAGES: tuple[str, ...] = ("layer_2", "layer_3", "layer_4", "layer_5")

# Stem and head geometry: (kernel, stride, padding).
STEM_CONV = (7, 2, 3)
STEM_POOL = (3, 2, 1)
DOWN_CONV = (1, 2, 0)  # the stride-2 1x1 conv of a down block (and its downsample)
HEAD_POOL = (7, 1, 0)  # AvgPool2d(7, 1)
STEM_CHANNELS = 3
#: The seed's defaults: ``ResNet(base_dim=64, num_classes=2)`` (every default in the tool is these two).
BASE_DIM = 64
NUM_CLASSES = 2


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution or pooling along one axis (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def final_map(size: int) -> int:
    """Side of the map that reaches the head for an input side ``size``."""
    size = out_size(size, *STEM_CONV)
    size = out_size(size, *STEM_POOL)
    for block in BLOCKS:
        if block.down:
            size = out_size(size, *DOWN_CONV)
    return size


@cache
def accepted_sizes() -> tuple[int, int]:
    """Smallest and largest input side whose pooled map is 1x1 under the seed's head.

    ``AvgPool2d(7, 1)`` followed by ``Linear(base_dim*32, ...)`` only works when
    the pooled map is exactly 1x1, i.e. when the final map is exactly 7x7.
    ``final_map`` is non-decreasing in the input size, so a scan finds the range.
    """
    kernel, stride, padding = HEAD_POOL
    lo = hi = None
    size = 1
    while True:
        side = final_map(size)
        pooled = out_size(side, kernel, stride, padding) if side + 2 * padding >= kernel else 0
        if pooled == 1:
            lo = size if lo is None else lo
            hi = size
        elif pooled > 1:
            break
        size += 1
    assert lo is not None and hi is not None
    return lo, hi


def largest_output(shape: tuple[int, ...], base_dim: int, num_classes: int, *, adaptive: bool) -> int:
    """Elements of the largest output any module of the seed produces for an ``NxCxHxW`` input.

    The memory guard's activation term for the built-in model, from the stage plan instead of a
    shape-only trace (which costs a meta build and a hooked forward, 30-40 ms). Every module whose
    input reaches it counts, as in a trace: the head's pool and ``fc_layer`` only where they accept
    the map. Tests compare it with the largest output of a trace over many shapes and models.
    """
    n, _, h, w = shape
    h, w = out_size(h, *STEM_CONV), out_size(w, *STEM_CONV)
    largest = n * base_dim * h * w  # the stem's conv and ReLU; its max pool only shrinks the map
    h, w = out_size(h, *STEM_POOL), out_size(w, *STEM_POOL)
    for block in BLOCKS:
        if block.down:
            h, w = out_size(h, *DOWN_CONV), out_size(w, *DOWN_CONV)
        # every conv, skip and sum of a block is at most its output (mid = out / 4 channels)
        largest = max(largest, n * base_dim * block.out_mult * h * w)
    if adaptive:
        pooled = 1
    else:
        kernel, stride, padding = HEAD_POOL
        if min(h, w) + 2 * padding < kernel:
            return largest  # the pool refuses the map: nothing after it runs
        pooled = out_size(h, kernel, stride, padding) * out_size(w, kernel, stride, padding)
    # the pool's output is at most its input; fc_layer takes base_dim * 32 features, one map's worth
    return max(largest, n * num_classes) if pooled == 1 else largest
