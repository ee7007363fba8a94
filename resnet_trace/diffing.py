"""Compare two trace documents (``check`` and ``diff``) field by field. Works on parsed JSON; no torch.

Reading a golden (bounded, parsed one document at a time, validated) is :mod:`resnet_trace.goldenfile`;
``diff`` reads its two files a row at a time (:mod:`resnet_trace.goldenstream`) and compares them in
step, so it holds the differences and the rows out of order, not the files.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_trace.records import LEGACY_BLOCK_WORD, Difference, Differences, Kind, shape_text

if TYPE_CHECKING:
    from resnet_trace.goldenstream import StreamedDocument

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


def _top(expected: dict, got: dict) -> list[Difference]:
    return [
        Difference("(trace)", f, expected.get(f), got.get(f))
        for f in TOP_FIELDS
        if expected.get(f) != got.get(f)
    ]


def _row_differences(key: tuple[str, int], row: dict, other: dict) -> Iterator[Difference]:
    for f in ROW_FIELDS:
        a, b = _field(row, f), _field(other, f)
        if a != b:
            yield Difference(_label(key), f, a, b)


def _tail(expected: dict, got: dict) -> list[Difference]:
    """The totals and the module a stopped forward named."""
    diffs = []
    exp_tot, got_tot = expected.get("totals") or {}, got.get("totals") or {}
    for f in TOTAL_FIELDS:
        if exp_tot.get(f) != got_tot.get(f):
            diffs.append(Difference("(totals)", f, exp_tot.get(f), got_tot.get(f)))
    exp_err = (expected.get("error") or {}).get("module")
    got_err = (got.get("error") or {}).get("module")
    if exp_err != got_err:
        diffs.append(Difference("(trace)", "error.module", exp_err, got_err))
    return diffs


def compare_documents(expected: dict, got: dict) -> list[Difference]:
    """Every recorded shape, skip path, parameter and MAC count, row by row, then the totals."""
    diffs = _top(expected, got)
    exp_rows, got_rows = _keyed(expected["rows"]), _keyed(got["rows"])
    for key, row in exp_rows.items():
        other = got_rows.get(key)
        if other is None:
            diffs.append(Difference(_label(key), "row", "present", "missing"))
        else:
            diffs.extend(_row_differences(key, row, other))
    for key in got_rows:
        if key not in exp_rows:
            diffs.append(Difference(_label(key), "row", "missing", "present"))
    return diffs + _tail(expected, got)


def compare_all(expected: list[dict], got: list[dict]) -> list[Difference]:
    if len(expected) != len(got):
        return [Difference("(file)", "inputs", len(expected), len(got))]
    diffs: list[Difference] = []
    for e, g in zip(expected, got):
        prefix = "" if len(expected) == 1 else shape_text(e.get("input_shape")) + " "
        diffs.extend(Difference(prefix + d.row, d.field, d.expected, d.got) for d in compare_documents(e, g))
    return diffs


def _key(row: dict, counts: dict[str, Any], side: int) -> tuple[str, int]:
    """The row's (name, call number) on ``side`` (0 expected, 1 got). ``counts`` holds both sides'
    counts of a name: one int while they are equal (rows in step: a small, shared int), else a pair."""
    name = row["name"]
    held = counts.get(name, 0)
    pair = [held, held] if isinstance(held, int) else list(held)
    pair[side] += 1
    counts[name] = pair[0] if pair[0] == pair[1] else tuple(pair)
    return name, pair[side]


def _compare_streamed(expected: StreamedDocument, got: StreamedDocument) -> list[Difference]:
    """:func:`compare_documents` on two documents read in step, a row of each at a time.

    Rows in the same order are compared as they come and dropped; a row whose partner has not come
    yet waits (``waiting_*``) until it does, or to the end, where it is a missing or an extra row.
    Differences keep :func:`compare_documents`' order: by the expected row's place, then the extra rows.
    """
    counts: dict[str, Any] = {}  # each name once, with both sides' counts
    waiting_e: dict[tuple[str, int], tuple[int, dict]] = {}
    waiting_g: dict[tuple[str, int], dict] = {}
    diffs: list[Difference] = []
    places = array("q")  # the expected row's place of each difference, for the order
    in_order = True

    def found(place: int, key: tuple[str, int], row: dict, other: dict) -> None:
        nonlocal in_order
        for d in _row_differences(key, row, other):
            if places and places[-1] > place:
                in_order = False
            diffs.append(d)
            places.append(place)

    rows_e, rows_g = expected.rows(), got.rows()
    place = 0
    while True:
        row_e, row_g = next(rows_e, None), next(rows_g, None)
        if row_e is None and row_g is None:
            break
        if row_e is not None and row_g is not None and row_g["name"] == row_e["name"]:
            row_g["name"] = row_e["name"]  # one string for both counts: a name is held once
        key_e = _key(row_e, counts, 0) if row_e is not None else None
        key_g = _key(row_g, counts, 1) if row_g is not None else None
        if key_e is not None and key_e == key_g:
            found(place, key_e, row_e, row_g)  # type: ignore[arg-type]
        else:
            if key_e is not None:
                if key_e in waiting_g:
                    found(place, key_e, row_e, waiting_g.pop(key_e))  # type: ignore[arg-type]
                else:
                    waiting_e[key_e] = (place, row_e)  # type: ignore[assignment]
            if key_g is not None:
                if key_g in waiting_e:
                    at, row = waiting_e.pop(key_g)
                    found(at, key_g, row, row_g)  # type: ignore[arg-type]
                else:
                    waiting_g[key_g] = row_g  # type: ignore[assignment]
        place += key_e is not None
    for key, (at, _row) in waiting_e.items():
        if places and places[-1] > at:
            in_order = False
        diffs.append(Difference(_label(key), "row", "present", "missing"))
        places.append(at)
    if not in_order:
        order = sorted(range(len(diffs)), key=places.__getitem__)  # stable: a row's fields keep their order
        diffs = [diffs[i] for i in order]
    diffs.extend(Difference(_label(key), "row", "missing", "present") for key in waiting_g)
    return _top(expected.head, got.head) + diffs + _tail(expected.head, got.head)


def _drain(docs: Iterator[StreamedDocument]) -> int:
    """Read (and so check) the rest of a golden's documents; how many there were."""
    n = 0
    for doc in docs:
        for _ in doc.rows():
            pass
        n += 1
    return n


