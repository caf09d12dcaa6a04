"""Resident ID numbers (居民身份证号码, GB 11643-1999): normalise, verify the check digit, read
the birth date and sex.

Accepted spellings: lowercase ``x``, full-width digits (１２３…), spaces and dashes anywhere —
all normalised to 18 ASCII characters with an upper-case ``X``.

15-digit legacy numbers (issued before 1999, retired in 2013) are **refused**: they carry no
check digit, so a typo cannot be detected, and the 18-digit number an elder holds today is what
every other system uses. The reason names the fix (write the 18-digit number from the card).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from storage.enums import Sex
from storage.ledger._text import squash_spaces, to_halfwidth

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_SHAPE = re.compile(r"^\d{17}[\dX]$")
# Province-level codes in use (11 Beijing … 82 Macao); anything else is a typo.
_PROVINCES = frozenset(
    [
        "11",
        "12",
        "13",
        "14",
        "15",
        "21",
        "22",
        "23",
        "31",
        "32",
        "33",
        "34",
        "35",
        "36",
        "37",
        "41",
        "42",
        "43",
        "44",
        "45",
        "46",
        "50",
        "51",
        "52",
        "53",
        "54",
        "61",
        "62",
        "63",
        "64",
        "65",
        "71",
        "81",
        "82",
    ]
)
MIN_BIRTH = date(1880, 1, 1)


class IdNumberError(ValueError):
    """An ID number that is not valid; ``str(exc)`` is the reason in Chinese."""


@dataclass(frozen=True)
class IdNumber:
    number: str  # 18 characters, normalised
    birth_date: date
    sex: Sex
    region_code: str  # first six digits (county of first registration)


def check_digit(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits (ISO 7064 MOD 11-2)."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def normalise_id(raw: str) -> str:
    """ASCII, no spaces or dashes, upper-case X. Does not validate."""
    return squash_spaces(to_halfwidth(raw)).replace("-", "").upper()


def parse_id(raw: str, *, today: date | None = None) -> IdNumber:
    """Validate and decode; raise :class:`IdNumberError` with a Chinese reason otherwise."""
    s = normalise_id(raw)
    if not s:
        raise IdNumberError("身份证号为空")
    if len(s) == 15 and s.isdigit():
        raise IdNumberError("这是15位旧身份证号（无校验位，无法核验），请填写18位身份证号")
    if len(s) != 18:
        raise IdNumberError(f"身份证号应为18位，这里是{len(s)}位")
    if not _SHAPE.match(s):
        raise IdNumberError("身份证号只能由数字组成，最后一位可以是X")
    if s[:2] not in _PROVINCES:
        raise IdNumberError("身份证号前两位不是有效的省份代码")
    try:
        born = date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        raise IdNumberError("身份证号中的出生日期（第7–14位）不是有效日期") from None
    if born < MIN_BIRTH or (today is not None and born > today):
        raise IdNumberError("身份证号中的出生日期不合理")
    if check_digit(s[:17]) != s[17]:
        raise IdNumberError("身份证号校验位不正确（可能有数字填错）")
    sex = Sex.MALE if int(s[16]) % 2 == 1 else Sex.FEMALE
    return IdNumber(number=s, birth_date=born, sex=sex, region_code=s[:6])


def make_id(region_code: str, born: date, sequence: int) -> str:
    """Build a valid ID number (for samples and tests): ``sequence`` 0–999, odd = male."""
    if not 0 <= sequence <= 999 or len(region_code) != 6:
        raise ValueError("region_code must be 6 digits and sequence 0–999")
    first17 = f"{region_code}{born:%Y%m%d}{sequence:03d}"
    return first17 + check_digit(first17)
