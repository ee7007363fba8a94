"""schema, --help and --version.

Expected numbers come from tests/arith.py (layer arithmetic typed by hand), never from the tool."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jsonschema
import pytest
from formats import TINY

import resnet_trace


# -- 7. schema, help, version --------------------------------------------------------------------
@pytest.fixture(scope="module")
def validator():
    from typer.testing import CliRunner

    from resnet_trace.cli import app

    result = CliRunner().invoke(app, ["schema"], prog_name="resnet-trace")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ((), 0),
        (("-i", "1x3x256x256"), 3),
        (("-i", "1x3x190x224"), 3),
        (("--base-dim", "4", "--depth", "layer"), 0),
        (("--depth", "stage"), 0),
        (("--collapse",), 0),
        (("--filter", r"layer_3\."), 0),
        (("--variant", "fixed", "--head", "adaptive", "-i", "2x3x100x300"), 0),
    ],
    ids=["good", "fails-at-fc", "fails-at-avgpool", "layer", "stage", "collapse", "filter", "fixed"],
)
def test_summary_documents_validate_against_the_schema(cli, validator, args, code):
    doc = cli.json("summary", *args, code=code)
    validator.validate(doc)
    assert (doc["error"] is None) == (code == 0)


def test_run_and_multi_input_and_custom_documents_validate(cli, validator, tmp_path):
    validator.validate(cli.json("run", "--base-dim", "4"))
    validator.validate(cli.json("run", "--base-dim", "4", "--depth", "layer", "--collapse"))
    docs = cli.json("summary", "-i", "1x3x191-194:3x224", code=3)
    assert len(docs) == 2
    for doc in docs:
        validator.validate(doc)
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    validator.validate(
        cli.json(
            "summary", "--model", f"{path}:Tiny", "--block", "Res", "--skip", "shortcut", "-i", "1x3x8x8"
        )
    )


def test_schema_rejects_a_broken_document(cli, validator):
    doc = cli.json("summary")
    validator.validate(doc)
    for breaks in (
        lambda d: d["rows"][0].__setitem__("params", "9472"),
        lambda d: d.pop("totals"),
        lambda d: d.__setitem__("schema", "resnet-trace/2"),
    ):
        broken = json.loads(json.dumps(doc))
        breaks(broken)
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(broken)


def test_schema_to_a_file_equals_stdout(cli, tmp_path):
    target = tmp_path / "schema.json"
    cli("schema", "-o", target)
    assert target.read_text() == cli("schema").stdout


def test_help_and_version(cli):
    result = cli("--help")
    for command in ("summary", "run", "check", "diff", "schema"):
        assert command in result.stdout
    result = cli("--version")
    assert result.stdout.strip() == f"resnet-trace {resnet_trace.__version__}"
    for command in ("summary", "run", "check", "diff", "schema"):
        sub = cli(command, "--help")
        assert sub.stdout.startswith("Usage: resnet-trace " + command) and sub.stderr == ""
    assert "--format" in cli("summary", "--help").stdout


@pytest.mark.parametrize("args", [["--help"], ["schema"], ["--version"], ["summary", "--help"]])
def test_help_and_schema_do_not_import_torch(args):
    code = textwrap.dedent(
        f"""
        import sys
        from typer.testing import CliRunner
        from resnet_trace.cli import app
        result = CliRunner().invoke(app, {args!r}, prog_name="resnet-trace")
        assert result.exit_code == 0, result.output
        print('torch' in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
