"""``tree`` of a model nested thousands of levels deep: its dict and its JSON are built without
recursion (issue 21). The truth is the model's own construction: one Linear(3, 3) (12 parameters)
inside ``DEPTH`` Sequentials, each the only child of the one above."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

import pytest

import resnet_trace
from resnet_trace.records.dicts import _encode_deep, dumps

# one worker under pytest-xdist: the 3,000-level tree (2.6 s) is built once
pytestmark = pytest.mark.xdist_group("deep_tree")

DEPTH = 3000
DEEP = """
from torch import nn

def build(depth):
    m = nn.Linear(3, 3)
    for _ in range(depth):
        m = nn.Sequential(m)
    return m
"""


@contextmanager
def recursion_limit(limit: int):
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@pytest.fixture(scope="module")
def deep_tree(tmp_path_factory):
    path = tmp_path_factory.mktemp("deep") / "deep.py"
    path.write_text(DEEP)
    # torch's own walks of the model (its calls, named_modules) recurse once or more per level
    with recursion_limit(40 * DEPTH):
        return resnet_trace.tree(model_ref=f"{path}:build", model_args={"depth": DEPTH}, input_shape=(1, 3))


def _chain(doc: dict) -> list[dict]:
    nodes = [doc]
    while nodes[-1]["children"]:
        assert len(nodes[-1]["children"]) == 1
        nodes.append(nodes[-1]["children"][0])
    return nodes


def _expected(level: int) -> tuple:
    leaf = level == DEPTH
    return (".".join(["0"] * level), "Linear" if leaf else "Sequential", 12, 12 if leaf else 0, True, None)


def test_a_tree_3000_levels_deep_is_a_dict_and_json_at_the_default_recursion_limit(deep_tree):
    assert sys.getrecursionlimit() <= 1000 + 100  # pytest's own default, nothing raised
    doc = deep_tree.to_dict()
    nodes = _chain(doc)
    assert len(nodes) == DEPTH + 1
    for level, n in enumerate(nodes):
        assert (n["name"], n["type"], n["params"], n["own_params"], n["ran"], n["alias_of"]) == _expected(
            level
        )
    text = deep_tree.to_json()
    with recursion_limit(40 * DEPTH):  # the stdlib's reader recurses per level
        assert json.loads(text) == doc
    assert text.startswith('{\n  "name": "",\n  "type": "Sequential",\n') and text.endswith("\n}\n")


@pytest.mark.parametrize("indent", [2, None])
def test_the_deep_writer_writes_what_json_dumps_writes(indent):
    # the stack-based writer against the stdlib's, on a document of every kind of value it meets
    doc = {
        "a": [1, 2.5, -0.0, float("nan"), float("inf"), True, None, 'é\n"', (3, 4)],
        "b": {"c": {}, "d": [], "e": [[{"f": [1]}]], 7: "int key", None: 0, 1.5: "float key"},
        "g": "",
    }
    seps = (",", ":") if indent is None else None
    assert _encode_deep(doc, indent=indent, separators=seps) + "\n" == dumps(doc, indent=indent)
