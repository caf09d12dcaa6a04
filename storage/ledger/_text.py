"""Small text helpers shared by the ledger parsers: full-width to ASCII, cell text cleanup."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"[\s\u3000\u00a0\u200b\ufeff]+")


def to_halfwidth(text: str) -> str:
    """Full-width digits, letters and punctuation (０１２，＋－) become ASCII; other text stays."""
    return unicodedata.normalize("NFKC", text)


def squash_spaces(text: str) -> str:
    """Remove every kind of whitespace (ASCII, ideographic, no-break, zero-width, BOM)."""
    return _SPACES.sub("", text)


def clean(text: str) -> str:
    """Trim a cell's text and collapse inner runs of whitespace to one space."""
    return _SPACES.sub(" ", text).strip()
