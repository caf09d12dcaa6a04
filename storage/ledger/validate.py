"""Ledger rows → typed :class:`ElderRecord` s, or row errors an officer can act on.

Every problem is reported with the row number as Excel shows it, the column header as written
in the file, the value masked (ID and phone numbers are never echoed in clear) and the reason
in Chinese. Validation collects every error of every row; nothing is written if there is one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TypeVar

from storage.enums import Category, ConsentStatus, ContactKind, Locale, RiskTier, Sex
from storage.ledger import values as v
from storage.ledger.categories import CategoryError, parse_categories
from storage.ledger.columns import Field, spec
from storage.ledger.idcard import IdNumber, IdNumberError, parse_id
from storage.ledger.phones import Phone, PhoneError, normalise_phone, split_phones
from storage.ledger.reader import LedgerTable, RawRow
from storage.regions import RegionIndex

T = TypeVar("T")
MAX_NAME = 50
MAX_ADDRESS = 255
_NAME_SPLIT = re.compile(r"[、,，;；/|\s]+")


@dataclass(frozen=True)
class RowError:
    row: int | None  # None: the file as a whole
    column: str
    value: str  # masked
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"row": self.row, "column": self.column, "value": self.value, "reason": self.reason}

    def __str__(self) -> str:
        where = f"第{self.row}行" if self.row is not None else "文件"
        col = f"“{self.column}”列" if self.column else ""
        val = f"（{self.value}）" if self.value else ""
        return f"{where}{col}{val}：{self.reason}"


@dataclass(frozen=True)
class ContactRecord:
    name: str
    relation: str
    kind: ContactKind
    phone: Phone | None


@dataclass(frozen=True)
class ElderRecord:
    """One valid ledger row. ``None`` in an optional field means "not stated": an update leaves
    the stored value alone, a new elder gets the default."""

    row: int
    name: str
    id: IdNumber
    sex: Sex
    phones: tuple[Phone, ...]
    region_id: int
    region_code: str
    categories: frozenset[Category]
    contacts: tuple[ContactRecord, ...] | None  # None: the file has no contact columns
    address: str | None = None
    risk_tier: RiskTier | None = None
    locale: Locale | None = None
    consent: ConsentStatus | None = None
    consent_date: date | None = None
    note: str | None = None

    @property
    def birth_date(self) -> date:
        return self.id.birth_date


@dataclass
class ValidationResult:
    records: list[ElderRecord] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    rows: int = 0  # data rows seen

    @property
    def ok(self) -> bool:
        return not self.errors


def default_risk(categories: frozenset[Category]) -> RiskTier:
    """Risk tier for a new elder whose ledger row states none: disabled and living alone is high."""
    disabled = bool(categories & {Category.DISABLED, Category.SEVERELY_DISABLED})
    if disabled and Category.LIVING_ALONE in categories:
        return RiskTier.HIGH
    if disabled or Category.LIVING_ALONE in categories:
        return RiskTier.KEY
    return RiskTier.GENERAL


class _Row:
    """Collects the errors of one row while its cells are interpreted."""

    def __init__(self, raw: RawRow) -> None:
        self.raw = raw
        self.errors: list[RowError] = []

    def header(self, f: Field) -> str:
        return self.raw.first(f)[0] or spec(f).header

    def cell(self, f: Field) -> v.Cell:
        return self.raw.first(f)[1]

    def fail(self, f: Field, shown: str, reason: str) -> None:
        self.errors.append(RowError(self.raw.row, self.header(f), shown, reason))

    def required_text(self, f: Field) -> str | None:
        s = v.text(self.cell(f))
        if not s:
            self.fail(f, "", f"{spec(f).header}不能为空")
            return None
        return s


def validate_row(raw: RawRow, regions: RegionIndex, *, today: date | None = None) -> tuple[ElderRecord | None, list[RowError]]:
    """One row → a record, or the list of its errors (never both)."""
    r = _Row(raw)
    name = r.required_text(Field.NAME)
    if name and len(name) > MAX_NAME:
        r.fail(Field.NAME, name[:10] + "…", f"姓名过长（最多{MAX_NAME}个字）")

    ident = _id_number(r, today)
    sex = _sex(r, ident)
    _birth_date(r, ident)
    phones = _phones(r, Field.PHONE, required=True)
    region = _region(r, regions)
    categories = _categories(r)
    contacts = _contacts(r)

    address = v.text(r.cell(Field.ADDRESS)) or None
    if address and len(address) > MAX_ADDRESS:
        r.fail(Field.ADDRESS, "", f"住址过长（最多{MAX_ADDRESS}个字）")
    risk = _optional(r, Field.RISK, v.parse_risk)
    locale = _optional(r, Field.LOCALE, v.parse_locale)
    consent_pair = _optional(r, Field.CONSENT, v.parse_consent)
    note = v.text(r.cell(Field.NOTE)) or None

    if r.errors or not (name and ident and sex and phones and region and categories is not None):
        return None, r.errors
    return (
        ElderRecord(
            row=raw.row,
            name=name,
            id=ident,
            sex=sex,
            phones=tuple(phones),
            region_id=region[0],
            region_code=region[1],
            categories=categories,
            contacts=tuple(contacts) if contacts is not None else None,
            address=address,
            risk_tier=risk,
            locale=locale,
            consent=consent_pair[0] if consent_pair else None,
            consent_date=consent_pair[1] if consent_pair else None,
            note=note,
        ),
        [],
    )


def _optional(r: _Row, f: Field, parse: Callable[[v.Cell], T]) -> T | None:
    value = r.cell(f)
    if v.is_blank(value):
        return None
    try:
        return parse(value)
    except v.CellError as exc:
        r.fail(f, v.mask_value(v.text(value)), str(exc))
        return None


def _id_number(r: _Row, today: date | None) -> IdNumber | None:
    value = r.cell(Field.ID_NUMBER)
    if v.is_blank(value):
        r.fail(Field.ID_NUMBER, "", "身份证号不能为空")
        return None
    try:
        s = v.id_text(value)
        return parse_id(s, today=today)
    except v.CellError as exc:
        r.fail(Field.ID_NUMBER, v.mask_id_value(v.text(value)), str(exc))
    except IdNumberError as exc:
        r.fail(Field.ID_NUMBER, v.mask_id_value(s), str(exc))
    return None


def _sex(r: _Row, ident: IdNumber | None) -> Sex | None:
    value = r.cell(Field.SEX)
    if v.is_blank(value):
        return ident.sex if ident else None
    try:
        stated = v.parse_sex(value)
    except v.CellError as exc:
        r.fail(Field.SEX, v.text(value), str(exc))
        return None
    if ident and stated is not ident.sex:
        r.fail(Field.SEX, stated.label, f"性别与身份证号不符（身份证号第17位表示{ident.sex.label}）")
        return None
    return stated


def _birth_date(r: _Row, ident: IdNumber | None) -> None:
    value = r.cell(Field.BIRTH_DATE)
    if v.is_blank(value):
        return
    try:
        stated, day_known = v.parse_date(value)
    except v.CellError as exc:
        r.fail(Field.BIRTH_DATE, v.text(value), str(exc))
        return
    if ident is None:
        return
    same = stated == ident.birth_date if day_known else (stated.year, stated.month) == (
        ident.birth_date.year, ident.birth_date.month)
    if not same:
        r.fail(Field.BIRTH_DATE, stated.isoformat() if day_known else f"{stated:%Y-%m}",
               "出生日期与身份证号中的出生日期不一致")


def _phones(r: _Row, f: Field, *, required: bool) -> list[Phone] | None:
    cells = [(h, c) for h, c in r.raw.cells.get(f, []) if not v.is_blank(c)]
    if not cells:
        if required:
            r.fail(f, "", f"{spec(f).header}不能为空")
            return None
        return []
    out: list[Phone] = []
    ok = True
    for header, cell in cells:
        try:
            text = v.phone_text(cell)
        except v.CellError as exc:
            r.errors.append(RowError(r.raw.row, header, v.mask_value(v.text(cell)), str(exc)))
            ok = False
            continue
        for piece in split_phones(text):
            try:
                phone = normalise_phone(piece)
            except PhoneError as exc:
                reason = str(exc)
                if v.numeric_phone_lost_zero(cell):
                    reason = "座机号被 Excel 存成了数字，开头的0已丢失；请把该列设为“文本”格式后重新填写"
                r.errors.append(RowError(r.raw.row, header, v.mask_value(piece), reason))
                ok = False
                continue
            if phone not in out:
                out.append(phone)
    return out if ok else None


def _region(r: _Row, regions: RegionIndex) -> tuple[int, str] | None:
    town_name = r.required_text(Field.TOWNSHIP)
    village_name = r.required_text(Field.VILLAGE)
    if not town_name:
        return None
    try:
        town = regions.township(town_name)
    except LookupError as exc:
        r.fail(Field.TOWNSHIP, town_name, str(exc))
        return None
    if not village_name:
        return None
    try:
        village = regions.village(town, village_name)
    except LookupError as exc:
        r.fail(Field.VILLAGE, village_name, str(exc))
        return None
    return village.region_id, village.code


def _categories(r: _Row) -> frozenset[Category] | None:
    s = r.required_text(Field.CATEGORY)
    if not s:
        return None
    try:
        cats = parse_categories(s)
    except CategoryError as exc:
        r.fail(Field.CATEGORY, s, str(exc))
        return None
    if not cats:
        r.fail(Field.CATEGORY, s, "老人类别不能为空")
        return None
    return cats


def _split_names(value: v.Cell) -> list[str]:
    return [p for p in _NAME_SPLIT.split(v.text(value)) if p]


def _contacts(r: _Row) -> list[ContactRecord] | None:
    """The row's contacts; ``None`` if the file has no contact columns (or on error, recorded)."""
    if Field.CONTACT_NAME not in r.raw.cells and Field.CONTACT_PHONE not in r.raw.cells:
        return None
    names = _split_names(r.cell(Field.CONTACT_NAME))
    relations = _split_names(r.cell(Field.CONTACT_RELATION))
    phones = _phones(r, Field.CONTACT_PHONE, required=False)
    if phones is None:
        return None
    if not names and not phones:
        return []
    if not names:
        r.fail(Field.CONTACT_NAME, "", "填写了联系人电话，但没有联系人姓名")
        return None
    if len(phones) not in (0, len(names)):
        r.fail(Field.CONTACT_PHONE, "", f"联系人有{len(names)}位，电话有{len(phones)}个，无法一一对应（用“、”分隔）")
        return None
    if len(relations) not in (0, len(names)):
        r.fail(Field.CONTACT_RELATION, "、".join(relations), f"联系人有{len(names)}位，关系有{len(relations)}个，无法一一对应")
        return None
    out = []
    for i, name in enumerate(names):
        if len(name) > MAX_NAME:
            r.fail(Field.CONTACT_NAME, name[:10] + "…", "联系人姓名过长")
            return None
        relation = relations[i] if relations else ""
        if len(relation) > 20:
            r.fail(Field.CONTACT_RELATION, relation[:10] + "…", "关系过长（最多20个字）")
            return None
        out.append(ContactRecord(name, relation, v.contact_kind(relation), phones[i] if phones else None))
    return out


def validate_rows(
    rows: Iterable[RawRow],
    regions: RegionIndex,
    *,
    today: date | None = None,
    progress: Callable[[int], None] | None = None,
) -> ValidationResult:
    """Validate every row; also flag the same ID number appearing twice in the file."""
    result = ValidationResult()
    first_seen: dict[str, int] = {}
    for raw in rows:
        result.rows += 1
        record, errors = validate_row(raw, regions, today=today)
        if record is not None:
            earlier = first_seen.get(record.id.number)
            if earlier is not None:
                result.errors.append(RowError(raw.row, raw.first(Field.ID_NUMBER)[0] or spec(Field.ID_NUMBER).header,
                                              v.mask_id_value(record.id.number),
                                              f"与第{earlier}行的身份证号重复（同一位老人只能出现一次）"))
            else:
                first_seen[record.id.number] = raw.row
                result.records.append(record)
        result.errors.extend(errors)
        if progress is not None:
            progress(raw.row)
    return result


def validate_table(table: LedgerTable, regions: RegionIndex, *, today: date | None = None,
                   progress: Callable[[int], None] | None = None) -> ValidationResult:
    return validate_rows(table.rows, regions, today=today, progress=progress)
