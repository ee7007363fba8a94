"""Edge cases found in review: folded and filtered views, narrow terminals, check/diff keys,
malformed goldens, --model imports, options that do not apply, and timed passes in eval()."""

from __future__ import annotations

import csv
import io
import json
import re
import textwrap

import arith
import pytest
import torch

from resnet_trace.api import build_target, trace, trace_run
from resnet_trace.errors import UsageError
from resnet_trace.records import Report
from resnet_trace.render.table import render_table
from resnet_trace.spec import ModelSpec
from resnet_trace.views import view


def test_a_narrow_terminal_never_cuts_numbers():
    t = trace().trace
    out = render_table([Report(t, tuple(view(t.rows)))], width=60)
    tot = arith.totals(64, 2, 1)
    for text in (f"{tot['stem_macs']:,}", "1x3x224x224", f"{tot['params']:,}", f"{tot['macs']:,}"):
        assert text in out
    assert "…" not in out


def test_collapse_at_layer_depth_renames_children_under_the_folded_row(cli):
    doc = cli.json("summary", "--base-dim", "8", "--depth", "layer", "--collapse")
    folded = [r for r in doc["rows"] if r.get("count", 1) > 1]
    assert [r["name"] for r in folded] == ["layer_3.1–3.2", "layer_4.1–4.4", "layer_5.1–5.2"]
    for block in folded:
        children = [r for r in doc["rows"] if r["parent"] == block["name"]]
        assert children and all(c["name"].startswith(block["name"] + ".") for c in children)
    table = cli("summary", "--base-dim", "8", "--depth", "layer", "--collapse").stdout
    # Before the fix the children's names were sliced at the folded name's length.
    assert not re.search(r"\sr\.0\.0\s", table) and not re.search(r"\s(?<!dim_)equalizer\s", table)
    assert re.search(r"^\s+layer\.0\.0\s+Conv2d", table, re.M)


def test_run_never_folds_blocks_whose_measurements_differ(cli):
    doc = cli.json("run", "--base-dim", "4", "--collapse")
    assert sum(1 for r in doc["rows"] if r["kind"] == "bottleneck") == 16
    assert all(r.get("count", 1) == 1 for r in doc["rows"])


def test_filter_applies_to_real_names_before_folding(cli):
    doc = cli.json("summary", "--base-dim", "8", "--collapse", "--filter", r"layer_4\.3")
    assert [r["name"] for r in doc["rows"]] == ["layer_4.3"]
    table = cli("summary", "--filter", r"layer_5\.0").stdout
    line = next(ln for ln in table.splitlines() if "layer_5.0" in ln)
    assert line.split()[0] == "14"  # its ordinal among the 16 blocks: 3 + 4 + 6 + 1


def test_csv_marks_the_inputs_that_failed(cli):
    out = cli("summary", "-i", "1x3x192-193x224", "-f", "csv", code=3).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    by_input = {(r["input"], r["error"]) for r in rows}
    assert by_input == {("1x3x192x224", "avgpool"), ("1x3x193x224", "")}


SHARED_RELU_MODEL = textwrap.dedent(
    """
    from torch import nn

    class BottleNeck(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.a = nn.Conv2d(c, c, 1)
            self.b = nn.Conv2d(c, c, 1)
            self.relu = nn.ReLU()
            self.dim_equalizer = nn.Conv2d(c, c, 1)

        def forward(self, x):
            out = self.relu(self.a(x))
            out = self.relu(self.b(out))
            return self.relu(out + self.dim_equalizer(x))

    class Net(nn.Module):
        def __init__(self, base_dim=4, num_classes=2):
            super().__init__()
            self.stem = nn.Conv2d(3, base_dim, 3, padding=1)
            self.body = nn.Sequential(BottleNeck(base_dim), BottleNeck(base_dim))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(base_dim, num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.body(self.stem(x))).flatten(1))
    """
)


