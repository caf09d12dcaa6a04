"""Masking of ID and phone numbers for display and logs (2301**********123X, 138****5678)."""

from __future__ import annotations

import logging
import re

# 18-digit resident ID (last may be X), 11-digit mobile (optionally +86), landline with area code.
_ID_RE = re.compile(r"(?<!\d)(\d{6})(\d{8})(\d{3}[\dXx])(?!\d)")
_MOBILE_RE = re.compile(r"(?<!\d)((?:\+?86[- ]?)?1[3-9]\d)[- ]?(\d{4})[- ]?(\d{4})(?!\d)")
_LANDLINE_RE = re.compile(r"(?<!\d)(0\d{2,3})[- ]?(\d{3,4})(\d{4})(?!\d)")


def mask_id(id_number: str) -> str:
    """2301**********123X style: the first four and last four characters stay."""
    s = id_number.strip()
    if len(s) <= 8:
        return "*" * len(s)
    return s[:4] + "*" * (len(s) - 8) + s[-4:]


def mask_phone(phone: str) -> str:
    """138****5678 for mobiles; 0451-****5678 for landlines (the area code stays)."""
    s = phone.strip()
    if "-" in s:
        area, local = s.split("-", 1)
        return f"{area}-{'*' * max(len(local) - 4, 0)}{local[-4:]}"
    if len(s) == 11 and s.startswith("1"):
        return s[:3] + "****" + s[-4:]
    if len(s) <= 4:
        return "*" * len(s)
    return s[: max(len(s) - 8, 0)] + "*" * (min(len(s), 8) - 4) + s[-4:]


def mask_text(text: str) -> str:
    """Mask every ID and phone number found anywhere in free text."""
    text = _ID_RE.sub(lambda m: m.group(1)[:4] + "*" * 10 + m.group(3)[-4:], text)
    text = _MOBILE_RE.sub(lambda m: m.group(1)[-3:] + "****" + m.group(3), text)
    text = _LANDLINE_RE.sub(lambda m: f"{m.group(1)}-{'*' * len(m.group(2))}{m.group(3)}", text)
    return text


class MaskingFilter(logging.Filter):
    """A logging filter that masks personal numbers in every record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        masked = mask_text(message)
        if masked != message or record.args:
            record.msg = masked
            record.args = None
        return True
