"""An independent, hand-written computation of the seed's numbers from its layer arithmetic.

Nothing here imports resnet_trace: it is the second opinion the tool's hooks are checked against.
Plan typed from the seed's code: stages of 3, 4, 6, 3 blocks; mid widths 1, 2, 4, 8 x base_dim;
out = 4 x mid; the last block of stages 2-4 is ``down=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGE_PLAN = [
    ("layer_2", 3, 1, True),
    ("layer_3", 4, 2, True),
    ("layer_4", 6, 4, True),
    ("layer_5", 3, 8, False),
]


def conv_params(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


@dataclass
class Block:
    name: str
    stage: str
    down: bool
    in_shape: tuple[int, int, int, int]
    out_shape: tuple[int, int, int, int]
    params: int
    unused: int
    macs: int
    skip: str


def blocks(base: int, n: int, h: int, w: int, variant: str = "seed") -> list[Block]:
    h = conv_out(conv_out(h, 7, 2, 3), 3, 2, 1)
    w = conv_out(conv_out(w, 7, 2, 3), 3, 2, 1)
    cin = base
    out = []
    for stage, count, mid_mult, down_last in STAGE_PLAN:
        mid, cout = base * mid_mult, base * mid_mult * 4
        for i in range(count):
            down = down_last and i == count - 1
            h1, w1 = (conv_out(h, 1, 2, 0), conv_out(w, 1, 2, 0)) if down else (h, w)
            body = conv_params(cin, mid, 1) + conv_params(mid, mid, 3) + conv_params(mid, cout, 1)
            body_macs = n * h1 * w1 * (mid * cin + mid * mid * 9 + cout * mid)
            eq = conv_params(cin, cout, 1)
            if down:
                skip, params, unused = "downsample", body + conv_params(cin, cout, 1), 0
                if variant == "seed":
                    params += eq
                    unused = eq
                macs = body_macs + n * h1 * w1 * cout * cin
            elif variant == "seed" or cin != cout:
                skip, params, unused = "dim_equalizer", body + eq, 0
                macs = body_macs + n * h1 * w1 * cout * cin
            else:
                skip, params, unused, macs = "identity", body, 0, body_macs
            out.append(
                Block(
                    f"{stage}.{i}", stage, down, (n, cin, h, w), (n, cout, h1, w1), params, unused, macs, skip
                )
            )
            cin, h, w = cout, h1, w1
    return out


def totals(base: int, classes: int, n: int, h: int = 224, w: int = 224, variant: str = "seed") -> dict:
    bl = blocks(base, n, h, w, variant)
    stem_h, stem_w = conv_out(h, 7, 2, 3), conv_out(w, 7, 2, 3)
    stem_params = conv_params(3, base, 7)
    stem_macs = n * base * stem_h * stem_w * 3 * 49
    fc_params = base * 32 * classes + classes
    fc_macs = n * classes * base * 32
    return {
        "params": stem_params + sum(b.params for b in bl) + fc_params,
        "unused": sum(b.unused for b in bl),
        "macs": stem_macs + sum(b.macs for b in bl) + fc_macs,
        "stem_params": stem_params,
        "stem_macs": stem_macs,
        "fc_params": fc_params,
        "fc_macs": fc_macs,
    }
