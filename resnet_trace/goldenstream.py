"""A golden read one row at a time, for ``diff``: a document's rows are handed out as they are
parsed and dropped, so comparing two goldens holds only what differs between them.

It reads what :func:`resnet_trace.goldenfile.load_documents` reads (one document, an array of
them, or JSON lines) and accepts exactly what it accepts: the same decoder, the same checks
(:func:`~resnet_trace.goldenfile.malformed`, the JSON Schema through
:class:`~resnet_trace.goldenschema.DistinctRows`). It never says *why* a file is wrong: anything
unexpected is :class:`~resnet_trace.jsonstream.Unexpected`, and the caller reads the file whole
through ``load_documents``, which does. No torch.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from resnet_trace.goldenfile import DECODER, MAX_DOCUMENT_BYTES, MAX_DOCUMENTS, malformed, named_row
from resnet_trace.goldenschema import DistinctRows, schema_problem
from resnet_trace.jsonstream import JsonReader, Unexpected


class StreamedDocument:
    """One document: :meth:`rows` yields its rows in file order; once they are all read, ``head``
    holds every other field (``rows`` is ``[]`` at its place), the document has been checked,
    and ``last`` says whether it is the file's last document."""

    def __init__(self, reader: JsonReader, is_last: Callable[[], bool], valid: set[str]) -> None:
        self._reader = reader
        self._is_last = is_last
        self._valid = valid  # heads and distinct rows already found valid: a repeat is checked once
        self.head: dict = {}
        self.done = False
        self.last = False
        self.end_breaks = 0

    def rows(self) -> Iterator[dict]:
        r, head = self._reader, self.head
        distinct = DistinctRows()
        r.take("{")
        if r.peek() == "}":
            r.take("}")
        else:
            while True:
                key = r.key()
                if key in head:  # a repeated key: the whole-file reader keeps the last; let it
                    raise Unexpected("a repeated key")
                if key == "rows" and r.peek() == "[":
                    head["rows"] = []
                    yield from self._rows(distinct)
                else:
                    head[key] = r.value()
                if r.peek() == ",":
                    r.take(",")
                    continue
                r.take("}")
                break
        self.end_breaks = r.consumed_breaks()
        key = repr((head, distinct.kept))
        if key not in self._valid:
            if malformed(head) or schema_problem(head, distinct):
                raise Unexpected("not a valid document")
            self._valid.add(key)
        self.last = self._is_last()
        self.done = True

    def _rows(self, distinct: DistinctRows) -> Iterator[dict]:
        r = self._reader
        r.take("[")
        if r.peek() == "]":
            r.take("]")
            return
        place = 0
        while True:
            row = r.value()
            if not named_row(row):
                raise Unexpected("a row without a name")
            distinct.add(place, row)
            place += 1
            yield row  # type: ignore[misc]
            if r.peek() == ",":
                r.take(",")
                continue
            r.take("]")
            return


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _open(path: Path) -> int:
    """A descriptor on the regular file ``path``, opened without blocking (never a FIFO's reader)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise Unexpected("not a regular file")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError) as exc:
        raise Unexpected("cannot be opened") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DOCUMENT_BYTES:
        os.close(fd)
        raise Unexpected("not a regular file of a golden's size")
    return fd


def documents(path: Path) -> Generator[StreamedDocument, None, None]:
    """The documents of the golden ``path``, one at a time; read each one's rows before the next.

    The file must end unchanged (size, times, inode) when its last document is read: a file
    written to while it was read is :class:`Unexpected`, and so read again whole.
    """
    with os.fdopen(_open(path), "rb") as fh:
        before = _identity(os.fstat(fh.fileno()))
        yield from _documents(JsonReader(fh, DECODER, limit=MAX_DOCUMENT_BYTES))
        if _identity(os.fstat(fh.fileno())) != before:
            raise Unexpected("changed while it was read")


def _documents(r: JsonReader) -> Generator[StreamedDocument, None, None]:
    """One document, an array of them, or JSON lines (one document a line, on lines of their own)."""
    valid: set[str] = set()
    first = r.peek()
    if first == "[":
        r.take("[")
        for _ in range(MAX_DOCUMENTS):
            if r.peek() != "{":  # also "[]": a golden with no trace
                raise Unexpected("not a document")
            doc = StreamedDocument(r, lambda: r.peek() == "]", valid)
            yield doc
            if not doc.done:
                raise Unexpected("a document left unread")
            if r.peek() == "]":
                r.take("]")
                if r.peek() != "":
                    raise Unexpected("text after the array")
                return
            r.take(",")
        raise Unexpected("too many documents")
    if first != "{":
        raise Unexpected("not a document")
    # One document, or JSON lines: one document a line, on lines of their own.
    for n in range(MAX_DOCUMENTS):
        start = r.consumed_breaks()
        doc = StreamedDocument(r, lambda: r.peek() == "", valid)
        yield doc
        if not doc.done:
            raise Unexpected("a document left unread")
        several = doc.end_breaks > start  # a document over several lines is not one of JSON lines
        if several and n > 0:
            raise Unexpected("not JSON lines")
        if r.peek() == "":
            return
        if several or r.peek() != "{" or r.consumed_breaks() == doc.end_breaks:
            raise Unexpected("not JSON lines")
    raise Unexpected("too many documents")
