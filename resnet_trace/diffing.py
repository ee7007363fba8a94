"""Compare two trace documents (``check`` and ``diff``). Works on parsed JSON; no torch."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from resnet_trace.errors import UsageError
from resnet_trace.records import LEGACY_BLOCK_WORD, SCHEMA_ID, Depth, Difference, Kind, shape_text

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


#: A golden file larger than this is refused unread (a trace of the seed at --depth layer is ~100 KB).
MAX_DOCUMENT_BYTES = 64 * 2**20


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


def _parse(text: str, path: Path) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise UsageError(f"{str(path)!r} is not JSON: {exc}") from None
        except RecursionError:
            raise UsageError(f"{str(path)!r} is nested too deeply to be a trace") from None
    except RecursionError:
        raise UsageError(f"{str(path)!r} is nested too deeply to be a trace") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python will convert
        raise UsageError(f"{str(path)!r} is not usable JSON: {str(exc)[:160]}") from None


def load_documents(path: Path) -> list[dict]:
    """A saved trace: one document or an array of them (json, jsonl), checked before use.

    Each document is validated against the JSON Schema (``resnet-trace schema``) when
    ``jsonschema`` is installed, and always by the checks of what ``check`` and ``diff`` read.
    """
    data = _parse(_read_text(path), path)
    docs: list = data if isinstance(data, list) else [data]
    if not docs:
        raise UsageError(f"{str(path)!r} holds no trace")
    for i, doc in enumerate(docs):
        try:
            problem = _malformed(doc) or _schema_problem(doc)
        except RecursionError:
            problem = "it is nested too deeply"
        if problem:
            where = f" (document {i + 1})" if len(docs) > 1 else ""
            raise UsageError(f"{str(path)!r} is not a valid resnet-trace document{where}: {problem}")
    return docs


_validator: list = []  # the compiled schema validator, once; [None] without jsonschema


def _schema_problem(doc: dict) -> str | None:
    """The first place ``doc`` breaks the JSON Schema, or None (also when jsonschema is missing)."""
    if not _validator:
        try:
            import jsonschema
        except ImportError:
            _validator.append(None)
        else:
            from importlib.resources import files

            schema = json.loads(files("resnet_trace").joinpath("schema.json").read_text(encoding="utf-8"))
            cls = jsonschema.validators.validator_for(schema)
            _validator.append(cls(schema))
    validator = _validator[0]
    if validator is None:
        return None
    import jsonschema

    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path) or "the document"
    return f"{where}: {error.message[:200]}"


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


def _malformed(doc: object) -> str | None:
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
    error = doc.get("error")
    if error is not None and not (isinstance(error, dict) and isinstance(error.get("module"), str)):
        return "error is not null or an object naming a module"
    rows = doc.get("rows")
    if not isinstance(rows, list):
        return "rows is not a list"
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            return f"row {n} has no name"
    if not isinstance(doc.get("totals", {}), dict):
        return "totals is not an object"
    return None


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
