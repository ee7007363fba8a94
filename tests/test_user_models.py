"""--model: the user's own model, imported like Python does and built as asked.

Expected numbers come from tests/arith.py (layer arithmetic typed by hand), never from the tool."""

from __future__ import annotations

import sys

import arith
import pytest
from arith import expected_rows
from formats import SEED_FILE, SHARED_RELU_MODEL, TINY, UNUSED, csv_rows


# -- 6. --model ----------------------------------------------------------------------------------
def seed_code() -> str:
    if not SEED_FILE.exists():
        pytest.skip(f"seed file not found at {SEED_FILE}")
    text = SEED_FILE.read_text(encoding="utf-8")
    code = text[text.index("from torch import nn") : text.index("[reference]")]
    return code.replace("import torchsummary\n", "")


ROW_KEYS = ("name", "kind", "in_shape", "out_shape", "skip", "params", "params_unused", "macs")


def _rows(doc):
    return [{k: r[k] for k in ROW_KEYS} for r in doc["rows"]]


@pytest.mark.parametrize(
    "config", [("--base-dim", "64"), ("--base-dim", "8", "--num-classes", "3", "-i", "2x3x200x210")]
)
def test_model_file_copy_of_the_seed_gives_the_builtin_rows(cli, tmp_path, config):
    path = tmp_path / "seedcopy.py"
    path.write_text(seed_code(), encoding="utf-8")
    ref = f"{path}:ResNet"
    mine = cli.json("summary", "--model", ref, *config)
    builtin = cli.json("summary", *config)
    assert _rows(mine) == _rows(builtin)
    assert mine["totals"] == builtin["totals"]
    assert mine["output_shape"] == builtin["output_shape"]
    assert mine["model"]["source"] == ref
    base, classes, n, h, w = (8, 3, 2, 200, 210) if len(config) > 2 else (64, 2, 1, 224, 224)
    tot = arith.totals(base, classes, n, h, w)
    assert (mine["totals"]["params"], mine["totals"]["macs"]) == (tot["params"], tot["macs"])
    assert mine["totals"]["unused_modules"] == UNUSED
    exp = expected_rows(base, n, h, w, classes)
    assert {r["name"]: (r["params"], r["macs"]) for r in mine["rows"]} == {
        k: (v["params"], v["macs"]) for k, v in exp.items()
    }


def test_model_package_module_form(cli, tmp_path, monkeypatch):
    pkg = tmp_path / "rt_scripting_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "seednet.py").write_text(seed_code(), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        mine = cli.json("summary", "--model", "rt_scripting_pkg.seednet:ResNet", "--base-dim", "64")
        missing = cli("summary", "--model", "rt_scripting_pkg.nothere:ResNet", code=2)
    finally:
        for name in [m for m in sys.modules if m.startswith("rt_scripting_pkg")]:
            del sys.modules[name]
    assert _rows(mine) == _rows(cli.json("summary"))
    assert mine["totals"]["params"] == arith.totals(64, 2, 1)["params"]
    assert len(missing.stderr.strip().splitlines()) == 1


