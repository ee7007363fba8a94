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


# -- the whole seed at block depth (shared by the feature tests) --------------------------------
def final_map(size: int) -> int:
    """Spatial size reaching the head: stem conv 7/2/3, maxpool 3/2/1, then three stride-2 1x1 convs."""
    s = conv_out(conv_out(size, 7, 2, 3), 3, 2, 1)
    for _ in range(3):  # the down blocks of layer_2, layer_3, layer_4
        s = conv_out(s, 1, 2, 0)
    return s


def head_accepts(size: int) -> bool:
    """AvgPool2d(7, 1) needs a map >= 7 and fc_layer needs 32*base features, i.e. a 1x1 pool output."""
    return final_map(size) == 7


def failing_module(h: int, w: int) -> str | None:
    if head_accepts(h) and head_accepts(w):
        return None
    if final_map(h) < 7 or final_map(w) < 7:
        return "avgpool"  # kernel larger than the map
    return "fc_layer"  # pooled map larger than 1x1: too many features


def expected_rows(base: int, n: int = 1, h: int = 224, w: int = 224, classes: int = 2) -> dict[str, dict]:
    """name -> in/out shape (tuples), skip, params, params_unused, macs for the default (block) depth."""
    tot = totals(base, classes, n, h, w)
    bl = blocks(base, n, h, w)
    stem_out = (n, base, bl[0].in_shape[2], bl[0].in_shape[3])
    last = bl[-1].out_shape
    rows = {
        "layer_1": dict(
            in_shape=(n, 3, h, w),
            out_shape=stem_out,
            skip=None,
            params=tot["stem_params"],
            params_unused=0,
            macs=tot["stem_macs"],
        ),
    }
    for b in bl:
        rows[b.name] = dict(
            in_shape=b.in_shape,
            out_shape=b.out_shape,
            skip=b.skip,
            params=b.params,
            params_unused=b.unused,
            macs=b.macs,
        )
    pooled = (last[0], last[1], last[2] - 7 + 1, last[3] - 7 + 1)
    rows["avgpool"] = dict(in_shape=last, out_shape=pooled, skip=None, params=0, params_unused=0, macs=0)
    rows["fc_layer"] = dict(
        in_shape=(n, base * 32),
        out_shape=(n, classes),
        skip=None,
        params=tot["fc_params"],
        params_unused=0,
        macs=tot["fc_macs"],
    )
    return rows


def x(shape) -> str:
    return "x".join(str(d) for d in shape)