def test_diff_tells_repeated_calls_apart_and_compares_conv_geometry(cli, tmp_path):
    (tmp_path / "shared.py").write_text(SHARED_RELU_MODEL)
    a = tmp_path / "a.json"
    cli(
        "summary",
        "--model",
        f"{tmp_path / 'shared.py'}:Net",
        "--depth",
        "layer",
        "--input",
        "1x3x8x8",
        "-f",
        "json",
        "-o",
        str(a),
    )
    doc = json.loads(a.read_text())
    relu_rows = [i for i, r in enumerate(doc["rows"]) if r["name"].startswith("body.0.relu")]
    # one row per call of the same module, numbered apart
    assert [doc["rows"][i]["name"] for i in relu_rows] == [f"body.0.relu (call {k}/3)" for k in (1, 2, 3)]
    edited = json.loads(a.read_text())
    edited["rows"][relu_rows[1]]["out_shape"] = [1, 4, 9, 9]
    conv_row = next(i for i, r in enumerate(doc["rows"]) if r.get("conv"))
    edited["rows"][conv_row]["conv"]["kernel"] = [3, 3]
    b = tmp_path / "b.json"
    b.write_text(json.dumps(edited))
    diffs = cli("diff", str(a), str(b), "-f", "json", code=1)
    found = {(d["row"], d["field"]) for d in json.loads(diffs.stdout)["differences"]}
    assert ("body.0.relu (call 2/3)", "out_shape") in found
    assert (doc["rows"][conv_row]["name"], "conv") in found
    assert len(found) == 2


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.pop("input_shape"),
        lambda d: d["rows"][0].pop("name"),
        lambda d: d.__setitem__("depth", "deep"),
        lambda d: d["model"].__setitem__("base_dim", "abc"),
        lambda d: d.__setitem__("input_shape", "1x3x224x224"),
        lambda d: d.__setitem__("model", [1]),
        lambda d: d.__setitem__("input_shape", [1, 1, 224, 224]),
    ],
    ids=[
        "no-input",
        "row-without-name",
        "bad-depth",
        "bad-base-dim",
        "shape-as-text",
        "model-list",
        "one-channel",
    ],
)
def test_a_malformed_golden_is_a_usage_error(cli, tmp_path, edit):
    golden = tmp_path / "g.json"
    cli("summary", "-f", "json", "-o", str(golden))
    doc = json.loads(golden.read_text())
    edit(doc)
    golden.write_text(json.dumps(doc))
    result = cli("check", str(golden), code=2)
    assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout


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
    assert [r["name"] for r in doc["rows"] if r["kind"] == "bottleneck"] == ["body.0", "body.1"]


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--device", "meta", "--weights", "nothing.pt"),
        ("summary", "--model", "x.py:Net", "--variant", "fixed"),
        ("compare", "--input", "1x3x200-201x224"),
        ("graph", "--input", "1x3x200-201x224"),
        ("tree", "--format", "csv"),
        ("summary", "-f", "json", "--svg", "no/such/folder/t.svg"),
    ],
)
def test_options_that_cannot_apply_are_refused_before_any_output(cli, args):
    result = cli(*args, code=2)
    assert not result.stdout and len(result.stderr.strip().splitlines()) == 1


def test_meta_run_honours_dtype(cli):
    assert cli.json("run", "--device", "meta", "--dtype", "bfloat16")["dtype"] == "bfloat16"


def test_layer_depth_run_gives_statistics_of_every_call(cli):
    torch.manual_seed(0)
    from resnet_trace.model import ResNet

    model = ResNet(4, 2).eval()
    x = torch.randn((1, 3, 224, 224), generator=torch.Generator().manual_seed(0))
    seen = {}
    conv = model.get_submodule("layer_3.1.layer.1.0")
    conv.register_forward_hook(lambda m, a, out: seen.setdefault("out", out.detach().clone()))
    with torch.no_grad():
        model(x)
    doc = cli.json("run", "--base-dim", "4", "--depth", "layer", "--filter", r"layer_3\.1")
    row = next(r for r in doc["rows"] if r["name"] == "layer_3.1.layer.1.0")
    assert row["activation"]["mean"] == pytest.approx(seen["out"].mean().item(), rel=1e-5, abs=1e-8)
    assert row["activation"]["max"] == pytest.approx(seen["out"].max().item(), rel=1e-6)


def test_timed_passes_run_in_eval_and_restore_the_flag():
    target = build_target(ModelSpec(base_dim=2), device="cpu", init_seed=0)
    target.model.train()
    modes = []
    target.model.register_forward_pre_hook(lambda m, a: modes.append(m.training))
    trace_run(target, torch.randn(1, 3, 224, 224), repeat=3)
    assert len(modes) == 1 + 2 * 3 and not any(modes)
    assert target.model.training is True


def test_the_api_validates_its_arguments():
    with pytest.raises(UsageError):
        trace(base_dim=0)
    with pytest.raises(UsageError):
        trace(input_shape=(1, 4, 224, 224))