BAD_MODELS = {
    "import-fails": ("import torch\nraise RuntimeError('no GPU here')\n", "Net", "no GPU here"),
    "syntax-error": ("def broken(:\n", "Net", "SyntaxError"),
    "missing-name": ("from torch import nn\nNet = nn.Identity\n", "Nope", "Nope"),
    "not-a-module": ("def Net():\n    return 42\n", "Net", "Module"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_is_exit_2_with_one_line(cli, tmp_path, case):
    code, name, needle = BAD_MODELS[case]
    path = tmp_path / f"bad_{case.replace('-', '_')}.py"
    path.write_text(code)
    result = cli("summary", "--model", f"{path}:{name}", code=2)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnet-trace: error:"), result.stderr
    assert needle in lines[0]


def test_model_missing_file_is_exit_2(cli, tmp_path):
    result = cli("summary", "--model", f"{tmp_path / 'nothere.py'}:ResNet", code=2)
    assert len(result.stderr.strip().splitlines()) == 1


def test_custom_block_and_skip_names(cli, tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    ref = f"{path}:Tiny"
    args = (
        "summary",
        "--model",
        ref,
        "--base-dim",
        "4",
        "--block",
        "Res",
        "--skip",
        "shortcut",
        "-i",
        "1x3x16x16",
    )
    doc = cli.json(*args)
    # Layer arithmetic for base_dim 4 on 1x3x16x16.
    half = arith.conv_out(16, 1, 2, 0)
    b0 = dict(
        in_shape=[1, 4, 16, 16],
        out_shape=[1, 4, 16, 16],
        skip="identity",
        params=arith.conv_params(4, 4, 3),
        macs=16 * 16 * 4 * 4 * 9,
    )
    b1 = dict(
        in_shape=[1, 4, 16, 16],
        out_shape=[1, 8, half, half],
        skip="shortcut",
        params=arith.conv_params(4, 8, 3) + arith.conv_params(4, 8, 1),
        macs=half * half * 8 * (4 * 9 + 4),
    )
    blocks = {r["name"]: r for r in doc["rows"] if r["kind"] == "block"}
    assert sorted(blocks) == ["blocks.0", "blocks.1"]
    for name, exp in (("blocks.0", b0), ("blocks.1", b1)):
        assert {k: blocks[name][k] for k in exp} == exp, name
    stem, fc = arith.conv_params(3, 4, 3), 8 * 2 + 2
    assert doc["totals"]["params"] == stem + b0["params"] + b1["params"] + fc
    assert doc["totals"]["macs"] == 16 * 16 * 4 * 27 + b0["macs"] + b1["macs"] + 2 * 8
    assert doc["output_shape"] == [1, 2]
    csv_by = {r["name"]: r for r in csv_rows(cli(*args, "-f", "csv").stdout)}
    assert (csv_by["blocks.0"]["skip"], csv_by["blocks.1"]["skip"]) == ("identity", "shortcut")
    # Without --block and --skip, the blocks (the modules adding onto their input) and their
    # skip paths come from the dataflow: the same rows, and the class named in the document.
    found = cli.json("summary", "--model", ref, "--base-dim", "4", "-i", "1x3x16x16")
    assert found["rows"] == doc["rows"]
    assert (found["model"]["block"], found["model"]["block_found"]) == ("Res", True)
    assert [r["skips"] for r in found["rows"] if r["kind"] == "block"] == [["identity"], ["shortcut"]]
    # A --block class the model does not have is a usage error naming it.
    missing = cli("summary", "--model", ref, "--block", "BottleNeck", "-i", "1x3x16x16", code=2)
    assert "BottleNeck" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_model_imports_like_python_does(cli, tmp_path, monkeypatch, seed_module):
    (tmp_path / "blocks.py").write_text(SHARED_RELU_MODEL)
    (tmp_path / "wrap.py").write_text(
        "from blocks import Net\n\ndef build(base_dim, num_classes=2):\n"
        "    return Net(base_dim, num_classes)\n"
    )
    doc = cli.json(
        "summary", "--model", f"{tmp_path / 'wrap.py'}:build", "--base-dim", "4", "--input", "1x3x8x8"
    )
    assert doc["output_shape"] == [1, 2]
    monkeypatch.chdir(tmp_path)
    doc = cli.json("summary", "--model", "blocks:Net", "--input", "1x3x8x8")
    assert [r["name"] for r in doc["rows"] if r["kind"] == "block"] == ["body.0", "body.1"]


GROWS = """
import torch
from torch import nn


class Grows(nn.Module):
    '''Builds a second layer on its first call, as lazy code does.'''

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x):
        if not hasattr(self, "b"):
            self.b = nn.Linear(4, 4, device=x.device)
        return self.b(self.a(x.flatten(1)))


def build():
    return Grows()
"""


def test_a_model_that_grows_in_forward_is_read_again_for_every_input(cli, tmp_path):
    """Several inputs share one hook session; a module built during a forward is still hooked and
    counted for the next input, as it is when each input is traced alone."""
    import torch

    namespace: dict = {}
    exec(GROWS, namespace)
    model = namespace["build"]()
    model(torch.zeros(2, 1, 2, 2))
    params = sum(p.numel() for p in model.parameters())  # the truth after a forward: a and b
    path = tmp_path / "grows.py"
    path.write_text(GROWS, encoding="utf-8")
    docs = cli.json(
        "summary", "--model", f"{path}:build", "--block", "Linear", "-i", "2x1x2x2", "-i", "3x1x2x2"
    )
    assert [d["totals"]["params"] for d in docs] == [params, params] == [40, 40]
    assert [d["totals"]["params_unused"] for d in docs] == [0, 0]  # b's weights were read
    assert [d["totals"]["macs"] for d in docs] == [2 * 2 * 16, 3 * 2 * 16]
    # b did not exist when the first forward began, so only the second has a row of its own.
    assert "b" in [r["name"] for r in docs[1]["rows"]]
    assert [(d["error"], d["device"]) for d in docs] == [(None, "meta")] * 2  # no retry on the CPU


def test_each_forward_of_a_session_starts_in_the_mode_asked_for():
    """A model whose own code flips a training flag does not carry it into the next input."""
    import torch
    from torch import nn

    from resnet_trace.api import model_target
    from resnet_trace.tracer import run_forward, session_of

    class Flips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop = nn.Dropout(0.5)
            self.seen: list[bool] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.seen.append(self.drop.training)
            self.drop.train()
            return self.drop(x)

    model = Flips().eval()
    target = model_target(model, block="Dropout")
    with session_of(target) as session:
        for _ in range(3):
            run_forward(target, torch.zeros(2, 3), session=session)
    assert model.seen == [False, False, False]
    assert model.training is False and model.drop.training is False  # restored afterwards
    with session_of(target) as session, pytest.raises(ValueError, match="other options"):
        run_forward(target, torch.zeros(2, 3), stats=True, session=session)  # not what it was opened for
