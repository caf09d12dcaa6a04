"""The documented ledger template, and the export that writes elders back in the same layout.

Exports are masked (2301**********0026, 139****0001) unless ``reveal=True``, which needs the
vault to decrypt; a revealed export re-imports as "unchanged".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from openpyxl import Workbook
from openpyxl.comments import Comment
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from storage.crypto import Vault
from storage.enums import ConsentStatus, Locale, RegionLevel
from storage.ledger.categories import format_categories
from storage.ledger.columns import COLUMNS, Field
from storage.models.elder import Elder
from storage.models.region import Region

SHEET = "台帐"
HELP_SHEET = "填写说明"
_TEXT_FIELDS = {Field.ID_NUMBER, Field.PHONE, Field.CONTACT_PHONE, Field.BIRTH_DATE}
_CHOICES = {
    Field.SEX: "男,女",
    Field.RISK: "一般,重点,高风险",
    Field.LOCALE: "普通话,朝鲜语",
    Field.CONSENT: "是,否",
}
_CONSENT_TEXT = {ConsentStatus.GRANTED: "是", ConsentStatus.WITHDRAWN: "否", ConsentStatus.UNKNOWN: ""}


def write_template(path: Path, *, rows: int = 2000) -> None:
    """The empty ledger: header row, instructions in cell comments and on a second sheet,
    text format on number columns (so Excel keeps ID numbers whole), drop-down lists."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = SHEET
    required_fill = PatternFill("solid", fgColor="FFF2CC")
    for i, col in enumerate(COLUMNS, start=1):
        cell = ws.cell(row=1, column=i, value=col.header)
        cell.font = Font(bold=True, color="C00000" if col.required else "000000")
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        if col.required:
            cell.fill = required_fill
        cell.comment = Comment(("必填。" if col.required else "选填。") + col.help, "探访")
        letter = get_column_letter(i)
        ws.column_dimensions[letter].width = 22 if col.field in _TEXT_FIELDS or col.field is Field.ADDRESS else 12
        if col.field in _TEXT_FIELDS:
            ws.column_dimensions[letter].number_format = "@"
            for r in range(2, rows + 2):
                ws.cell(row=r, column=i).number_format = "@"
        if col.field in _CHOICES:
            dv = DataValidation(type="list", formula1=f'"{_CHOICES[col.field]}"', allow_blank=True)
            dv.error, dv.errorTitle = f"请从下拉列表中选择：{_CHOICES[col.field]}", col.header
            ws.add_data_validation(dv)
            dv.add(f"{letter}2:{letter}{rows + 1}")
    ws.freeze_panes = "B2"

    help_ws = wb.create_sheet(HELP_SHEET)
    help_ws.append(["列名", "是否必填", "填写说明", "示例"])
    for cell in help_ws[1]:
        cell.font = Font(bold=True)
    for col in COLUMNS:
        help_ws.append([col.header, "必填" if col.required else "选填", col.help, col.example])
    help_ws.append([])
    for line in (
        "1. 每位老人一行；同一身份证号只能出现一次。表头上方可以有标题行。",
        "2. 导入时全部行都通过校验才会写入；有任何一行出错，整份文件都不导入，并列出出错的行、列和原因。",
        "3. 已在系统中的老人（按身份证号识别）会被更新，不会重复建档。",
        "4. 身份证号、电话号码请保持“文本”格式；从其他表格复制时请用“选择性粘贴 → 数值”。",
        "5. 多个电话、多位联系人用顿号“、”分隔，联系人、联系人电话、关系按顺序一一对应。",
    ):
        help_ws.append([line])
    help_ws.column_dimensions["A"].width = 16
    help_ws.column_dimensions["B"].width = 10
    help_ws.column_dimensions["C"].width = 70
    help_ws.column_dimensions["D"].width = 28
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)


@dataclass(frozen=True)
class ExportResult:
    rows: int
    revealed: bool


def _region_path(session: Session, region_code: str | None) -> str | None:
    if not region_code:
        return None
    root = session.scalar(select(Region).where(Region.code == region_code))
    if root is None:
        raise LookupError(f"没有代码为 {region_code} 的区划")
    return root.path


def _elders(session: Session, path: str | None) -> Iterator[Elder]:
    stmt = (
        select(Elder)
        .join(Region, Elder.region_id == Region.id)
        .options(selectinload(Elder.phones), selectinload(Elder.contacts),
                 selectinload(Elder.region).selectinload(Region.parent))
        .order_by(Region.path, Elder.id)
    )
    if path is not None:
        stmt = stmt.where((Region.path == path) | Region.path.like(path + "/%"))
    yield from session.scalars(stmt.execution_options(yield_per=500))


def _place(elder: Elder) -> tuple[str, str]:
    region = elder.region
    if region.level is RegionLevel.VILLAGE:
        return (region.parent.name if region.parent else ""), region.name
    if region.level is RegionLevel.TOWNSHIP:
        return region.name, ""
    return "", ""


def export_row(elder: Elder, vault: Vault | None, reveal: bool) -> list[str]:
    """One elder in template column order (masked numbers unless ``reveal``)."""
    if reveal and vault is None:
        raise ValueError("reveal needs the vault")

    def number(enc: bytes | None, masked: str | None) -> str:
        if reveal and enc is not None and vault is not None:
            return vault.decrypt(enc)
        return masked or ""

    township, village = _place(elder)
    contacts = list(elder.contacts)
    values: dict[Field, str] = {
        Field.NAME: elder.name,
        Field.SEX: elder.sex.label if elder.sex else "",
        Field.ID_NUMBER: number(elder.id_number_enc, elder.id_number_masked),
        Field.BIRTH_DATE: elder.birth_date.isoformat() if elder.birth_date else "",
        Field.PHONE: "、".join(number(p.number_enc, p.number_masked) for p in elder.phones),
        Field.ADDRESS: elder.address or "",
        Field.TOWNSHIP: township,
        Field.VILLAGE: village,
        Field.CATEGORY: format_categories(elder.categories),
        Field.RISK: elder.risk_tier.label,
        Field.LOCALE: "朝鲜语" if elder.locale is Locale.KO else "普通话",
        Field.CONTACT_NAME: "、".join(c.name for c in contacts),
        Field.CONTACT_PHONE: "、".join(number(c.phone_enc, c.phone_masked) for c in contacts if c.phone_enc),
        Field.CONTACT_RELATION: "、".join(c.relation for c in contacts) if any(c.relation for c in contacts) else "",
        Field.CONSENT: _CONSENT_TEXT[elder.consent_status],
        Field.NOTE: elder.note or "",
    }
    return [values.get(c.field, "") for c in COLUMNS]


def export_ledger(
    path: Path,
    sessions: sessionmaker[Session],
    *,
    vault: Vault | None = None,
    region_code: str | None = None,
    reveal: bool = False,
) -> ExportResult:
    """Write the elders (of ``region_code``'s subtree, or all) in the template layout."""
    if reveal and vault is None:
        raise ValueError("导出明文号码需要密钥（vault）")
    with sessions() as session:
        region_path = _region_path(session, region_code)  # LookupError before any file is touched
        wb = Workbook(write_only=True)
        ws = wb.create_sheet(SHEET)
        ws.append([c.header for c in COLUMNS])
        count = 0
        for elder in _elders(session, region_path):
            ws.append(export_row(elder, vault, reveal))
            count += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    wb.save(partial)
    partial.replace(path)  # never leave a half-written export under the real name
    return ExportResult(rows=count, revealed=reveal)
