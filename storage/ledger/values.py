"""Interpreting single cell values: text from numbers, dates, yes/no, enums by Chinese names; masking
of values shown back in error reports."""

from __future__ import annotations

import re
from datetime import date, datetime

from storage.enums import ConsentStatus, ContactKind, Locale, RiskTier, Sex
from storage.ledger._text import clean, squash_spaces, to_halfwidth
from storage.masking import mask_id, mask_text

Cell = str | int | float | datetime | date | None

_SCIENTIFIC = re.compile(r"^\d(\.\d+)?[eE]\+?\d+$")


class CellError(ValueError):
    """The value of one cell is not acceptable; ``str(exc)`` is the reason in Chinese."""


def is_blank(value: Cell) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def text(value: Cell) -> str:
    """Cell as trimmed text; integral floats lose their ``.0``; dates become ``YYYY-MM-DD``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return clean(str(value))


def id_text(value: Cell) -> str:
    """An ID number cell. Numbers of 16+ digits have lost precision in Excel and are refused."""
    if isinstance(value, float) or (isinstance(value, str) and _SCIENTIFIC.match(squash_spaces(value))):
        raise CellError(
            "身份证号被 Excel 存成了数字（科学计数法），后几位已丢失、无法恢复；请把该列设为“文本”格式后重新填写"
        )
    return text(value)


def phone_text(value: Cell) -> str:
    """A phone cell: ``13812345678.0`` is recovered; a number that lost its leading 0 is named."""
    if isinstance(value, str) and _SCIENTIFIC.match(squash_spaces(value)):
        raise CellError("电话号码被存成了科学计数法，数字已丢失；请把该列设为“文本”格式后重新填写")
    if isinstance(value, float) and not value.is_integer():
        raise CellError("电话号码被存成了小数，请把该列设为“文本”格式后重新填写")
    return text(value)


def numeric_phone_lost_zero(value: Cell) -> bool:
    """A landline stored as a number (0451… → 451…): its leading 0 is gone."""
    return isinstance(value, (int, float)) and not str(int(value)).startswith("1")


_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日", "%Y年%m月%d号")
_MONTH_FORMATS = ("%Y-%m", "%Y/%m", "%Y.%m", "%Y年%m月", "%Y%m")


def parse_date(value: Cell) -> tuple[date, bool]:
    """A date cell → (date, day_known). ``1945.03``/``1945年3月`` give day_known=False."""
    if isinstance(value, datetime):
        return value.date(), True
    if isinstance(value, date):
        return value, True
    s = squash_spaces(to_halfwidth(text(value)))
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(s, fmt).date(), True  # noqa: DTZ007 - a calendar date, no time
        except ValueError:
            pass
    for fmt in _MONTH_FORMATS:
        try:
            return datetime.strptime(s, fmt).date(), False  # noqa: DTZ007
        except ValueError:
            pass
    raise CellError("日期格式无法识别（请写成如 1945-03-12）")


_SEX = {"男": Sex.MALE, "男性": Sex.MALE, "M": Sex.MALE, "male": Sex.MALE, "女": Sex.FEMALE, "女性": Sex.FEMALE,
        "F": Sex.FEMALE, "female": Sex.FEMALE}


def parse_sex(value: Cell) -> Sex:
    s = squash_spaces(text(value))
    if s in _SEX:
        return _SEX[s]
    raise CellError("性别应填“男”或“女”")


_RISK = {"一般": RiskTier.GENERAL, "普通": RiskTier.GENERAL, "低": RiskTier.GENERAL, "低风险": RiskTier.GENERAL,
         "重点": RiskTier.KEY, "中": RiskTier.KEY, "中风险": RiskTier.KEY, "较高": RiskTier.KEY,
         "高": RiskTier.HIGH, "高风险": RiskTier.HIGH, "高危": RiskTier.HIGH}
_RISK.update({r.value: r for r in RiskTier})
_RISK.update({r.label: r for r in RiskTier})


def parse_risk(value: Cell) -> RiskTier:
    s = squash_spaces(text(value))
    if s in _RISK:
        return _RISK[s]
    raise CellError("风险等级应为“一般”“重点”或“高风险”")


_LOCALE = {"朝鲜语": Locale.KO, "韩语": Locale.KO, "朝语": Locale.KO, "朝鲜族语": Locale.KO, "朝鲜话": Locale.KO,
           "韩国语": Locale.KO, "조선어": Locale.KO, "한국어": Locale.KO, "ko": Locale.KO, "ko-KR": Locale.KO,
           "普通话": Locale.ZH, "汉语": Locale.ZH, "中文": Locale.ZH, "国语": Locale.ZH, "汉": Locale.ZH,
           "zh": Locale.ZH, "zh-CN": Locale.ZH}


def parse_locale(value: Cell) -> Locale:
    s = squash_spaces(text(value))
    if s in _LOCALE:
        return _LOCALE[s]
    raise CellError("语言应为“普通话”或“朝鲜语”")


_YES = {"是", "已同意", "同意", "已签", "已签署", "签署", "有", "√", "✓", "✔", "Y", "y", "yes", "Yes", "1", "已签字"}
_NO = {"否", "不同意", "拒绝", "已撤回", "撤回", "×", "✗", "N", "n", "no", "No", "0"}
_PENDING = {"未签", "未确认", "待确认", "未签署", "无"}


def parse_consent(value: Cell) -> tuple[ConsentStatus, date | None]:
    """是/否/a date (the day consent was given) → status and date. ``否`` means withdrawn/refused."""
    if isinstance(value, (datetime, date)):
        return ConsentStatus.GRANTED, parse_date(value)[0]
    s = squash_spaces(text(value))
    if s in _YES:
        return ConsentStatus.GRANTED, None
    if s in _NO:
        return ConsentStatus.WITHDRAWN, None
    if s in _PENDING:
        return ConsentStatus.UNKNOWN, None
    try:
        return ConsentStatus.GRANTED, parse_date(s)[0]
    except CellError:
        raise CellError("知情同意应填“是”“否”或同意日期") from None


_NEIGHBOUR = ("邻居", "邻里", "乡邻")
_GRID = ("网格员", "网格长", "村干部", "社区干部", "村委会", "社区工作者", "包保干部", "村医", "志愿者")
_FAMILY = ("儿", "女", "子", "媳", "婿", "孙", "侄", "甥", "配偶", "老伴", "妻", "夫", "兄", "弟", "姐", "妹",
           "亲", "父", "母", "叔", "伯", "姑", "舅", "姨", "家属", "监护人")


def contact_kind(relation: str) -> ContactKind:
    r = relation.strip()
    if not r:
        return ContactKind.OTHER
    if any(w in r for w in _NEIGHBOUR):
        return ContactKind.NEIGHBOUR
    if any(w in r for w in _GRID):
        return ContactKind.GRID_WORKER
    if any(w in r for w in _FAMILY):
        return ContactKind.FAMILY
    return ContactKind.OTHER


def mask_digits(s: str) -> str:
    """Star the middle digits of any value shown back in a report (keeps the first 3, last 4)."""
    n = sum(ch.isdigit() for ch in s)
    if n < 5:
        return s
    keep_head, keep_tail = (3, 4) if n >= 9 else (0, 2)
    out, seen = [], 0
    for ch in s:
        if ch.isdigit():
            out.append(ch if seen < keep_head or seen >= n - keep_tail else "*")
            seen += 1
        else:
            out.append(ch)
    return "".join(out)


def mask_id_value(raw: str) -> str:
    s = squash_spaces(to_halfwidth(raw))
    return mask_id(s) if len(s) >= 12 else mask_digits(s)


_DIGIT_RUN = re.compile(r"\d[\d\s-]{5,}\d")


def mask_value(raw: str) -> str:
    """Free text shown in a report: any phone/ID inside it masked, other long digit runs starred."""
    return _DIGIT_RUN.sub(lambda m: mask_digits(m.group(0)), mask_text(to_halfwidth(raw)))
