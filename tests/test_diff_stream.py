"""``diff`` reads its two goldens a row at a time and compares them in step (issue 25).

The oracle is the whole-file reader, ``check``'s ``load_documents`` followed by
``compare_all``: it parses each file whole, keys every row by name and call, and is what
tests/test_diff.py checks against hand-written expectations. Here the in-step reader must give
exactly its differences in exactly its order, and refuse exactly what it refuses with its words,
on documents written by hand in every layout a golden may take. Its memory is measured in a
child: the files are never held.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_golden_scale import small_doc

from resnet_trace import goldenfile
from resnet_trace.diffing import compare_all, diff
from resnet_trace.errors import UsageError

NAMES = ["stem", "layer_1.0", "layer_1.1", "layer_2.0", "fc_layer", "relu"]


def doc(rows: list[dict], h: int = 224) -> dict:
    """The seed's document at base 4 (tests/test_golden_scale.py) holding ``rows``."""
    return {**small_doc(h), "filter": None, "rows": rows}


def row(name: str, macs: int = 0, params: int = 0, shape: int = 8) -> dict:
    return {
        "name": name,
        "kind": "block",
        "depth": "block",
        "parent": None,
        "stage": None,
        "down": None,
        "in_shape": [1, shape],
        "out_shape": [1, shape],
        "skip": None,
        "params": params,
        "params_unused": 0,
        "macs": macs,
    }


def layout(docs: list[dict], how: str) -> str:
    """The text of a golden holding ``docs`` the way ``how`` writes it."""
    if how == "compact":
        return json.dumps(docs if len(docs) > 1 else docs[0], separators=(",", ":"))
    if how == "indented":
        return json.dumps(docs if len(docs) > 1 else docs[0], indent=2)
    if how == "array":
        return json.dumps(docs)
    if how == "jsonl":
        return "".join(json.dumps(d) + "\n" for d in docs)
    if how == "jsonl-crlf-blank":
        return "\r\n\r\n".join(json.dumps(d) for d in docs) + "\r\n  \n"
    raise AssertionError(how)


LAYOUTS = ["compact", "indented", "array", "jsonl", "jsonl-crlf-blank"]


def whole(a: Path, b: Path) -> list:
    return compare_all(goldenfile.load_documents(a), goldenfile.load_documents(b))


def _outcome(a: Path, b: Path, read=lambda a, b: list(diff(a, b).differences)) -> tuple:
    """``("ok", differences)`` or ``("refused", the message)``: ``diff``'s, or ``read``'s."""
    try:
        return ("ok", read(a, b))
    except UsageError as exc:
        return ("refused", str(exc))


def in_step(a: Path, b: Path) -> list:
    """``diff``'s differences, with the whole-file reader forbidden: the in-step reader read them."""
    with mock.patch.object(goldenfile, "load_documents", side_effect=AssertionError("read whole")):
        return list(diff(a, b).differences)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


