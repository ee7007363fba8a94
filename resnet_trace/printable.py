"""Ground floor: text from outside (a model's names and messages, a file's path, a golden's fields)
made safe to print. Imports nothing of the package, and no torch.

Every string a model, a file or a golden gives us is data. Printed raw, a control character
rewrites a terminal (``\\x1b]0;title\\x07``, colours, a cursor jump), a bidi override
(``\\u202e``) shows text in another order than it is read, and a line break makes one line two.
:func:`visible` writes each such character as its escape (``\\x1b``, ``\\u202e``, ``\\n``), so
what is printed is exactly one line that says what the text holds; :func:`printable` does it to
every string inside a record. Renderers and the stderr writer use them; JSON needs neither
(its own escapes do the same).
"""

from __future__ import annotations

import dataclasses
import re
from enum import Enum
from typing import Any, TypeVar

T = TypeVar("T")

#: Characters never printed as they are: C0 and C1 controls and DEL (line breaks and tabs too: a
#: cell is one line), the line and paragraph separators, the bidi embeddings, overrides, isolates
#: and marks, and lone surrogates (which no encoder can write).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every control character, line break, bidi control and lone surrogate written
    as its escape (``\\x1b``, ``\\n``, ``\\u202e``): one line, shown as it is read."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def is_visible(text: str) -> bool:
    """True when :func:`visible` would leave ``text`` as it is."""
    return _UNSAFE.search(text) is None


def printable(value: T) -> T:
    """``value`` with :func:`visible` applied to every string inside it: frozen dataclasses (copied
    with ``dataclasses.replace``), tuples, lists and dicts (keys too). Words of a closed set (an
    ``Enum``) are ours and kept as they are; anything unchanged is returned as the same object."""
    return _printable(value)


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        if isinstance(value, Enum):
            return value
        return visible(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, tuple):
        items = tuple(_printable(v) for v in value)
        if all(a is b for a, b in zip(items, value)):
            return value
        return value._make(items) if hasattr(value, "_make") else items  # a named tuple keeps its type
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changed = {}
        for f in _fields(type(value)):
            old = getattr(value, f)
            new = _printable(old)
            if new is not old:
                changed[f] = new
        return dataclasses.replace(value, **changed) if changed else value
    return value


_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    got = _FIELDS.get(cls)
    if got is None:
        got = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.init)
    return got
