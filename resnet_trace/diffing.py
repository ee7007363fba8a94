"""Compare two trace documents (``check`` and ``diff``) field by field. Works on parsed JSON; no torch.

Reading a golden (bounded, parsed one document at a time, validated) is :mod:`resnet_trace.goldenfile`.
"""

from __future__ import annotations

from resnet_trace.records import LEGACY_BLOCK_WORD, Difference, Kind, shape_text

ROW_FIELDS = (
    "kind",
    "down",
    "in_shape",
    "out_shape",
    "skip",
    "skips",
    "params",
    "params_unused",
    "macs",
    "count",
    "blocks",
    "conv",
)
TOP_FIELDS = ("input_shape", "output_shape")
TOTAL_FIELDS = ("params", "params_unused", "macs", "unused_modules")


def _keyed(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """Rows by (name, occurrence): a module called twice gives two rows of the same name."""
    seen: dict[str, int] = {}
    out = {}
    for row in rows:
        seen[row["name"]] = seen.get(row["name"], 0) + 1
        out[(row["name"], seen[row["name"]])] = row
    return out


def _label(key: tuple[str, int]) -> str:
    name, n = key
    return name if n == 1 else f"{name} (call {n})"


def _field(row: dict, f: str) -> object:
    """A row's field as the document now writes it: an older golden's ``bottleneck`` is ``block``."""
    value = row.get(f)
    return Kind.BLOCK.value if f == "kind" and value == LEGACY_BLOCK_WORD else value


def compare_documents(expected: dict, got: dict) -> list[Difference]:
    """Every recorded shape, skip path, parameter and MAC count, row by row, then the totals."""
    diffs: list[Difference] = []
    for f in TOP_FIELDS:
        if expected.get(f) != got.get(f):
            diffs.append(Difference("(trace)", f, expected.get(f), got.get(f)))
    exp_rows, got_rows = _keyed(expected["rows"]), _keyed(got["rows"])
    for key, row in exp_rows.items():
        other = got_rows.get(key)
        if other is None:
            diffs.append(Difference(_label(key), "row", "present", "missing"))
            continue
        for f in ROW_FIELDS:
            a, b = _field(row, f), _field(other, f)
            if a != b:
                diffs.append(Difference(_label(key), f, a, b))
    for key in got_rows:
        if key not in exp_rows:
            diffs.append(Difference(_label(key), "row", "missing", "present"))
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
        prefix = "" if len(expected) == 1 else shape_text(e.get("input_shape")) + " "
        diffs.extend(Difference(prefix + d.row, d.field, d.expected, d.got) for d in compare_documents(e, g))
    return diffs
