"""Reading a golden (``check``, ``diff``): bounded, parsed one document at a time, validated.

A golden is data written by someone else (docs/security.md): its bytes, its documents
(:data:`MAX_DOCUMENTS`) and its filters are bounded before use; NaN, Infinity and numbers beyond
a float are refused as read. An array or JSON lines are parsed one document at a time, and a
document whose text repeats an earlier one's is that same object, checked once: 10,000 copies of
a small document cost what one does. No torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from resnet_trace.errors import UsageError
from resnet_trace.goldenschema import schema_problem
from resnet_trace.records import SCHEMA_ID, Depth

#: A golden file larger than this is refused unread (a trace of the seed at --depth layer is ~100 KB).
MAX_DOCUMENT_BYTES = 64 * 2**20
#: A golden holding more documents than this is refused before any is traced (docs/cli.md#check).
MAX_DOCUMENTS = 10_000


def _read_text(path: Path) -> str:
    """A regular file's text, refused unread when it is a device, a FIFO or too large."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{str(path)!r} does not exist") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{str(path)!r} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{str(path)!r} is a directory, not a trace file")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{str(path)!r} is not a regular file (a device, FIFO or socket); it was not read")
    if st.st_size > MAX_DOCUMENT_BYTES:
        raise UsageError(
            f"{str(path)!r} holds {st.st_size:,} bytes, more than a trace's limit of {MAX_DOCUMENT_BYTES:,}"
        )
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise UsageError(f"{str(path)!r} grew past a trace's limit of {MAX_DOCUMENT_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{str(path)!r} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None


class _OutOfRange(ValueError):
    """A number JSON cannot hold: ``NaN``, ``Infinity``, or one too large for a float (``1e400``)."""


def _no_constant(token: str) -> object:
    raise _OutOfRange(f"{token}, which JSON does not have")


def _finite_float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise _OutOfRange(f"{token[:40]}, a number beyond JSON's range (it reads as infinity)")
    return value


def _loads(text: str) -> object:
    """Standard JSON only: ``NaN``, ``Infinity`` and numbers that overflow a float are refused as read,
    so nothing non-standard can come out of a command that prints what it read."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)


def _parse(text: str, path: Path) -> object:
    """The golden's JSON: an array (read one document at a time), one document, or JSON lines."""
    docs = _array(text, path)
    if docs is not None:
        return docs
    try:
        return _loads(text)
    except json.JSONDecodeError:
        try:
            return _lines(text, path)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{str(path)!r} is not JSON: {exc}") from None
        except RecursionError:
            raise UsageError(f"{str(path)!r} is nested too deeply to be a trace") from None
        except _OutOfRange as exc:
            raise UsageError(f"{str(path)!r} holds {exc}") from None
        except ValueError as exc:
            raise UsageError(f"{str(path)!r} is not usable JSON: {str(exc)[:160]}") from None
    except RecursionError:
        raise UsageError(f"{str(path)!r} is nested too deeply to be a trace") from None
    except _OutOfRange as exc:
        raise UsageError(f"{str(path)!r} holds {exc}") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python will convert
        raise UsageError(f"{str(path)!r} is not usable JSON: {str(exc)[:160]}") from None


def _too_many(path: Path) -> UsageError:
    return UsageError(
        f"{str(path)!r} holds more than {MAX_DOCUMENTS:,} documents, a golden's limit; split it into several"
    )


def _digest(text: str) -> bytes:
    """What a document's text is known by: a document whose text repeats an earlier one's is that
    one object (checked once), and no document's text is kept to know it."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _lines(text: str, path: Path) -> list[object]:
    """JSON lines, one document a line; a line that repeats an earlier one is the same object."""
    seen: dict[bytes, object] = {}
    docs: list[object] = []
    for line in text.splitlines():
        if line.strip():
            if len(docs) == MAX_DOCUMENTS:
                raise _too_many(path)
            key = _digest(line)
            if key not in seen:
                seen[key] = _loads(line)
            docs.append(seen[key])
    return docs


DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


def _skip(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()  # type: ignore[union-attr]


def _array(text: str, path: Path) -> list[object] | None:
    """A JSON array's documents, parsed one at a time, one whose text repeats an earlier one's the same
    object; None when the text is not one well-formed array (:func:`_parse` then reads it whole, and
    says why as it always has)."""
    pos = _skip(text, 0)
    if not text.startswith("[", pos):
        return None
    seen: dict[bytes, object] = {}
    docs: list[object] = []
    pos = _skip(text, pos + 1)
    try:
        while not (text.startswith("]", pos) and not docs):  # "[]", or a value after "[" or ","
            if len(docs) == MAX_DOCUMENTS:
                raise _too_many(path)
            doc, end = DECODER.raw_decode(text, pos)
            docs.append(seen.setdefault(_digest(text[pos:end]), doc))
            pos = _skip(text, end)
            if text.startswith("]", pos):
                break
            if not text.startswith(",", pos):
                return None
            pos = _skip(text, pos + 1)
    except (ValueError, RecursionError):  # JSONDecodeError, _OutOfRange, a number too long to convert
        return None
    return docs if _skip(text, pos + 1) == len(text) else None


def load_documents(path: Path) -> list[dict]:
    """A saved trace: one document or an array of them (json, jsonl), checked before use.

    At most :data:`MAX_DOCUMENTS`, refused before any is checked. Each distinct document is
    validated against the JSON Schema (``resnet-trace schema``) when ``jsonschema`` is
    installed, and always by the checks of what ``check`` and ``diff`` read.
    """
    data = _parse(_read_text(path), path)
    docs: list = data if isinstance(data, list) else [data]
    if not docs:
        raise UsageError(f"{str(path)!r} holds no trace")
    if len(docs) > MAX_DOCUMENTS:
        raise _too_many(path)
    checked: set[int] = set()  # a repeated document is one object: checked once
    for i, doc in enumerate(docs):
        if id(doc) in checked:
            continue
        checked.add(id(doc))
        try:
            problem = malformed(doc) or schema_problem(doc)
        except RecursionError:
            problem = "it is nested too deeply"
        if problem:
            where = f" (document {i + 1})" if len(docs) > 1 else ""
            raise UsageError(f"{str(path)!r} is not a valid resnet-trace document{where}: {problem}")
    return docs


def _is_shape(value: object, length: int | None = None) -> bool:
    return (
        isinstance(value, list)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        and (length is None or len(value) == length)
    )


def _inputs_problem(value: object) -> str | None:
    """What is wrong with a document's ``inputs`` list, when it has one."""
    if value is None:
        return None
    from resnet_trace.inputs import DTYPE_WORDS

    if not isinstance(value, list) or not value or len(value) > 64:
        return "inputs is not a list of 1 to 64 tensors"
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            return f"inputs[{i}] is not an object"
        name = t.get("name")
        if name is not None and not (isinstance(name, str) and name.isidentifier() and len(name) <= 200):
            return f"inputs[{i}].name is not a Python name or null"
        if not _is_shape(t.get("shape")) or not t.get("shape") or 0 in t["shape"] or len(t["shape"]) > 16:
            return f"inputs[{i}].shape is not a list of 1 to 16 positive integers"
        if t.get("dtype") not in DTYPE_WORDS:
            return f"inputs[{i}].dtype is not a torch dtype word"
        for bound in ("low", "high"):
            v = t.get(bound)
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or abs(v) == float("inf")
            ):
                return f"inputs[{i}].{bound} is not a finite number or null"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def named_row(row: object) -> bool:
    """What ``check`` and ``diff`` need of a row: an object with a name."""
    return isinstance(row, dict) and isinstance(row.get("name"), str)


