"""JSON read from a file a chunk at a time: the structure by hand, each value by :mod:`json`.

``diff`` compares two goldens of any size row by row, so neither file is held: :class:`JsonReader`
keeps a window of the file's text, hands out one value at a time (``json``'s own scanner, with
the caller's decoder), and reads the structure around those values (``[``, ``{``, ``"key":``,
``,``) itself. A value cut by the window's edge is parsed again once more text is read; the window
grows only as long as the one value being read. Any departure from the expected structure is
:class:`Unexpected`; callers then read the file whole to say exactly what is wrong. No torch.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import BinaryIO

#: JSON's whitespace.
_SPACE = re.compile(r"[ \t\n\r]*")
#: Everything ``str.splitlines`` breaks a line at: JSON lines are lines in its sense.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
#: What may follow a number's first digits: a number the window ends in may go on past it.
_NUMBER_TAIL = re.compile(r"[0-9.eE+\-]*\Z")
#: A value nested deeper than this is :class:`Unexpected`: parsed alone, a value is shallower than
#: inside its document, and whether Python's recursion limit refuses it is the whole read's to say.
MAX_DEPTH = 200


class Unexpected(Exception):
    """The text is not the structure the reader was asked for (or is not JSON, or not UTF-8)."""


class JsonReader:
    """One UTF-8 JSON text read through a window of ``chunk`` characters or so.

    :meth:`consumed_breaks` counts the line breaks (:data:`LINE_BREAKS`) in every character consumed so far,
    so a caller can tell whether a value spanned lines. ``limit`` bounds the bytes read.
    """

    def __init__(self, fh: BinaryIO, decoder: json.JSONDecoder, *, limit: int, chunk: int = 1 << 18) -> None:
        self._fh = fh
        self._decoder = decoder
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._limit = limit
        self._chunk = chunk
        self._read = 0
        self.text = ""
        self.pos = 0
        self.eof = False
        self._breaks = 0  # line breaks in text[:_counted] and in the text dropped before it
        self._counted = 0

    def _more(self, at_least: int) -> None:
        """Append at least ``at_least`` more characters (fewer only at the end of the file)."""
        self.consumed_breaks()  # counted before the consumed text is dropped
        parts = [self.text[self.pos :]]
        got = 0
        while got < at_least and not self.eof:
            try:
                data = self._fh.read(max(self._chunk, at_least - got))
            except OSError as exc:  # a failing disk: the whole read says it in its words
                raise Unexpected("cannot be read") from exc
            self._read += len(data)
            if self._read > self._limit:
                raise Unexpected("larger than the limit")
            try:
                piece = self._utf8.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                raise Unexpected("not UTF-8") from exc
            self.eof = not data
            parts.append(piece)
            got += len(piece)
        self.text, self.pos, self._counted = "".join(parts), 0, 0

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the file), not consumed."""
        while True:
            end = _SPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if end < len(self.text):
                self.pos = end
                return self.text[end]
            if self.eof:
                self.pos = end
                return ""
            self.pos = end
            self._more(self._chunk)

    def take(self, char: str) -> None:
        """Consume ``char``, the next character that is not whitespace; :class:`Unexpected` if it is not."""
        if self.peek() != char:
            raise Unexpected(f"expected {char!r}")
        self.pos += 1

    def value(self) -> object:
        """The next JSON value, whole."""
        self.peek()
        while True:
            try:
                value, end = self._decoder.raw_decode(self.text, self.pos)
            except (ValueError, RecursionError) as exc:  # a value cut short, or one that is wrong
                if self.eof:
                    raise Unexpected(str(exc)[:200]) from exc
                self._more(len(self.text) - self.pos + self._chunk)  # the window doubles: linear
                continue
            if not self.eof and _NUMBER_TAIL.match(self.text, end):  # a number may go on past the window
                self._more(len(self.text) - self.pos + self._chunk)
                continue
            if self.text.count("[", self.pos, end) + self.text.count("{", self.pos, end) > MAX_DEPTH:
                if _deeper_than(value, MAX_DEPTH):
                    raise Unexpected("nested deeply")
            self.pos = end
            return value

    def key(self) -> str:
        """An object's next key and its colon."""
        if self.peek() != '"':
            raise Unexpected("expected a key")
        key = self.value()
        self.take(":")
        return key  # type: ignore[return-value]

    def consumed_breaks(self) -> int:
        """Line breaks in everything consumed so far (each character is counted once)."""
        if self.pos > self._counted:
            self._breaks += sum(self.text.count(c, self._counted, self.pos) for c in LINE_BREAKS)
            self._counted = self.pos
        return self._breaks


def _deeper_than(value: object, limit: int) -> bool:
    """Whether ``value`` nests lists and dicts more than ``limit`` deep (walked without recursion)."""
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            todo.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False