def _streamed(a: Path, b: Path) -> list[Difference]:
    from resnet_trace.goldenstream import documents

    docs_a, docs_b = documents(a), documents(b)
    try:
        diffs: list[Difference] = []
        single = True
        n = 0
        while True:
            doc_a, doc_b = next(docs_a, None), next(docs_b, None)
            if doc_a is None or doc_b is None:
                if doc_a is None and doc_b is None:
                    return diffs
                left = [d for d in (doc_a, doc_b) if d is not None]
                _drain(iter(left))
                count_a = n + (doc_a is not None) + _drain(docs_a)
                count_b = n + (doc_b is not None) + _drain(docs_b)
                return [Difference("(file)", "inputs", count_a, count_b)]
            found = _compare_streamed(doc_a, doc_b)
            if n == 0:
                single = doc_a.last
            if not single:
                prefix = shape_text(doc_a.head.get("input_shape")) + " "
                found = [Difference(prefix + d.row, d.field, d.expected, d.got) for d in found]
            diffs.extend(found)
            n += 1
    finally:
        docs_a.close()
        docs_b.close()


def diff(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> Differences:
    """Compare two saved traces field by field: every shape, skip path, parameter and MAC count.

    The files are read a row at a time, in step; a file that is not a golden (or is one written
    in a way the row-at-a-time reader does not follow) is read whole, and said wrong as ``check``
    would say it.
    """
    from resnet_trace.goldenfile import load_documents
    from resnet_trace.jsonstream import Unexpected

    pa, pb = Path(a), Path(b)
    try:
        differences = _streamed(pa, pb)
    except (Unexpected, RecursionError):
        differences = compare_all(load_documents(pa), load_documents(pb))
    return Differences(expected=str(a), got=str(b), differences=tuple(differences))
