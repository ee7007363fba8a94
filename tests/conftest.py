from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import typer.testing
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))  # tests/arith.py

# One intra-op thread in the test process (a child the tests start keeps torch's default). The
# traces run here are small; on this 2-core machine, shared, torch's OpenMP workers spin waiting
# for a core: tests/test_training_cli.py took 14.5 s of CPU and 39 s with two threads, 5.5 s and
# 17 s with one. No expectation depends on it: each truth is computed in this same process.
torch.set_num_threads(1)


def _command_once(get_command):
    """Typer's test runner turns the app into its click command on every ``invoke``: 6 ms each,
    14 s of the suite's 2,241 invokes. The command is built once for each app and set of registered
    commands and reused: each invoke still parses its arguments, makes its contexts and runs the
    command as the console script does (the group resets its per-invocation state in ``main``)."""
    built: dict[tuple, tuple] = {}

    def command(app):
        key = (id(app), *map(id, app.registered_commands), *map(id, app.registered_groups))
        if key not in built:
            built[key] = (app, get_command(app))  # the app kept alive: its id is not reused
        return built[key][1]

    return command


assert callable(typer.testing._get_command), "typer.testing no longer builds the command as expected"
typer.testing._get_command = _command_once(typer.testing._get_command)

SEED_FILE = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "000_61a18f5c0186fe4d.txt"


class Cli:
    """Drive the real CLI in-process; stdout and stderr apart."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int | None = 0, input: str | None = None):
        from resnet_trace.cli import app

        result = self.runner.invoke(app, [str(a) for a in args], prog_name="resnet-trace", input=input)
        if code is not None:
            assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    def json(self, *args: str, code: int | None = 0):
        result = self(*args, "--format", "json", code=code)
        return json.loads(result.stdout)


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture(scope="session")
def session_cli() -> Cli:
    """The same driver for module- and session-scoped fixtures: an expensive run shared by tests."""
    return Cli()


@pytest.fixture(scope="session")
def seed_module():
    """The seed's own code, executed from the code review (the spec we must match)."""
    if not SEED_FILE.exists():
        message = f"seed file not found at {SEED_FILE}"
        if os.environ.get("RESNET_TRACE_REQUIRE_SEED"):
            pytest.fail(message + " (RESNET_TRACE_REQUIRE_SEED is set: CI must check the seed's code)")
        pytest.skip(message)
    text = SEED_FILE.read_text(encoding="utf-8")
    code = text[text.index("from torch import nn") : text.index("[reference]")]
    code = code.replace("import torchsummary\n", "")
    namespace: dict = {"__name__": "seed"}
    exec(compile(code, str(SEED_FILE), "exec"), namespace)
    return namespace
