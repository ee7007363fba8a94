"""Hostile models and goldens for tests/test_hostile_round3.py, written as text into a test's folder.

Every model here is trusted code (docs/security.md: the one thing the tool runs) that is hostile in
what it hands back: names and messages holding terminal codes, exceptions that fail at any call,
outputs that never end, prints, warnings. The goldens are data written by someone else.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

#: Names a model (or a golden) may give a module, each breaking some format when printed raw.
HOSTILE_NAMES: dict[str, str] = {
    "ansi-colour": "red\x1b[31mRED\x1b[0m",
    "osc-title": "t\x1b]0;PWNED\x07",
    "rtl-override": "abc\u202egnp.exe".replace(".", "_"),
    "bidi-isolate": "x\u2066y\u2069z\u200f",
    "pipe": "a|b|c",
    "newline": "first\nsecond",
    "crlf": "a\r\nb",
    "quote-newline": 'q"]\n  evil["x',
    "mermaid-edge": 'x"]-->|"pwn"| y["',
    "dot-injection": 'n"; evil [label="x"]; "',
    "backticks": "`code` and ``more``",
    "html": "<img src=x onerror=alert(1)>&amp;",
    "rich-markup": "[bold red]loud[/] [link=http://x]y[/link]",
    "c1-csi": "c1\x9b31m",
    "nul-del": "nul\x00del\x7f",
    "line-separator": "a\u2028b\u2029c",
    "tab": "a\tb",
    "lone-surrogate": "s\ud800x",
    "backslash": "a\\x1b\\",
    "long": "L" * 3000,
}

#: What no stream may hold raw: controls (a line break only as a line end), bidi controls and
#: marks, line and paragraph separators, lone surrogates.
RAW_CONTROL = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)

NAMED_MODEL = """
import torch
from torch import nn

NAME = {name!r}
CLASS = NAME[:40].encode("utf-8", "replace").decode().replace("\\x00", "0")  # a type's name holds no NUL


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module(NAME, nn.Linear(4, 4))

    def forward(self, x):
        return x + getattr(self, NAME)(x)


Block.__name__ = Block.__qualname__ = "Block" + CLASS


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module(NAME + "s", nn.Sequential(Block(), Block()))
        self.head = nn.Linear(4, 3)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(getattr(self, NAME + "s")(x))


Net.__name__ = Net.__qualname__ = "Net" + CLASS
"""

#: The kinds of exception a model can raise, and where.
EXCEPTION_KINDS = (
    "value",
    "hostile-message",
    "broken-str",
    "non-str",
    "base-exception",
    "system-exit",
    "recursion",
    "assertion",
    "huge-message",
)

FAILING_MODEL = """
import sys

import torch
from torch import nn

KIND, SITE = {kind!r}, {site!r}


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


class NonStr(Exception):
    def __str__(self):
        return 42


class Custom(BaseException):
    pass


def fail():
    if KIND == "value":
        raise ValueError("plain failure")
    if KIND == "hostile-message":
        raise RuntimeError("bad \\x1b]0;PWNED\\x07 \\u202e evil\\nsecond line\\x1b[2J")
    if KIND == "broken-str":
        raise BadStr()
    if KIND == "non-str":
        raise NonStr()
    if KIND == "base-exception":
        raise Custom("a BaseException of the model's own")
    if KIND == "system-exit":
        sys.exit(0)
    if KIND == "recursion":
        return forever(0)
    if KIND == "assertion":
        assert False, "an assertion in the model"
    if KIND == "huge-message":
        raise ValueError("x" * 1_000_000)


def forever(n):
    return forever(n + 1)


def real(x):
    from torch._subclasses.fake_tensor import FakeTensor

    return not isinstance(x, FakeTensor) and x.device.type != "meta"


if SITE == "import":
    fail()


class Net(nn.Module):
    real_calls = 0

    def __init__(self):
        super().__init__()
        if SITE == "build":
            fail()
        self.fc = nn.Linear(4, 3)

    def register_forward_pre_hook(self, *args, **kwargs):
        if SITE == "hook":
            fail()
        return super().register_forward_pre_hook(*args, **kwargs)

    def train(self, mode=True):
        if SITE == "train-flag":
            fail()
        return super().train(mode)

    def forward(self, x):
        if real(x):
            type(self).real_calls += 1
        if SITE == "forward":
            fail()
        if SITE == "second-call" and real(x) and type(self).real_calls >= 2:
            fail()
        if SITE == "with-grad" and real(x) and torch.is_grad_enabled():
            fail()
        if SITE == "train" and torch.is_grad_enabled():
            fail()
        return self.fc(x)
"""

#: Where the exception is raised: (the command line after the model, the exit code the contract
#: gives: 2 while importing or building it, 3 once it is built).
EXCEPTION_SITES: dict[str, tuple[tuple[str, ...], int]] = {
    "import": (("summary",), 2),
    "build": (("summary",), 2),
    "hook": (("summary",), 3),
    "train-flag": (("summary",), 3),
    "forward": (("summary",), 3),
    "forward-run": (("run",), 3),
    "second-call": (("run", "--repeat", "2"), 3),
    "with-grad": (("run", "--backward"), 3),
    "train": (("summary", "--train"), 3),
}

NESTED_MODEL = """
import dataclasses

import torch
from torch import nn

KIND = {kind!r}


@dataclasses.dataclass
class Out:
    y: object
    again: object = None


