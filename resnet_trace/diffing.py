"""Compare two trace documents (``check`` and ``diff``). Works on parsed JSON; no torch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from resnet_trace.errors import UsageError
from resnet_trace.render.data import SCHEMA_ID

ROW_FIELDS = ("kind", "down", "in_shape", "out_shape", "skip", "params", "params_unused", "macs", "count")
TOP_FIELDS = ("input_shape", "output_shape")
TOTAL_FIELDS = ("params", "params_unused", "macs", "unused_modules")


@dataclass(frozen=True, slots=True)
class Difference:
    row: str
    field: str
    expected: object
    got: object


def load_documents(path: Path) -> list[dict]:
    """A saved trace: one document or an array of them (json, jsonl)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{str(path)!r} is a directory, not a trace file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{str(path)!r} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise UsageError(f"{str(path)!r} is not JSON: {exc}") from None
    docs = data if isinstance(data, list) else [data]
    for doc in docs:
        if (
            not isinstance(doc, dict)
            or doc.get("schema") != SCHEMA_ID
            or not isinstance(doc.get("rows"), list)
        ):
            raise UsageError(f"{str(path)!r} is not a resnet-trace document (schema {SCHEMA_ID})")
    if not docs:
        raise UsageError(f"{str(path)!r} holds no trace")
    return docs


def compare_documents(expected: dict, got: dict) -> list[Difference]:
    """Every recorded shape, skip path, parameter and MAC count, row by row, then the totals."""
    diffs: list[Difference] = []
    for f in TOP_FIELDS:
        if expected.get(f) != got.get(f):
            diffs.append(Difference("(trace)", f, expected.get(f), got.get(f)))
    exp_rows = {r["name"]: r for r in expected["rows"]}
    got_rows = {r["name"]: r for r in got["rows"]}
    for name, row in exp_rows.items():
        other = got_rows.get(name)
        if other is None:
            diffs.append(Difference(name, "row", "present", "missing"))
            continue
        for f in ROW_FIELDS:
            if row.get(f) != other.get(f):
                diffs.append(Difference(name, f, row.get(f), other.get(f)))
    for name in got_rows:
        if name not in exp_rows:
            diffs.append(Difference(name, "row", "missing", "present"))
    exp_tot, got_tot = expected.get("totals") or {}, got.get("totals") or {}
    for f in TOTAL_FIELDS:
        if exp_tot.get(f) != got_tot.get(f):
            diffs.append(Difference("(totals)", f, exp_tot.get(f), got_tot.get(f)))
    exp_err = (expected.get("error") or {}).get("module")
    got_err = (got.get("error") or {}).get("module")
    if exp_err != got_err:
        diffs.append(Difference("(trace)", "error.module", exp_err, got_err))
    return diffs


def compare_all(expected: list[dict], got: list[dict]) -> list[Difference]:
    if len(expected) != len(got):
        return [Difference("(file)", "inputs", len(expected), len(got))]
    diffs: list[Difference] = []
    for e, g in zip(expected, got):
        prefix = "" if len(expected) == 1 else "x".join(map(str, e.get("input_shape") or [])) + " "
        diffs.extend(Difference(prefix + d.row, d.field, d.expected, d.got) for d in compare_documents(e, g))
    return diffs


def fmt_value(value: object) -> str:
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return "x".join(map(str, value)) if value else "[]"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if value is None:
        return "-"
    return str(value) if not isinstance(value, (list, dict)) else json.dumps(value)
