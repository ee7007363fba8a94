"""One description of the document: the JSON Schema, the CSV columns and the diff fields are
checked against the dicts the records become, over many generated configurations."""

from __future__ import annotations

import json
from importlib.resources import files

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resnet_trace as rt
from resnet_trace.diffing import ROW_FIELDS, TOP_FIELDS, TOTAL_FIELDS
from resnet_trace.render.tabular import ROW_COLUMNS, csv_cells

SCHEMA = json.loads(files("resnet_trace").joinpath("schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
ROW_PROPERTIES = set(SCHEMA["$defs"]["row"]["properties"])
TOP_PROPERTIES = set(SCHEMA["properties"])


def _flat_keys(row: dict) -> set[str]:
    keys = set(row) - {"conv", "activation"}
    keys |= set(row.get("conv", {}))
    keys |= {f"act_{k}" for k in row.get("activation", {})}
    return keys


configs = st.fixed_dictionaries(
    {
        "base_dim": st.integers(1, 8),
        "num_classes": st.integers(1, 5),
        "input_shape": st.tuples(st.integers(1, 2), st.just(3), st.integers(190, 230), st.integers(190, 230)),
        "variant": st.sampled_from(["seed", "fixed"]),
        "head": st.sampled_from(["avgpool7", "adaptive"]),
        "depth": st.sampled_from(["stage", "block", "layer"]),
        "collapse": st.booleans(),
        "real": st.booleans(),
    }
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_every_document_validates_and_every_field_is_described(config):
    report = rt.trace(**config)
    doc = report.to_dict()
    VALIDATOR.validate(doc)
    assert set(doc) <= TOP_PROPERTIES
    for row in doc["rows"]:
        assert set(row) <= ROW_PROPERTIES, set(row) - ROW_PROPERTIES
        assert _flat_keys(row) <= set(ROW_COLUMNS), _flat_keys(row) - set(ROW_COLUMNS)
    for r in report.rows:
        cells = csv_cells(r)
        assert set(cells) <= set(ROW_COLUMNS)
        assert cells["name"] == r.name and cells["macs"] == str(r.macs)
    assert set(ROW_FIELDS) <= ROW_PROPERTIES and set(TOP_FIELDS) <= TOP_PROPERTIES
    assert set(TOTAL_FIELDS) <= set(SCHEMA["properties"]["totals"]["properties"])


def test_training_and_user_model_documents_validate(tmp_path):
    from torch import nn

    train = rt.api.summary_traces(base_dim=4, train=True, budget="1GiB")[0]
    VALIDATOR.validate(rt.api.report(train).to_dict())
    backward = rt.api.run_traces(base_dim=2, backward=True)[0]
    doc = rt.api.report(backward).to_dict()
    VALIDATOR.validate(doc)
    assert {"grad_norm", "param_grad_norm"} <= {k for r in doc["rows"] for k in r}

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            y = self.a(x)
            return {"features": y, "pooled": (y.mean(dim=(2, 3)), y.amax(dim=(2, 3)))}

    doc = rt.trace(model=Two(), input_shape=(1, 1, 8, 8)).to_dict()
    VALIDATOR.validate(doc)
    assert [o["path"] for o in doc["outputs"]] == ["features", "pooled.0", "pooled.1"]


def test_a_block_is_kind_block_and_the_older_word_still_reads_as_one():
    from resnet_trace.records import LEGACY_BLOCK_WORD, Kind

    assert Kind.BLOCK.value == "block" and str(Kind.BLOCK) == "block"
    assert Kind(LEGACY_BLOCK_WORD) is Kind.BLOCK is Kind("block")
    row = {**rt.trace(base_dim=2).to_dict()["rows"][1], "kind": LEGACY_BLOCK_WORD}
    VALIDATOR.validate({**rt.trace(base_dim=2).to_dict(), "rows": [row]})


def test_every_json_output_goes_through_the_one_writer_and_refuses_nan():
    from resnet_trace.records import Difference, Differences, Format, dumps, json_cell
    from resnet_trace.render.diffs import render_differences

    nan, inf = float("nan"), float("inf")
    assert (
        dumps({"a": nan, "b": [inf, 1.5, (2, -inf)]}, indent=None) == '{"a":null,"b":[null,1.5,[2,null]]}\n'
    )
    assert json_cell({"k": [1, nan]}) == '{"k": [1, null]}'
    diffs = (Difference("layer_2.0", "grad", nan, inf),)
    record = Differences(expected="a", got="b", differences=diffs)
    assert record.to_dict()["differences"][0] == {
        "row": "layer_2.0",
        "field": "grad",
        "expected": None,
        "got": None,
    }
    for fmt in (Format.JSON, Format.JSONL):
        text = render_differences(diffs, fmt, expected="a", got="b")
        assert "NaN" not in text and "Infinity" not in text
        assert json.loads(text) == record.to_dict()
    assert record.to_json() == render_differences(diffs, Format.JSON, expected="a", got="b")


def test_the_one_markdown_row_writer_escapes_pipes_and_line_breaks():
    from resnet_trace.render.tabular import csv_text, md_row, md_rule

    # a line break in a cell is a control character from a name: shown, escaped, never a new row
    assert (
        md_row(["a|b", "x\ny", "", None, "r\r\nn"]) == "| a\\|b | x\\\\ny |  | | r\\\\r\\\\nn |"
    )  # \\n, its backslash escaped for Markdown
    assert md_rule([False, True]) == "|---|---:|"
    assert csv_text(["a", "b"], [[1, "x,y"], ["", None]]) == 'a,b\n1,"x,y"\n,\n'


def test_records_and_units_import_nothing_above_them():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import resnet_trace.units\n"
        "assert [m for m in sys.modules if m.startswith('resnet_trace.')] == ['resnet_trace.units'], sys.modules\n"
        "import resnet_trace.records\n"
        "above = [m for m in sys.modules if m.startswith('resnet_trace.')\n"
        "         and not m.startswith(('resnet_trace.records', 'resnet_trace.units'))]\n"
        "assert above == [], above\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
