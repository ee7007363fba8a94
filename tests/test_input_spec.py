"""``--input [NAME=]DIMS[:DTYPE][[lo,hi)]``: the grammar, its refusals, and what the pipeline does with it.

The models are small and written here; their truths (shapes, dtypes, ids below the embedding's
size) come from the models' own layers, never from the tool.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import resnet_trace as rt
from resnet_trace.cli import app
from resnet_trace.inputs import InputError, from_api, parse_inputs, spec_text
from resnet_trace.records import InputTensor


def cli(*args: str):
    return CliRunner().invoke(app, list(args), prog_name="resnet-trace")


# -- the grammar ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1x128", [(None, (1, 128), None, None, None)]),
        ("2x15x20", [(None, (2, 15, 20), None, None, None)]),
        ("1x3x8x112x112:bfloat16", [(None, (1, 3, 8, 112, 112), "bfloat16", None, None)]),
        (
            "input_ids=2x16:int64,attention_mask=2x16:long",
            [("input_ids", (2, 16), "int64", None, None), ("attention_mask", (2, 16), "int64", None, None)],
        ),
        ("ids=1x4:int64[0,32000)", [("ids", (1, 4), "int64", 0.0, 32000.0)]),
        ("x=1x4[-1.5,2.5),m=1x4:bool", [("x", (1, 4), None, -1.5, 2.5), ("m", (1, 4), "bool", None, None)]),
        ("1x2,3x4:half", [(None, (1, 2), None, None, None), (None, (3, 4), "float16", None, None)]),
    ],
)
def test_one_value_is_one_call(value, expected):
    (call,) = parse_inputs([value])
    assert [(t.name, t.shape, t.dtype, t.low, t.high) for t in call] == expected
    assert parse_inputs([spec_text(call)]) == [call]  # the text a trace records reads back the same


def test_a_sweep_moves_every_swept_dimension_together():
    calls = parse_inputs(["input_ids=1x16-64:16:int64,attention_mask=1x16-64:16:int64"])
    assert [[t.shape for t in c] for c in calls] == [[(1, n), (1, n)] for n in (16, 32, 48, 64)]
    assert [c[0].shape for c in parse_inputs(["2x8-10x3:int32"])] == [(2, 8, 3), (2, 9, 3), (2, 10, 3)]
    assert len(parse_inputs(["1x4", "2x4"])) == 2  # repeating --input is another trace


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("1x0", "cannot be 0"),
        ("1x-3", "cannot be negative"),
        ("1x2:float99", "unknown dtype 'float99'"),
        ("a=1x2,a=1x3", "names 'a' twice"),
        ("a=1x2,1x3", "positional inputs come before named ones"),
        ("1x2-4x3-6", "move together"),
        ("1x2[5,1)", "is empty"),
        ("1x2[a,1)", "is not a number"),
        ("1x2[0,inf)", "finite"),
        ("1x2:bool[0,2)", "bool input takes no range"),
        ("9-bad=1x2", "is not a Python name"),
        ("1x2,,1x3", "empty tensor"),
        ("1x" + "9" * 25, "at most 2,147,483,647"),
        ("65536x65536x65537", "too large to trace"),
        ("1x1-20000", "more than 10,000 sizes"),
    ],
)
def test_a_bad_value_is_one_line_naming_it(value, says):
    with pytest.raises(InputError) as info:
        parse_inputs([value])
    assert says in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError) and info.value.field == "inputs"


def test_the_api_reads_shapes_and_dtypes_as_python_writes_them():
    call = from_api({"input_ids": ((2, 16), torch.int64), "mask": ((2, 16), "bool"), "x": (2, 3)})
    assert call == (
        InputTensor("input_ids", (2, 16), "int64"),
        InputTensor("mask", (2, 16), "bool"),
        InputTensor("x", (2, 3), None),
    )
    assert from_api([(1, 8)]) == (InputTensor(None, (1, 8)),)
    assert from_api("ids=1x8:int64") == (InputTensor("ids", (1, 8), "int64"),)
    for bad, kind in (({"1x": (1, 2)}, TypeError), ({"a": (0, 2)}, ValueError), (3, TypeError)):
        with pytest.raises(kind):
            from_api(bad)


# -- the pipeline -----------------------------------------------------------------------------------
MODELS = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class Tagger(nn.Module):
        """Token ids and a mask -> per-token tags; a type id read by a 2-entry embedding."""

        def __init__(self):
            super().__init__()
            self.words = nn.Embedding(50, 8)
            self.kinds = nn.Embedding(2, 8)
            self.out = nn.Linear(8, 3)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            h = self.words(input_ids)
            if token_type_ids is not None:
                h = h + self.kinds(token_type_ids)
            return self.out(h * attention_mask.unsqueeze(-1))


    class Video(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3, 4)))


    class Reads(nn.Module):
        """Reads a value in its forward: no shape-only trace can follow it."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            n = int(x.abs().sum().item() > -1) + 1
            return self.fc(x).repeat(1, n)
    '''
)


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODELS, encoding="utf-8")
    return str(path)


def test_summary_takes_named_integer_inputs(models):
    r = cli(
        "summary",
        "--model",
        f"{models}:Tagger",
        "-i",
        "input_ids=2x7:int64,attention_mask=2x7:int64",
        "-f",
        "json",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["input_shape"] == [2, 7] and doc["dtype"] == "float32"  # the parameters'
    assert [(i["name"], i["shape"], i["dtype"]) for i in doc["inputs"]] == [
        ("input_ids", [2, 7], "int64"),
        ("attention_mask", [2, 7], "int64"),
    ]
    assert doc["output_shape"] == [2, 7, 3]
    assert doc["totals"]["macs"] == 2 * 7 * 8 * 3  # the linear; lookups are 0
    assert doc["totals"]["unused_modules"] == ["kinds"]  # never called without token_type_ids


def test_run_draws_ids_below_the_embedding_that_reads_them(models):
    # token_type_ids read by a 2-entry embedding: any id >= 2 would be an IndexError (exit 3)
    for seed in range(3):
        r = cli(
            "run",
            "--model",
            f"{models}:Tagger",
            "-i",
            "input_ids=4x64:int64,attention_mask=4x64:int64,token_type_ids=4x64:int64",
            "--seed",
            str(seed),
            "-f",
            "json",
        )
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["totals"]["unused_modules"] == []


def test_run_values_follow_the_rules(models):
    from resnet_trace.feed import values

    call = (
        InputTensor("input_ids", (4, 64), "int64"),
        InputTensor("attention_mask", (4, 64), "int64"),
        InputTensor("r", (4, 64), "int64", 10, 13),
        InputTensor("f", (4, 64), None, -2.0, -1.0),
    )
    feed = values(call, "cpu", torch.float16, seed=0, highs={0: 50})
    ids, mask, r, f = (feed.kwargs[k] for k in ("input_ids", "attention_mask", "r", "f"))
    assert ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) < 50
    assert bool((mask == 1).all())
    assert set(r.unique().tolist()) <= {10, 11, 12}
    assert f.dtype == torch.float16 and float(f.min()) >= -2.0 and float(f.max()) <= -1.0


def test_a_name_forward_does_not_take_is_exit_2_naming_what_it_takes(models):
    r = cli("summary", "--model", f"{models}:Tagger", "-i", "ids=2x7:int64")
    assert r.exit_code == 2
    assert "takes no input 'ids'" in r.stderr and "input_ids, attention_mask, token_type_ids" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli("summary", "--model", f"{models}:Video", "-i", "1x3x4x8x8,1x3x4x8x8")
    assert r.exit_code == 2 and "2 positional inputs" in r.stderr
    with pytest.raises(ValueError, match="takes no input 'ids'"):
        rt.trace(model=nn.Linear(2, 2), inputs={"ids": (1, 2)})


def test_any_rank_and_the_seeds_own_rules(models):
    r = cli("summary", "--model", f"{models}:Video", "-i", "2x3x5x9x9", "-f", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["output_shape"] == [2, 2] and "inputs" not in doc  # one positional float tensor
    assert doc["totals"]["macs"] == 2 * 4 * (3 * 7 * 7) * 3 * 27 + 2 * 4 * 2
    # the built-in model keeps its NxCxHxW reader and its words
    r = cli("summary", "-i", "1x128")
    assert r.exit_code == 2 and "NxCxHxW" in r.stderr
    with pytest.raises(ValueError, match="NxCxHxW"):
        rt.trace(inputs={"x": (1, 3, 224, 224)})


def test_the_api_takes_example_tensors_and_runs_on_them_as_given(models):
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    ids = torch.tensor([[1, 2, 3]])
    t = rt.trace(model=model, inputs={"input": ids}, real=True).trace
    with torch.no_grad():
        truth = model(ids)
    assert t.output_shape == (1, 3, 2) and t.inputs[0].dtype == "int64"
    assert torch.allclose(torch.tensor(t.run.logits), truth)
    assert rt.trace(model=model, inputs=ids).trace.totals.macs == 3 * 4 * 2
    assert rt.trace(model=model, input_shape=(1, 3)).trace.error is not None  # floats into an embedding


def test_a_value_read_stops_at_exit_3_when_the_cpu_retry_would_not_fit(models, monkeypatch):
    # Fits: retried on the CPU with a note. Too big: the shape-only failure stands, in words.
    r = cli("summary", "--model", f"{models}:Reads", "-i", "2x4", "-f", "json")
    assert r.exit_code == 0, r.output
    assert "reads a tensor's value" in r.stderr and "traced on the CPU instead" in r.stderr
    monkeypatch.setenv("RESNET_TRACE_MEMORY_LIMIT", "64")
    r = cli("summary", "--model", f"{models}:Reads", "-i", "2x4")
    assert r.exit_code == 3, r.output
    assert "reads a tensor's value" in r.stderr and "not retried on the CPU" in r.stderr


def test_a_golden_of_named_inputs_checks_against_itself(models, tmp_path):
    golden = tmp_path / "g.json"
    args = ["--model", f"{models}:Tagger", "-i", "input_ids=2x7:int64,attention_mask=2x7:int64"]
    assert cli("summary", *args, "-f", "json", "-o", str(golden)).exit_code == 0
    r = cli("check", str(golden), "--model", f"{models}:Tagger")
    assert r.exit_code == 0, r.output
    r = cli(
        "check",
        str(golden),
        "--model",
        f"{models}:Tagger",
        "-i",
        "input_ids=2x9:int64,attention_mask=2x9:int64",
    )
    assert r.exit_code == 1 and "input_shape" in r.stdout