rows_st = st.lists(
    st.builds(
        row,
        st.sampled_from(NAMES),
        st.integers(0, 2),
        st.integers(0, 1),
        st.sampled_from([8, 16]),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows_a=st.lists(rows_st, min_size=1, max_size=3),
    edits=st.lists(
        st.tuples(st.sampled_from(["shuffle", "drop", "add", "macs", "same"]), st.integers(0, 99))
    ),
    extra_doc=st.booleans(),
    how_a=st.sampled_from(LAYOUTS),
    how_b=st.sampled_from(LAYOUTS),
)
def test_in_step_gives_the_whole_file_readers_differences_in_its_order(
    tmp_path, rows_a, edits, extra_doc, how_a, how_b
):
    docs_a = [doc(rs, h=200 + i) for i, rs in enumerate(rows_a)]
    docs_b = [doc([dict(r) for r in d["rows"]], h=d["input_shape"][2]) for d in docs_a]
    for what, n in edits:
        d = docs_b[n % len(docs_b)]
        rows = d["rows"]
        if what == "shuffle":
            random.Random(n).shuffle(rows)
        elif what == "drop" and rows:
            rows.pop(n % len(rows))
        elif what == "add":
            rows.insert(n % (len(rows) + 1), row(NAMES[n % len(NAMES)], macs=n))
        elif what == "macs" and rows:
            rows[n % len(rows)]["macs"] += 1
        elif what == "same":
            d["totals"]["macs"] += n % 2
    if extra_doc:
        docs_b.append(doc([row("stem")], h=199))
    a = write(tmp_path, "a.json", layout(docs_a, how_a))
    b = write(tmp_path, "b.json", layout(docs_b, how_b))
    expected = whole(a, b)
    assert in_step(a, b) == expected
    assert in_step(b, a) == whole(b, a)


def test_rows_out_of_order_keep_the_expected_files_order(tmp_path):
    """Written by hand: b holds a's rows reversed, one changed, one gone and one new; the
    differences come by a's order, the missing row in its place, the new one last."""
    a_rows = [row(n, macs=i) for i, n in enumerate(["r0", "r1", "r2", "r3"])]
    b_rows = [row("new"), row("r3", macs=3), row("r2", macs=9), row("r0", macs=0)]
    a = write(tmp_path, "a.json", json.dumps(doc(a_rows)))
    b = write(tmp_path, "b.json", json.dumps(doc(b_rows)))
    got = [(d.row, d.field, d.expected, d.got) for d in in_step(a, b)]
    assert got == [
        ("r1", "row", "present", "missing"),
        ("r2", "macs", 2, 9),
        ("new", "row", "missing", "present"),
    ]


def test_a_module_called_twice_is_two_rows_in_step(tmp_path):
    a = write(tmp_path, "a.json", json.dumps(doc([row("relu", macs=1), row("relu", macs=2)])))
    b = write(tmp_path, "b.json", json.dumps(doc([row("relu", macs=1), row("relu", macs=5)])))
    assert [(d.row, d.expected, d.got) for d in in_step(a, b)] == [("relu (call 2)", 2, 5)]


def test_several_documents_are_labelled_by_input_and_a_count_mismatch_is_one_difference(tmp_path):
    two = [doc([row("stem", macs=1)], h=200), doc([row("stem", macs=1)], h=224)]
    changed = [doc([row("stem", macs=1)], h=200), doc([row("stem", macs=4)], h=224)]
    a = write(tmp_path, "a.json", json.dumps(two))
    b = write(tmp_path, "b.jsonl", layout(changed, "jsonl"))
    assert [(d.row, d.expected, d.got) for d in in_step(a, b)] == [("1x3x224x224 stem", 1, 4)]
    c = write(tmp_path, "c.json", json.dumps(two + [doc([])]))
    assert [(d.row, d.field, d.expected, d.got) for d in in_step(a, c)] == [("(file)", "inputs", 2, 3)]


# -- what the whole-file reader refuses, refused in its words ----------------------------------------
GOOD = json.dumps(doc([row("stem"), row("fc_layer")]))
BAD_TEXTS = {
    "truncated": GOOD[:-7],
    "trailing-comma-in-rows": GOOD.replace("}],", "},],", 1),
    "nan": GOOD.replace('"macs": 0', '"macs": NaN', 1),
    "huge-number": GOOD.replace('"macs": 0', '"macs": 1e400', 1),
    "row-without-name": GOOD.replace('"name": "stem", ', "", 1),
    "rows-twice": GOOD[:-1] + ', "rows": []}',
    "rows-not-a-list": GOOD.replace('"rows": [', '"rows": 5, "x": [', 1),
    "bad-schema-word": GOOD.replace("resnet-trace/1", "resnet-trace/9"),
    "schema-type": GOOD.replace('"params": 0', '"params": "zero"', 1),
    "two-on-one-line": GOOD + " " + GOOD,
    "indented-then-more": json.dumps(json.loads(GOOD), indent=1) + "\n" + GOOD,
    "line-separator-inside": "\n".join([GOOD, GOOD.replace('"stem"', '"st\u2028em"')]),
    "bom": "\ufeff" + GOOD,
    "empty-array": "[]",
    "array-then-text": "[" + GOOD + "] x",
    "not-an-object": "[" + GOOD + ", 5]",
    "deep": "[" * 100_000 + "]" * 100_000,
    "not-utf8": None,
}


@pytest.mark.parametrize("case", sorted(BAD_TEXTS))
@pytest.mark.parametrize("bad_side", ["a", "b"])
def test_what_the_whole_file_reader_refuses_diff_refuses_in_its_words(tmp_path, case, bad_side):
    text = BAD_TEXTS[case]
    bad = tmp_path / "bad.json"
    if text is None:
        bad.write_bytes(GOOD.encode()[:50] + b"\xff\xfe" + GOOD.encode()[50:])
    else:
        bad.write_text(text, encoding="utf-8")
    good = write(tmp_path, "good.json", GOOD)
    a, b = (bad, good) if bad_side == "a" else (good, bad)
    expected = _outcome(a, b, whole)
    assert _outcome(a, b) == expected
    # A repeated key is JSON: the last one counts (here, no rows); the in-step reader leaves such a
    # file to the whole-file reader.
    assert expected[0] == ("ok" if case == "rows-twice" else "refused"), expected


def test_the_first_files_problem_is_said_first(tmp_path):
    bad_a = write(tmp_path, "a.json", GOOD.replace('"name": "fc_layer", ', ""))
    bad_b = write(tmp_path, "b.json", GOOD.replace("resnet-trace/1", "x"))
    with pytest.raises(UsageError, match="a.json.*row 1 has no name"):
        diff(bad_a, bad_b)


def test_a_fifo_is_refused_unread(tmp_path):
    fifo = tmp_path / "f.json"
    os.mkfifo(fifo)
    good = write(tmp_path, "good.json", GOOD)
    with pytest.raises(UsageError, match="not a regular file"):
        diff(good, fifo)


def test_a_value_cut_by_the_readers_window_is_read_whole(tmp_path, monkeypatch):
    """A 4-character window cuts every key, string and number: the result stands."""
    import resnet_trace.jsonstream as js

    real = js.JsonReader.__init__

    def tiny(self, fh, decoder, *, limit, chunk=1 << 20):
        real(self, fh, decoder, limit=limit, chunk=4)

    a_rows = [row(f"r{i}", macs=10**i) for i in range(12)]
    b_rows = [row(f"r{i}", macs=10**i + (i % 3 == 0)) for i in range(12)]
    a = write(tmp_path, "a.json", json.dumps(doc(a_rows), indent=3))
    b = write(tmp_path, "b.json", layout([doc(b_rows), doc([])], "jsonl"))
    c = write(tmp_path, "c.json", layout([doc(b_rows)], "compact"))
    expected = whole(a, c)
    monkeypatch.setattr(js.JsonReader, "__init__", tiny)
    assert in_step(a, c) == expected and len(expected) == 4
    assert [d.field for d in in_step(a, b)] == ["inputs"]


# -- memory: neither file is held --------------------------------------------------------------------
_MEASURE = textwrap.dedent(
    """
    import os, subprocess, sys
    # A small parent: a child's ru_maxrss starts from its parent's size at the fork.
    child = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "resnet_trace", *sys.argv[1:]],
        stderr=subprocess.PIPE, text=True,
    )
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    torch = any(line.rsplit("|", 1)[-1].strip() == "torch" for line in err.splitlines())
    print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, torch)
    """
)


def _peak_kib(a: Path, b: Path, out: Path, env: dict | None = None) -> tuple[int, bool]:
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, "diff", str(a), str(b), "--format", "csv", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    code, peak, torch_loaded = result.stdout.split()
    assert code in ("0", "1"), result.stdout + result.stderr
    return int(peak), torch_loaded == "True"


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB, as Linux gives it")
@pytest.mark.parametrize("schema", ["jsonschema", "no-jsonschema"])
def test_a_diff_of_two_large_goldens_holds_neither_file(tmp_path, schema):
    """Two 16 MB goldens of 100,000 rows, every row different (so 100,000 differences are held,
    as the result is): the peak over a diff of two tiny files stays under the two files' size.
    The whole-file reader held about six times it; issue 25 allows twice."""
    n = 100_000
    for name, macs in (("a", 0), ("b", 1)):
        rows = ",".join(json.dumps(row(f"r{i}", macs=macs), separators=(",", ":")) for i in range(n))
        head = json.dumps(doc([]), separators=(",", ":"))
        write(tmp_path, f"{name}.json", head.replace('"rows":[]', '"rows":[' + rows + "]"))
    tiny = write(tmp_path, "tiny.json", GOOD)
    both = (tmp_path / "a.json").stat().st_size + (tmp_path / "b.json").stat().st_size
    env = None
    if schema == "no-jsonschema":  # an install without the optional validator (a review found
        blocker = tmp_path / "blocker" / "jsonschema"  # every row kept there, for no check)
        blocker.mkdir(parents=True)
        (blocker / "__init__.py").write_text("raise ImportError('blocked by the test')\n")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(blocker.parent), os.environ.get("PYTHONPATH", "")]),
        }
    floor, floor_torch = _peak_kib(tiny, tiny, tmp_path / "floor.csv", env)
    peak, torch_loaded = _peak_kib(tmp_path / "a.json", tmp_path / "b.json", tmp_path / "out.csv", env)
    assert not floor_torch and not torch_loaded  # a diff reads data: no torch
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert len(lines) == n + 1 and lines[1] == "r0,macs,0,1" and lines[-1] == f"r{n - 1},macs,0,1"
    over = (peak - floor) * 1024
    assert over < both, f"{over / 2**20:.0f} MiB over the floor, files of {both / 2**20:.0f} MiB"
    print(f"{over / 2**20:.1f} MiB over a {floor / 1024:.0f} MiB floor for {both / 2**20:.1f} MiB of goldens")


