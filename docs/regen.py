"""Regenerate the tool output quoted in README.md and docs/*.md; ``--check`` fails on drift.

A block to regenerate looks like this in Markdown:

    <!-- output: resnet-trace summary --base-dim 64 -->
    ```text
    ...replaced by the command's stdout...
    ```
    <!-- end output -->

The command runs in-process through the real CLI (Typer's CliRunner) at a fixed width.
Usage: ``python docs/regen.py`` to rewrite, ``python docs/regen.py --check`` to verify.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"(?P<head><!-- output: (?P<cmd>[^\n]*?) -->\n```(?P<lang>[a-z]*)\n)(?P<body>.*?)(?P<tail>```\n<!-- end output -->)",
    re.S,
)


def run(command: str) -> str:
    from typer.testing import CliRunner

    from resnet_trace.cli import app

    argv = shlex.split(command)
    assert argv[0] == "resnet-trace", command
    os.environ["COLUMNS"] = "140"
    result = CliRunner().invoke(app, argv[1:], prog_name="resnet-trace")
    return result.stdout


def regenerate(text: str) -> str:
    return BLOCK.sub(lambda m: m["head"] + run(m["cmd"]) + m["tail"], text)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path in FILES:
        if not path.exists():
            continue
        old = path.read_text(encoding="utf-8")
        new = regenerate(old)
        if new != old:
            stale.append(path.relative_to(ROOT))
            if not check:
                path.write_text(new, encoding="utf-8")
    if check and stale:
        print("stale tool output in: " + ", ".join(map(str, stale)) + " (run: python docs/regen.py)")
        return 1
    if not check:
        print("regenerated: " + (", ".join(map(str, stale)) or "nothing changed"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
