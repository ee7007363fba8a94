"""An ASCII-only terminal (``LANG=C``, ``PYTHONIOENCODING=ascii``) gets words and signs, never ``?``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "LANG": "C", "LC_ALL": "C", "PYTHONIOENCODING": "ascii", "COLUMNS": "200"}


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["compare", "--base-dim", "8"], "delta params"),
        (["run", "--base-dim", "4", "--backward"], "|dL/dout|"),
        (["summary", "-i", "1x3x100x100"], "x stopped at avgpool"),
    ],
    ids=["compare", "backward", "stopped"],
)
def test_an_ascii_terminal_gets_words_not_question_marks(args, word):
    out = subprocess.run(
        [sys.executable, "-m", "resnet_trace", *args], capture_output=True, env=ENV, timeout=120
    )
    text = (out.stdout + out.stderr).decode("ascii")  # ASCII only, or this raises
    assert word in text
    assert "?" not in text