def test_a_golden_that_changes_while_it_is_read_is_read_again_whole(tmp_path, monkeypatch):
    """The file is rewritten (another row) after the in-step reader's first window: the reader
    sees the change at the end and the whole-file reader reads what the file now holds."""
    import resnet_trace.jsonstream as js

    a = write(tmp_path, "a.json", json.dumps(doc([row("stem")])))
    b = write(tmp_path, "b.json", json.dumps(doc([row("stem")])))
    real = js.JsonReader._more
    readers: list = []

    def more(self, at_least):
        real(self, at_least)
        if self not in readers:
            readers.append(self)
            if len(readers) == 2:  # b's reader has its first window
                b.write_text(json.dumps(doc([row("stem"), row("fc_layer")])), encoding="utf-8")

    monkeypatch.setattr(js.JsonReader, "_more", more)
    got = [(d.row, d.field, d.expected, d.got) for d in diff(a, b).differences]
    assert len(readers) == 2 and got == [("fc_layer", "row", "missing", "present")]


# -- found by a review: the in-step reader gives up where the whole read would say something else --
def _whole_read_only(monkeypatch) -> None:
    from resnet_trace import goldenstream
    from resnet_trace.jsonstream import Unexpected

    def give_up(path):
        raise Unexpected("forced")
        yield

    monkeypatch.setattr(goldenstream, "documents", give_up)


