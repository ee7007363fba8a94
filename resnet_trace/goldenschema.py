"""A golden's document against the JSON Schema (``resnet-trace schema``), linear and fast on large traces.

Each row is first *relaxed* (:func:`_relaxer`: a free string becomes ``""``, a count at or above
its minimum becomes the minimum, everything else kept), and only distinct relaxed rows are
validated. A relaxed row is valid exactly when the row is, and a trace's rows share a few dozen
shapes: 300,000 rows are a few hundred validations, not 300,000. :class:`DistinctRows` takes the
rows one at a time, so a document read row by row (``diff``) is validated without holding them.
No torch; without ``jsonschema`` installed, nothing is checked here.
"""

from __future__ import annotations

import json
from typing import Any

_tools: list = []  # (the compiled schema validator, the row relaxer), once; [None] without jsonschema


def _schema_tools() -> tuple[Any, Any] | None:
    if not _tools:
        try:
            import jsonschema
        except ImportError:
            _tools.append(None)
        else:
            from importlib.resources import files

            schema = json.loads(files("resnet_trace").joinpath("schema.json").read_text(encoding="utf-8"))
            cls = jsonschema.validators.validator_for(schema)
            rows = (schema.get("properties") or {}).get("rows") or {}
            plain = set(rows) - _NOTES <= {"type", "items"} and rows.get("type") == "array"
            relax = (
                _relaxer(rows.get("items"), schema) if plain and isinstance(rows.get("items"), dict) else None
            )
            _tools.append((cls(schema), relax))
    return _tools[0]


class DistinctRows:
    """One document's rows, relaxed, each distinct one kept once with its first place in the file;
    every row kept as it is when the schema's rows are not plain enough to relax."""

    def __init__(self) -> None:
        tools = _schema_tools()
        self._checked = tools is not None  # without jsonschema nothing is validated: nothing kept
        self._relax = tools[1] if tools is not None else None
        self._seen: set[str] = set()
        self.kept: list[Any] = []
        self.index: list[int] = []

    def add(self, place: int, row: Any) -> None:
        if not self._checked:
            return
        if self._relax is not None:
            row = self._relax(row)
            key = repr(row)  # rows of one writer keep one key order; another order only dedupes less
            if key in self._seen:
                return
            self._seen.add(key)
        self.kept.append(row)
        self.index.append(place)


def schema_problem(doc: dict, rows: DistinctRows | None = None) -> str | None:
    """The first place ``doc`` breaks the JSON Schema, or None (also when jsonschema is missing).

    ``rows``: the document's rows when they were read one at a time (``doc["rows"]`` is then
    a placeholder); else they are taken from ``doc``.
    """
    tools = _schema_tools()
    if tools is None:
        return None
    import jsonschema

    if rows is None and isinstance(doc.get("rows"), list):
        rows = DistinctRows()
        for place, row in enumerate(doc["rows"]):
            rows.add(place, row)
    if rows is not None:
        doc = {**doc, "rows": rows.kept}
    error = jsonschema.exceptions.best_match(tools[0].iter_errors(doc))
    if error is None:
        return None
    path = list(error.absolute_path)
    if rows is not None and len(path) > 1 and path[0] == "rows" and isinstance(path[1], int):
        path[1] = rows.index[path[1]]  # the first row of its kind, by its place in the file
    where = ".".join(str(p) for p in path) or "the document"
    return f"{where}: {error.message[:200]}"


#: Schema keywords that say nothing about validity.
_NOTES = {"description", "title", "$comment", "examples", "default"}
#: The JSON types of a parsed value, by its Python type (a bool is an int to Python, not to JSON).
_JSON_TYPES: dict[type, tuple[str, ...]] = {
    bool: ("boolean",),
    int: ("integer", "number"),
    float: ("number",),
    str: ("string",),
    list: ("array",),
    dict: ("object",),
    type(None): ("null",),
}


def _relaxer(node: Any, root: dict) -> Any:
    """A function that rewrites a value the schema ``node`` checks into one it accepts exactly when
    it accepts the value, with the free parts made equal (a string any string may be becomes
    ``""``; a number within its only bounds becomes its minimum); None where ``node`` says more
    than these keywords can carry over (an ``enum``, a ``pattern``...), and the value stays itself.
    """
    if not isinstance(node, dict):
        return None
    ref = node.get("$ref")
    if isinstance(ref, str):
        if set(node) - _NOTES != {"$ref"} or not ref.startswith("#/"):
            return None
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        return _relaxer(target, root)
    keys = set(node) - _NOTES
    kind = node.get("type")
    types = {kind} if isinstance(kind, str) else set(kind) if isinstance(kind, list) else set()
    if keys == {"type"} and "string" in types and types <= {"string", "null"}:
        return lambda v: "" if isinstance(v, str) else v
    if (
        keys <= {"type", "minimum", "maximum"}
        and types & {"integer", "number"}
        and types <= {"integer", "number", "null"}
    ):
        low, high = node.get("minimum"), node.get("maximum")
        floats = "number" in types
        floor = low if low is not None else 0
        if high is not None and floor > high:
            return None

        def number(v: Any) -> Any:
            ok = type(v) is int or (floats and type(v) is float)
            if ok and (low is None or v >= low) and (high is None or v <= high):
                return floor
            return v

        return number
    if keys <= {"type", "items", "minItems", "maxItems"} and "array" in types and types <= {"array", "null"}:
        inner = _relaxer(node.get("items"), root)
        if inner is None:
            return None
        return lambda v: [inner(x) for x in v] if isinstance(v, list) else v
    if keys <= {"type", "properties", "required", "additionalProperties"} and types == {"object"}:
        if not isinstance(node.get("additionalProperties", True), bool):
            return None
        props = {
            k: r
            for k, sub in (node.get("properties") or {}).items()
            if (r := _relaxer(sub, root)) is not None
        }
        if not props:
            return None
        return lambda v: (
            {k: props[k](x) if k in props else x for k, x in v.items()} if isinstance(v, dict) else v
        )
    if len(keys) == 1 and keys <= {"anyOf", "oneOf"}:
        branches = node[next(iter(keys))]
        if not isinstance(branches, list) or not all(isinstance(b, dict) and "type" in b for b in branches):
            return None
        typed = [
            ({b["type"]} if isinstance(b["type"], str) else set(b["type"]), _relaxer(b, root))
            for b in branches
        ]
        by_type = {}  # a value of this Python type fits one branch alone (the others refuse its type)
        for cls, names in _JSON_TYPES.items():
            fits = [r for ts, r in typed if ts.intersection(names)]
            if len(fits) == 1 and fits[0] is not None:
                by_type[cls] = fits[0]
        if not by_type:
            return None

        def one_of(v: Any) -> Any:
            r = by_type.get(type(v))
            return r(v) if r is not None else v

        return one_of
    return None
