"""ASCII stand-ins for the characters the table and notes use, for streams that cannot spell them.

``prepare_streams`` (:mod:`resnet_trace.cli.streams`) sets the error handler registered here on a
stdout or stderr whose encoding cannot write box drawing or arrows (``LANG=C``).
"""

from __future__ import annotations

import codecs
import unicodedata

ASCII_ERRORS = "resnet-trace-ascii"
_ASCII = {
    "\u2192": "->",  # →
    "\u2190": "<-",
    "\u2193": "v",  # ↓
    "\u2191": "^",
    "\u2026": "...",  # …
    "\u00b7": "-",  # ·
    "\u00d7": "x",  # ×
    "\u2013": "-",  # –
    "\u2014": "-",
    "\u2022": "*",
    "\u2248": "~",
    "\u2264": "<=",
    "\u2265": ">=",
    "\u2212": "-",
    "\u00a0": " ",
    "\u0394": "delta",  # Δ
    "\u2016": "|",  # ‖ (a norm's bars)
    "\u2202": "d",  # ∂
    "\u2717": "x",  # ✗
    "\u2713": "ok",  # ✓
}


def ascii_for(ch: str) -> str:
    """An ASCII stand-in for one character: box drawing becomes ``-|+``, arrows ``->``, ``Δ`` a word,
    an accented letter its base letter, anything else its ``\\uXXXX`` escape (never a bare ``?``)."""
    if ch in _ASCII:
        return _ASCII[ch]
    if "\u2500" <= ch <= "\u257f":  # box drawing
        name = unicodedata.name(ch, "")
        across = "HORIZONTAL" in name or "LEFT" in name or "RIGHT" in name
        down = "VERTICAL" in name or "UP" in name or "DOWN" in name
        return "+" if across and down else "|" if down else "-"
    if "\u2580" <= ch <= "\u259f":  # block elements (bars)
        return "#"
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
    if plain:  # é -> e
        return plain
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"  # never a bare "?"


def _transliterate(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    return "".join(ascii_for(ch) for ch in exc.object[exc.start : exc.end]), exc.end


codecs.register_error(ASCII_ERRORS, _transliterate)