def malformed(doc: object) -> str | None:
    """What a check or diff would trip over, in words; None when the document is usable."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    if doc.get("schema") != SCHEMA_ID:
        return f"its schema is {str(doc.get('schema'))[:40]!r}, not {SCHEMA_ID!r}"
    source = (
        (doc.get("model") or {}).get("source", "builtin") if isinstance(doc.get("model"), dict) else "builtin"
    )
    if source == "builtin" and not _is_shape(doc.get("input_shape"), 4):
        return "input_shape is not a list of 4 integers"
    if not _is_shape(doc.get("input_shape")) or not doc.get("input_shape"):
        return "input_shape is not a list of integers"
    problem = _inputs_problem(doc.get("inputs"))
    if problem is not None:
        return problem
    if doc.get("output_shape") is not None and not _is_shape(doc.get("output_shape")):
        return "output_shape is not a list of integers or null"
    model = doc.get("model")
    if not isinstance(model, dict):
        return "model is not an object"
    for key in ("base_dim", "num_classes"):
        value = model.get(key)
        if value is not None and (not _is_int(value) or value < 1):
            return f"model.{key} is not a positive integer"
    for key in ("source", "block", "variant", "head"):
        if key in model and not isinstance(model[key], str):
            return f"model.{key} is not a string"
    skip = model.get("skip")
    if skip is not None and not (isinstance(skip, list) and all(isinstance(s, str) for s in skip)):
        return "model.skip is not a list of strings"
    if doc.get("depth", Depth.BLOCK) not in [d.value for d in Depth]:  # a list: the value may be unhashable
        return f"depth {str(doc.get('depth'))[:40]!r} is not stage, block or layer"
    if not isinstance(doc.get("collapsed", False), bool):
        return "collapsed is not true or false"
    if doc.get("filter") is not None and not isinstance(doc.get("filter"), str):
        return "filter is not a string or null"
    if doc.get("filter"):
        problem = filter_problem(doc["filter"])
        if problem is not None:
            return f"its filter {doc['filter'][:60]!r} {problem}"
    error = doc.get("error")
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("module"), str)):
        return "error is not null or an object naming a module"
    rows = doc.get("rows")
    if not isinstance(rows, list):
        return "rows is not a list"
    for n, row in enumerate(rows):
        if not named_row(row):
            return f"row {n} has no name"
    if not isinstance(doc.get("totals", {}), dict):
        return "totals is not an object"
    return None


#: A golden's filter is data: a regular expression of at most this many characters ...
MAX_FILTER_CHARS = 1000
#: ... whose counted repetitions (``a{n}``, ``a{m,n}``) go to at most this count ...
MAX_FILTER_COUNT = 1000
#: ... and whose matching against the re-traced rows ``check`` stops after this many seconds.
FILTER_SECONDS = 5.0


def filter_problem(pattern: str) -> str | None:
    """Why a golden's recorded ``filter`` is not a plain pattern, or None when it is one.

    ``check`` matches it against every row's name, and Python's ``re`` backtracks: a pattern from
    someone else could take hours on one name. A plain pattern has no backreference (``\\1``,
    ``(?(1)...)``), no repetition of something that itself repeats or alternates (``(a+)+``,
    ``(a|ab)*``: the shapes of catastrophic backtracking), no count above 1,000 (``a{4294967296}``),
    and at most 1,000 characters. ``check`` still stops it after 5 seconds (:data:`FILTER_SECONDS`).
    """
    if len(pattern) > MAX_FILTER_CHARS:
        return f"is longer than {MAX_FILTER_CHARS:,} characters"
    try:
        import re._parser as sre_parse  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - Python 3.10
        import sre_parse  # type: ignore[no-redef,unused-ignore]
    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, OverflowError, RecursionError, ValueError, MemoryError) as exc:
        return f"is not a regular expression Python can use: {str(exc)[:120]}"
    const = sre_parse  # the opcodes: MAX_REPEAT and the others, as the parser names them
    repeats = {str(op) for op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")}
    todo: list[tuple[Any, bool]] = [(parsed, False)]  # (items, inside a repetition)
    while todo:
        items, inside = todo.pop()
        for op, av in items:
            name = str(op)
            if name in ("GROUPREF", "GROUPREF_EXISTS"):
                return "refers back to a group (a backreference): not a plain pattern"
            if name in repeats:
                low, high, body = av
                counted = high != const.MAXREPEAT
                if low > MAX_FILTER_COUNT or (counted and high > MAX_FILTER_COUNT):
                    return f"repeats something more than {MAX_FILTER_COUNT:,} times: not a plain pattern"
                if inside and high > 1:
                    return "repeats something that itself repeats (a nested quantifier): not a plain pattern"
                todo.append((body, inside or high > 1))
            elif name == "BRANCH":
                if inside:
                    return "repeats an alternation ((a|ab)*): not a plain pattern"
                todo.extend((branch, inside) for branch in av[1])
            elif name == "SUBPATTERN":
                todo.append((av[-1], inside))
            elif name in ("ASSERT", "ASSERT_NOT"):
                todo.append((av[1], inside))
            elif name == "ATOMIC_GROUP":
                todo.append((av, inside))
    return None
