"""Parsers for every output format and the constants the CLI-scripting tests share."""

from __future__ import annotations

import csv
import io
import json
import re
import textwrap
from pathlib import Path

import arith
from arith import expected_rows, x

SEED_FILE = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "000_61a18f5c0186fe4d.txt"
FORMATS = ("table", "json", "jsonl", "csv", "markdown")
BLOCK_NAMES = [b.name for b in arith.blocks(64, 1, 224, 224)]
DEFAULT_ROWS = ["layer_1", *BLOCK_NAMES, "avgpool", "fc_layer"]
UNUSED = ["layer_2.2.dim_equalizer", "layer_3.3.dim_equalizer", "layer_4.5.dim_equalizer"]


# -- parsers for each format ------------------------------------------------------------------
def md_cells(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), line
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line[1:-1])]


def md_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table: header, separator of ---/---: cells, rows all as wide as the header."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            current.append(md_cells(line))
        else:
            current = None
    for table in tables:
        assert len(table) >= 2, table
        header, sep = table[0], table[1]
        assert all(re.fullmatch(r":?-{3,}:?", c) for c in sep), sep
        assert all(len(row) == len(header) for row in table), [len(r) for r in table]
    return tables


def csv_rows(text: str) -> list[dict[str, str]]:
    assert "\r" not in text
    assert text.endswith("\n")
    reader = csv.DictReader(io.StringIO(text))
    assert {"name", "kind", "in_shape", "out_shape", "skip", "params", "macs"} <= set(reader.fieldnames or ())
    rows = list(reader)
    for row in rows:
        assert None not in row, row  # no line wider than the header
        for cell in row.values():
            assert cell is not None, row  # no line narrower than the header
            for repr_bit in ("(", ")", "None", "True", "False", "[", "]"):
                assert repr_bit not in cell, (repr_bit, row)
    return rows


def parse(fmt: str, text: str) -> dict:
    """One traced input's rows and totals, whatever the format: {rows: {name: {...}}, order, totals}."""
    if fmt in ("json", "jsonl"):
        if fmt == "jsonl":
            lines = text.splitlines()
            assert len(lines) == 1
            doc = json.loads(lines[0])
        else:
            doc = json.loads(text)
        assert isinstance(doc, dict)
        rows = {
            r["name"]: dict(
                in_shape=x(r["in_shape"]),
                out_shape=x(r["out_shape"]),
                skip=r["skip"],
                params=r["params"],
                params_unused=r["params_unused"],
                macs=r["macs"],
            )
            for r in doc["rows"]
        }
        order = [r["name"] for r in doc["rows"]]
        return {"rows": rows, "order": order, "totals": (doc["totals"]["params"], doc["totals"]["macs"])}
    if fmt == "csv":
        parsed = csv_rows(text)
        rows = {
            r["name"]: dict(
                in_shape=r["in_shape"],
                out_shape=r["out_shape"],
                skip=r["skip"] or None,
                params=int(r["params"]),
                params_unused=int(r["params_unused"]),
                macs=int(r["macs"]),
            )
            for r in parsed
        }
        order = [r["name"] for r in parsed]
        # The seed's rows partition the model (the shared ReLU holds nothing): sums are the totals.
        totals = (sum(v["params"] for v in rows.values()), sum(v["macs"] for v in rows.values()))
        return {"rows": rows, "order": order, "totals": totals}
    if fmt == "markdown":
        (table,) = md_tables(text)
        header = table[0]
        col = {h: i for i, h in enumerate(header)}
        rows, order = {}, []
        for cells in table[2:]:
            name = cells[col["name"]]
            order.append(name)
            rows[name] = dict(
                in_shape=cells[col["input"]],
                out_shape=cells[col["output"]],
                skip=cells[col["skip"]] or None,
                params=int(cells[col["params"]].replace(",", "")),
                macs=int(cells[col["MACs"]].replace(",", "")),
            )
        m = re.search(r"\*\*Totals[^*]*:\*\* ([\d,]+) params, ([\d,]+) MACs", text)
        assert m, text
        return {
            "rows": rows,
            "order": order,
            "totals": (int(m[1].replace(",", "")), int(m[2].replace(",", ""))),
        }
    assert fmt == "table"
    lines = text.splitlines()
    rows, order = {}, []
    for line in lines:
        tokens = line.split()
        names = [t for t in tokens if t in DEFAULT_ROWS]
        if names:
            order.append(names[0])
            rows[names[0]] = {"tokens": tokens}
    (total,) = [line.split() for line in lines if line.split()[:1] == ["total"]]
    return {"rows": rows, "order": order, "totals": total}


def assert_numbers(fmt: str, parsed: dict, base: int, classes: int = 2) -> None:
    exp = expected_rows(base, classes=classes)
    tot = arith.totals(base, classes, 1)
    assert parsed["order"] == DEFAULT_ROWS
    for name in ("layer_1", "layer_2.0", "layer_2.2", "layer_4.5", "fc_layer"):
        e, got = exp[name], parsed["rows"][name]
        if fmt == "table":
            tokens = got["tokens"]
            for want in (x(e["in_shape"]), x(e["out_shape"]), f"{e['params']:,}", f"{e['macs']:,}"):
                assert want in tokens, (name, want, tokens)
            if e["skip"]:
                assert e["skip"] in tokens
            continue
        assert got["in_shape"] == x(e["in_shape"]), name
        assert got["out_shape"] == x(e["out_shape"]), name
        assert got["skip"] == e["skip"], name
        assert got["params"] == e["params"], name
        assert got["macs"] == e["macs"], name
        if "params_unused" in got:
            assert got["params_unused"] == e["params_unused"], name
    if fmt == "table":
        assert f"{tot['params']:,}" in parsed["totals"]
        assert f"{tot['macs']:,}" in parsed["totals"]
    else:
        assert parsed["totals"] == (tot["params"], tot["macs"])


# A tiny user model with residual blocks: an identity skip and a convolution skip.
TINY = textwrap.dedent(
    """
    from torch import nn

    class Res(nn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.body = nn.Conv2d(cin, cout, 3, stride, 1)
            self.shortcut = nn.Conv2d(cin, cout, 1, stride) if (cin != cout or stride != 1) else None

        def forward(self, x):
            skip = x if self.shortcut is None else self.shortcut(x)
            return self.body(x) + skip

    class Tiny(nn.Module):
        def __init__(self, base_dim=4, num_classes=2):
            super().__init__()
            self.stem = nn.Conv2d(3, base_dim, 3, 1, 1)
            self.blocks = nn.Sequential(Res(base_dim, base_dim), Res(base_dim, 2 * base_dim, 2))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2 * base_dim, num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))
    """
)


# A user model whose blocks share one ReLU module, called three times per block.
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