class Inner(nn.Module):
    def forward(self, x, extra=None):
        return x * 2


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.inner = Inner()

    def forward(self, x):
        y = self.fc(x)
        if KIND == "deep-list-150":
            out = [y]
            for _ in range(150):
                out = [out]
            return out
        if KIND == "deep-list-5000":
            out = [y]
            for _ in range(5000):
                out = [out]
            return out
        if KIND == "deep-dict-5000":
            out = {{"y": y}}
            for _ in range(5000):
                out = {{"next": out}}
            return out
        if KIND == "cycle-dict":
            d = {{"y": y}}
            d["self"] = d
            return d
        if KIND == "cycle-list":
            out = [y]
            out.append(out)
            return out
        if KIND == "cycle-through-tuple":
            out = [y]
            out.append((out,))
            return (out,)
        if KIND == "shared-2-to-the-60":
            out = [y]
            for _ in range(60):
                out = [out, out]
            return out
        if KIND == "dataclass-cycle":
            o = Out(y)
            o.again = o
            return o
        if KIND == "deep-input":
            arg = [x]
            for _ in range(200):
                arg = [arg]
            self.inner(x, extra=arg)
            return y
        raise AssertionError(KIND)
"""

NESTED_KINDS = (
    "deep-list-150",
    "deep-list-5000",
    "deep-dict-5000",
    "cycle-dict",
    "cycle-list",
    "cycle-through-tuple",
    "shared-2-to-the-60",
    "dataclass-cycle",
    "deep-input",
)

DEEP_MODEL = """
from torch import nn


class Res(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return x + self.inner(x)


def nested(n=300):
    m = nn.Linear(4, 4)
    for _ in range(int(n)):
        m = nn.Sequential(m)
    return m


def residual(n=300):
    m = nn.Linear(4, 4)
    for _ in range(int(n)):
        m = Res(m)
    return m
"""

LAZY_MODEL = """
from torch import nn


class LazyLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.LazyLinear(3)

    def forward(self, x):
        return self.fc(x)


class LazyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.LazyConv2d(4, 3)
        self.norm = nn.LazyBatchNorm2d()

    def forward(self, x):
        return self.norm(self.conv(x))
"""

STDOUT_MODEL = """
import io
import os
import sys

import torch
from torch import nn

KIND = {kind!r}

if KIND == "print-import":
    print("printed while importing")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        if KIND == "print-build":
            print("printed while building")
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if KIND == "print-forward":
            print("printed in forward", flush=True)
        if KIND == "replace-stdout":
            sys.stdout = io.StringIO()
        if KIND == "close-stdout":
            sys.stdout.close()
        if KIND == "everything":
            print("print")
            sys.stdout.flush()
            os.write(1, b"os.write to fd 1\\n")
            sys.__stdout__.write("sys.__stdout__\\n")
            sys.__stdout__.flush()
            sys.stdout = io.StringIO()
        return self.fc(x)
"""

STDOUT_KINDS = ("print-import", "print-build", "print-forward", "replace-stdout", "close-stdout")

WARNING_MODEL = """
import warnings

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        warnings.warn("the model's own warning")
        warnings.warn("the model's own warning")
        warnings.warn("hostile \\x1b]0;PWNED\\x07 warning\\nsecond line", RuntimeWarning)
        y = self.fc(x)
        return nn.functional.softmax(y)  # torch: "Implicit dimension choice for softmax"
"""

SLOW_IMPORT_MODEL = """
import time
from pathlib import Path

from torch import nn

Path(__file__).with_name("importing").touch()  # the test's signal: torch and Typer are imported
time.sleep(30)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)
"""

EXPANDED_OUTPUT_MODEL = """
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        # 2,000,000,000 floats (8 GB) as a view of one: what the model never allocated
        return self.fc(x).reshape(1, 1, 1).expand(1, 50_000, 40_000)
"""


def write_model(folder: Path, source: str, stem: str = "hostile_model") -> Path:
    path = folder / f"{stem}.py"
    path.write_text(source, encoding="utf-8")
    return path


# -- goldens ----------------------------------------------------------------------------------------
#: Filters a golden may record: each can hang or crash Python's ``re``, or is no plain pattern.
HOSTILE_FILTERS: dict[str, str] = {
    "nested-plus": "(a+)+$",
    "alternation-star": "(a|aa)*b",
    "nested-star": "(x+x+)+y",
    "star-of-star": "(?:a*)*c",
    "backreference": r"(a+)\1$",
    "conditional": r"(a)?(?(1)a|b)+",
    "huge-count": "a{4294967296}",
    "big-count": "a{100000}",
    "invalid": "([unclosed",
    "too-long": "a" * 2000,
}

#: Numbers outside JSON's range, as a golden may spell them.
OUT_OF_RANGE = ("NaN", "Infinity", "-Infinity", "1e400", "-1e999")


def with_token(doc: dict, place: str, token: str) -> str:
    """``doc`` as JSON text with the bare ``token`` at ``place``."""
    marker = 123456789012345
    d = copy.deepcopy(doc)
    if place == "extra-field":
        d["x_extra"] = marker
    elif place == "row-macs":
        d["rows"][0]["macs"] = marker
    elif place == "totals-params":
        d["totals"]["params"] = marker
    else:  # pragma: no cover
        raise AssertionError(place)
    return json.dumps(d).replace(str(marker), token, 1)


def renamed(doc: dict, name: str) -> dict:
    """``doc`` with its first row named ``name`` and its model recorded as coming from ``name``."""
    d = copy.deepcopy(doc)
    d["rows"][0]["name"] = name
    d["rows"][0]["module_type"] = name
    d["model"]["block"] = name
    return d
