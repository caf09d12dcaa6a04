"""Chinese phone numbers: normalise, classify mobile/landline, split a cell holding several.

Normal forms: mobiles are 11 digits (``13900001234``); landlines keep their area code with one
dash (``0451-86123456``). ``+86``/``0086``/``86`` prefixes, spaces, dashes, brackets and full-width
digits are accepted. Anything else is refused with a Chinese reason (:class:`PhoneError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storage.enums import PhoneKind
from storage.ledger._text import squash_spaces, to_halfwidth
from storage.masking import mask_phone

_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_LOCAL = re.compile(r"^[2-9]\d{6,7}$")
_DROP = str.maketrans("", "", "-()（）.·—_")
# Unambiguous separators between several numbers in one cell (space is handled separately).
_SEPARATORS = re.compile(r"[、，,；;/|\\\n\r]+|或")


class PhoneError(ValueError):
    """Not a usable phone number; ``str(exc)`` is the reason in Chinese."""


@dataclass(frozen=True)
class Phone:
    number: str  # normal form: 13900001234 or 0451-86123456
    kind: PhoneKind

    @property
    def masked(self) -> str:
        return mask_phone(self.number)

    @property
    def dial_string(self) -> str:
        """Digits only, as dialled inside China."""
        return self.number.replace("-", "")


def normalise_phone(raw: str) -> Phone:
    """Parse one number; raise :class:`PhoneError` (Chinese reason) if it is not one."""
    s = squash_spaces(to_halfwidth(str(raw))).translate(_DROP)
    if not s:
        raise PhoneError("电话号码为空")
    if any(w in s for w in ("转", "ext", "EXT", "分机")):
        raise PhoneError("不支持分机号，请只填写总机号码")
    international = False
    if s.startswith("+"):
        if not s.startswith("+86"):
            raise PhoneError("只支持中国大陆号码（+86）")
        s, international = s[3:], True
    elif s.startswith("0086"):
        s, international = s[4:], True
    elif s.startswith("86") and len(s) == 13 and _MOBILE.match(s[2:]):
        s = s[2:]
    if not s.isdigit():
        raise PhoneError("电话号码含有非数字字符")
    if international and not s.startswith("0") and not _MOBILE.match(s):
        s = "0" + s  # +86 451 86123456 → 0451 86123456; +86 10 … → 010 …
    if s.startswith("1"):
        if _MOBILE.match(s):
            return Phone(s, PhoneKind.MOBILE)
        raise PhoneError(f"手机号应为11位、以13–19开头，这里是{len(s)}位")
    if s.startswith("0"):
        area_len = 3 if s[1:2] in ("1", "2") else 4
        area, local = s[:area_len], s[area_len:]
        if s[1:2] == "0" or not _LOCAL.match(local):
            raise PhoneError("座机号格式不对：应为区号加7–8位号码，如 0451-86123456")
        return Phone(f"{area}-{local}", PhoneKind.LANDLINE)
    if _LOCAL.match(s):
        raise PhoneError("座机号缺少区号，请写成如 0451-86123456")
    raise PhoneError("不是有效的电话号码")


def split_phones(cell: str) -> list[str]:
    """Split a cell holding several numbers (、，,；/ or spaces) into the raw numbers.

    Spaces inside one number (``139 0000 1234``) are told apart from spaces between numbers by
    joining space-separated pieces until they form a valid number. Invalid leftovers are kept
    as their own item so the caller can report them.
    """
    out: list[str] = []
    for piece in _SEPARATORS.split(to_halfwidth(cell)):
        tokens = piece.split()
        current: list[str] = []
        for tok in tokens:
            current.append(tok)
            try:
                normalise_phone("".join(current))
            except PhoneError:
                continue
            out.append(" ".join(current))
            current = []
        if current:
            out.append(" ".join(current))
    return [p for p in out if p.strip()]
