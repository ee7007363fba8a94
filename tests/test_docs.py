"""The docs: quoted tool output is fresh, the SVG is a fresh render, links resolve, nothing is left out."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
OWN_DOCS = ("seed.md", "cli.md", "json.md")


def _regen():
    spec = importlib.util.spec_from_file_location("docs_regen", DOCS / "regen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


regen = _regen()


def _strip_generated(text: str) -> str:
    """The hand-written part of a page: everything but the regenerated output blocks."""
    return regen.BLOCK.sub("", text)


@pytest.mark.parametrize("path", [p for p in regen.FILES if p.exists()], ids=lambda p: p.name)
def test_quoted_tool_output_is_fresh(path):
    old = path.read_text(encoding="utf-8")
    assert regen.regenerate(old) == old, f"stale tool output in {path.name}: run python docs/regen.py"


@pytest.mark.parametrize("name", OWN_DOCS)
def test_own_docs_are_regenerated_by_regen(name):
    assert DOCS / name in regen.FILES
    text = (DOCS / name).read_text(encoding="utf-8")
    blocks = list(regen.BLOCK.finditer(text))
    assert blocks, f"{name} quotes no tool output through regen markers"
    assert all(m["body"].strip() for m in blocks), "an empty output block: run python docs/regen.py"
    # Every marker pair is well formed (a broken one would be skipped silently by regen).
    assert text.count("<!-- output:") == text.count("<!-- end output -->") == len(blocks)


def test_seed_doc_shows_both_head_failures_and_has_a_mermaid_bottleneck():
    text = (DOCS / "seed.md").read_text(encoding="utf-8")
    quoted = {m["cmd"]: m["body"] for m in regen.BLOCK.finditer(text)}
    failures = [body for cmd, body in quoted.items() if "192x192" in cmd or "225x225" in cmd]
    assert len(failures) == 2
    assert "stopped at avgpool" in failures[0] and "stopped at fc_layer" in failures[1]
    mermaid = re.findall(r"```mermaid\n(.*?)```", text, re.S)
    assert len(mermaid) == 1
    assert "downsample 1x1/2" in mermaid[0] and "dim_equalizer 1x1" in mermaid[0]
    assert "(table.svg)" in text


def test_table_svg_equals_a_fresh_render(cli, tmp_path):
    fresh = tmp_path / "table.svg"
    cli("summary", "--svg", str(fresh))
    committed = (DOCS / "table.svg").read_bytes()
    assert committed.startswith(b"<svg")
    assert committed == fresh.read_bytes(), (
        "docs/table.svg is stale: run resnet-trace summary --svg docs/table.svg"
    )


def test_readme_links_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = set(re.findall(r"\]\(([^)#\s]+)", readme))
    assert {f"docs/{name}" for name in OWN_DOCS} <= links


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("name", OWN_DOCS)
def test_links_in_own_docs_resolve(name):
    text = (DOCS / name).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        page = DOCS / file if file else DOCS / name
        assert page.exists(), f"{name}: broken link {target}"
        if anchor and page.suffix == ".md":
            headings = re.findall(r"^#{1,6} (.+)$", _strip_generated(page.read_text(encoding="utf-8")), re.M)
            assert anchor in {_slug(h) for h in headings}, f"{name}: no heading for #{anchor} in {page.name}"


def test_cli_doc_covers_every_command_and_option():
    import typer.main

    from resnet_trace.cli import app

    group = typer.main.get_command(app)
    text = _strip_generated((DOCS / "cli.md").read_text(encoding="utf-8"))
    headings = set(re.findall(r"^## (\S+)\s*$", text, re.M))
    missing = []
    for param in group.params:
        missing += [o for o in param.opts if o.startswith("--") and o not in text]
    for name, command in group.commands.items():
        if name not in headings:
            missing.append(f"## {name}")
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and not re.search(re.escape(opt) + r"(?![\w-])", text):
                    missing.append(f"{name} {opt}")
    assert not missing, f"not described in docs/cli.md: {missing}"
    for code in ("0", "1", "2", "3", "4", "130"):
        assert re.search(rf"^\| {code} \|", text, re.M), f"exit code {code} missing"


def _keys(value, out: set[str]) -> set[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(k)
            _keys(v, out)
    elif isinstance(value, list):
        for v in value:
            _keys(v, out)
    return out


def test_json_doc_names_every_field_the_tool_writes(cli, tmp_path):
    keys: set[str] = set()
    _keys(cli.json("summary", "--depth", "layer"), keys)
    _keys(cli.json("summary", "--collapse", "--depth", "stage"), keys)
    _keys(cli.json("summary", "--collapse"), keys)
    _keys(cli.json("summary", "--input", "1x3x256x256", code=3), keys)
    args = ("--base-dim", "2", "--head", "adaptive", "--input", "1x3x32x32", "--top-k", "2")
    _keys(cli.json("run", *args), keys)
    _keys(cli.json("compare", "--base-dim", "4"), keys)
    _keys(cli.json("tree", "--base-dim", "4"), keys)
    golden = tmp_path / "golden.json"
    cli("summary", "--base-dim", "4", "--format", "json", "-o", str(golden))
    other = tmp_path / "other.json"
    cli("summary", "--base-dim", "4", "--variant", "fixed", "--format", "json", "-o", str(other))
    diff = cli.json("diff", str(golden), str(other), code=1)
    assert diff["equal"] is False and diff["differences"]
    _keys(diff, keys)
    text = _strip_generated((DOCS / "json.md").read_text(encoding="utf-8"))
    missing = sorted(k for k in keys if not re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", text))
    assert not missing, f"not described in docs/json.md: {missing}"


def test_ci_recipe_in_json_doc_works(cli, tmp_path, monkeypatch):
    """The golden-trace recipe as documented: save once, check passes, a change fails with exit 1."""
    text = (DOCS / "json.md").read_text(encoding="utf-8")
    assert "resnet-trace summary --format json -o golden.json" in text
    assert "resnet-trace check golden.json" in text
    monkeypatch.chdir(tmp_path)
    cli("summary", "--format", "json", "-o", "golden.json")
    cli("check", "golden.json")
    cli("check", "golden.json", "--variant", "fixed", code=1)