def test_a_row_nested_near_the_recursion_limit_is_judged_as_the_whole_read_judges_it(tmp_path, monkeypatch):
    """A row parsed alone is two levels shallower than inside its document: near Python's limit
    the whole read refuses what the row alone would pass. Deeper than 200 levels, the in-step
    reader leaves the file to the whole read, at the same call depth (``diff`` forced to read whole)."""
    limit = sys.getrecursionlimit()
    good = write(tmp_path, "good.json", GOOD)
    outcomes = []
    for depth in [250, *range(limit - 80, limit + 4, 2)]:
        deep = {**row("stem"), "extra": "DEEP"}
        text = json.dumps(doc([deep, row("fc_layer")])).replace('"DEEP"', "[" * depth + "]" * depth)
        bad = write(tmp_path, "deep.json", text)
        got = _outcome(good, bad)
        with monkeypatch.context() as m:
            _whole_read_only(m)
            assert got == _outcome(good, bad), depth
        outcomes.append(got[0])
    assert "ok" in outcomes and "refused" in outcomes, outcomes  # the band was crossed


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="a regular file whose read fails (Linux)")
def test_a_read_that_fails_midway_is_cannot_be_read(tmp_path):
    good = write(tmp_path, "good.json", GOOD)
    with pytest.raises(UsageError, match=r"'/proc/self/mem' cannot be read: "):
        diff(good, Path("/proc/self/mem"))


def test_a_long_number_costs_a_few_reads_not_one_per_window(tmp_path, monkeypatch):
    """A 200,000-digit number in a 16-character window: the window doubles while the number
    goes on (about 14 reads), where growing it by one window at a time took 12,500."""
    import resnet_trace.jsonstream as js

    real_init, real_more = js.JsonReader.__init__, js.JsonReader._more
    reads = []

    def small(self, fh, decoder, *, limit, chunk=1 << 20):
        real_init(self, fh, decoder, limit=limit, chunk=16)

    def counted(self, at_least):
        reads.append(at_least)
        real_more(self, at_least)

    monkeypatch.setattr(js.JsonReader, "__init__", small)
    monkeypatch.setattr(js.JsonReader, "_more", counted)
    text = json.dumps(doc([row("stem")]))[:-1] + ', "note": 0.' + "1" * 200_000 + "}"
    a = write(tmp_path, "a.json", text)
    assert in_step(a, a) == []
    assert len(reads) < 60, len(reads)


@pytest.mark.parametrize("chunk", range(1, 9))
def test_numbers_cut_by_the_window_are_read_in_step(tmp_path, monkeypatch, chunk):
    """``1.`` or ``2e`` at a window's end is the start of a number, not the number 1: read in
    step at every cut (the whole-file reader forbidden), with the whole read's differences."""
    import resnet_trace.jsonstream as js

    real_init = js.JsonReader.__init__

    def small(self, fh, decoder, *, limit, chunk_=1 << 20, **kw):
        real_init(self, fh, decoder, limit=limit, chunk=chunk)

    head = {"note": [1.5, -0.25e-3, 2e10, 123456789012345678901234567890, -0.0]}
    a = write(tmp_path, "a.json", json.dumps(doc([row("stem", macs=12345)]) | head))
    b = write(tmp_path, "b.json", json.dumps(doc([row("stem", macs=54321)]) | head, indent=1))
    expected = whole(a, b)
    monkeypatch.setattr(js.JsonReader, "__init__", small)
    assert in_step(a, b) == expected and len(expected) == 1
