"""Read a county ledger (.xlsx or .csv) into raw rows keyed by :class:`Field`.

The header row is found by its Chinese names (a title row or two above it is skipped), a
second header row under merged group cells is folded in (紧急联系人 → 姓名 | 电话 | 关系), blank
rows, repeated header rows and footer lines (合计、填表人 …) are skipped. Row numbers are the
ones the officer sees in Excel. Values are passed on raw (str, int, float, datetime); the
validator interprets them. .xlsx is streamed (openpyxl read-only), so memory stays flat.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

from storage.ledger.columns import Field, is_sub_header, match_header, resolve_grouped, spec

CellValue = str | int | float | datetime | date | None

HEADER_SEARCH_ROWS = 20
REQUIRED = (Field.NAME, Field.ID_NUMBER, Field.PHONE, Field.TOWNSHIP, Field.VILLAGE, Field.CATEGORY)
_FOOTER = re.compile(r"^(合计|总计|小计|共计|填表|制表|审核|负责人|单位负责人|注[:：]|说明[:：]|备注[:：]|统计)")


class LedgerFormatError(ValueError):
    """The file as a whole cannot be read (no header row, missing columns, bad encoding)."""


@dataclass(frozen=True)
class Column:
    index: int
    field: Field
    header: str  # as written in the file, for error messages


@dataclass
class RawRow:
    row: int  # as Excel numbers it (1-based); for CSV the line number
    cells: dict[Field, list[tuple[str, CellValue]]] = field(default_factory=dict)

    def first(self, f: Field) -> tuple[str, CellValue]:
        """(header, value) of the first column of ``f``; ``("", None)`` if the file lacks it."""
        values = self.cells.get(f)
        return values[0] if values else (spec(f).header if f is not Field.SERIAL else "", None)


@dataclass
class LedgerTable:
    """A header and an iterator of data rows (consumed once)."""

    columns: list[Column]
    header_row: int
    rows: Iterator[RawRow]
    source: str  # "xlsx" or "csv (GB18030)" …
    total_hint: int | None = None  # number of physical rows, if known (for progress)


def _is_blank(value: CellValue) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _score(row: Sequence[CellValue]) -> int:
    return len({f for v in row if (f := match_header(v)) is not None and f is not Field.SERIAL})


def _build_columns(header: Sequence[CellValue], sub: Sequence[CellValue] | None) -> list[Column]:
    cols: list[Column] = []
    group: CellValue = None
    width = max(len(header), len(sub) if sub is not None else 0)
    for i in range(width):
        text = header[i] if i < len(header) else None  # rows end at their last written cell
        below = sub[i] if sub is not None and i < len(sub) else None
        if not _is_blank(text):
            group = text
        elif _is_blank(below):
            group = None
        if sub is not None and not _is_blank(below):
            owner = text if not _is_blank(text) else group
            f = resolve_grouped(owner, below) if not _is_blank(owner) else match_header(below)
            label = f"{str(owner).strip()}/{str(below).strip()}" if not _is_blank(owner) and owner != below else str(below).strip()
        else:
            f = match_header(text)
            label = str(text).strip() if text is not None else ""
        if f is not None and f is not Field.SERIAL:
            cols.append(Column(i, f, label))
    return cols


def _check_columns(cols: list[Column]) -> None:
    present = {c.field for c in cols}
    missing = [spec(f).header for f in REQUIRED if f not in present]
    if missing:
        raise LedgerFormatError(f"找不到必需的列：{'、'.join(missing)}（请对照模板检查表头）")
    seen: dict[Field, Column] = {}
    for c in cols:
        if c.field in seen and c.field is not Field.PHONE:
            raise LedgerFormatError(f"表头“{seen[c.field].header}”和“{c.header}”指的是同一列，请删去一列")
        seen.setdefault(c.field, c)


def _table(rows: Iterator[tuple[int, Sequence[CellValue]]], source: str, total: int | None) -> LedgerTable:
    buffered: list[tuple[int, Sequence[CellValue]]] = []
    for item in rows:
        buffered.append(item)
        if len(buffered) >= HEADER_SEARCH_ROWS:
            break
    best: tuple[int, int] | None = None  # (score, position)
    for pos, (_n, values) in enumerate(buffered):
        s = _score(values)
        if s >= 3 and (best is None or s > best[0]):
            best = (s, pos)
    if best is None:
        raise LedgerFormatError(
            f"在前{HEADER_SEARCH_ROWS}行找不到表头（应含“姓名”“身份证号”“联系电话”等列名）"
        )
    pos = best[1]
    header_row, header = buffered[pos]
    sub: Sequence[CellValue] | None = None
    if pos + 1 < len(buffered):
        nxt = buffered[pos + 1][1]
        filled = [v for v in nxt if not _is_blank(v)]
        if len(filled) >= 2 and sum(is_sub_header(v) for v in filled) >= 0.8 * len(filled):
            sub = nxt
    cols = _build_columns(header, sub)
    _check_columns(cols)
    skip = pos + (2 if sub is not None else 1)

    def data() -> Iterator[RawRow]:
        def all_rows() -> Iterator[tuple[int, Sequence[CellValue]]]:
            yield from buffered[skip:]
            yield from rows

        for number, values in all_rows():
            raw = RawRow(number)
            for c in cols:
                v = values[c.index] if c.index < len(values) else None
                if isinstance(v, str):
                    v = v.strip()
                raw.cells.setdefault(c.field, []).append((c.header, v))
            if _skippable(raw, values):
                continue
            yield raw

    return LedgerTable(cols, header_row, data(), source, total)


def _first_value(values: Sequence[CellValue]) -> CellValue:
    return next((v for v in values if not _is_blank(v)), None)


def _skippable(raw: RawRow, values: Sequence[CellValue]) -> bool:
    """Blank rows, repeated headers and footer lines are not data."""
    if all(_is_blank(v) for v in values):
        return True
    name, ident = raw.first(Field.NAME)[1], raw.first(Field.ID_NUMBER)[1]
    if match_header(name) is Field.NAME and match_header(ident) is Field.ID_NUMBER:
        return True  # header repeated (printed ledgers repeat it on every page)
    first = _first_value(values)
    if isinstance(first, str) and _FOOTER.match(first.strip()):
        return sum(ch.isdigit() for ch in str(ident or "")) < 6  # not if it carries an ID number
    return False


# -- xlsx ------------------------------------------------------------------------------------


def _broken_xlsx_errors() -> tuple[type[BaseException], ...]:
    """What openpyxl raises on a damaged file (bad zip, bad deflate stream, bad XML, odd structure)."""
    import zlib
    from zipfile import BadZipFile

    from openpyxl.utils.exceptions import InvalidFileException

    return (InvalidFileException, BadZipFile, zlib.error, EOFError, KeyError, OSError, ValueError, SyntaxError,
            TypeError, AttributeError, IndexError)


def _guarded(rows: Iterator[tuple[int, Any]],
             broken: tuple[type[BaseException], ...]) -> Iterator[tuple[int, Any]]:
    """Rows are read lazily: damage found half-way through is still a file error, not a crash."""
    try:
        yield from rows
    except LedgerFormatError:
        raise
    except broken as exc:
        raise LedgerFormatError(f"Excel 文件已损坏，读不下去（{type(exc).__name__}）；请在 Excel 中重新另存为 .xlsx 后再导入") from exc


def read_xlsx(source: Path | BinaryIO) -> LedgerTable:
    from openpyxl import load_workbook

    broken = _broken_xlsx_errors()
    try:
        wb = load_workbook(source, read_only=True, data_only=True)
    except broken as exc:
        raise LedgerFormatError(f"无法打开 Excel 文件：{type(exc).__name__}（请另存为 .xlsx 格式）") from exc
    try:
        return _first_sheet(wb, broken)
    except LedgerFormatError:
        raise
    except broken as exc:
        raise LedgerFormatError(f"Excel 文件已损坏（{type(exc).__name__}）；请在 Excel 中重新另存为 .xlsx 后再导入") from exc


def _first_sheet(wb: Any, broken: tuple[type[BaseException], ...]) -> LedgerTable:
    last_error: LedgerFormatError | None = None
    for ws in wb.worksheets:
        total = ws.max_row
        ws.reset_dimensions()  # do not trust the stored dimension; read every row there is
        rows = _guarded(((i, r) for i, r in enumerate(ws.iter_rows(values_only=True), start=1)), broken)
        try:
            table = _table(rows, "xlsx", total)
        except LedgerFormatError as exc:
            last_error = last_error or exc
            continue
        if len(wb.worksheets) > 1:
            table.source = f"xlsx（工作表“{ws.title}”）"
        return table
    raise last_error or LedgerFormatError("Excel 文件里没有工作表")


# -- csv -------------------------------------------------------------------------------------


def decode_csv(data: bytes) -> tuple[str, str]:
    """Text and the encoding it was in: UTF-8 with BOM, UTF-8, else GB18030 (a superset of GBK)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="strict"), "UTF-8-BOM"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "UTF-16"
    try:
        return data.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030"), "GBK/GB18030"
    except UnicodeDecodeError as exc:
        raise LedgerFormatError("CSV 文件编码无法识别（支持 UTF-8、GBK/GB18030）；请在 Excel 中另存为 .xlsx") from exc


def read_csv(source: Path | BinaryIO) -> LedgerTable:
    data = source.read_bytes() if isinstance(source, Path) else source.read()
    try:
        text, encoding = decode_csv(data)
    except UnicodeDecodeError as exc:
        raise LedgerFormatError("CSV 文件编码无法识别") from exc
    sample = text[:4096]
    delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)

    def rows() -> Iterator[tuple[int, Sequence[CellValue]]]:
        # Excel shows one row per record, even when a quoted cell spans several lines.
        for number, values in enumerate(reader, start=1):
            yield number, list(values)

    return _table(rows(), f"csv（{encoding}）", text.count("\n") + 1)


def read_ledger(source: Path | BinaryIO, *, filename: str | None = None) -> LedgerTable:
    """Open a ledger by its suffix (.xlsx/.xlsm or .csv/.txt)."""
    name = filename or (source.name if isinstance(source, Path) else "")
    suffix = Path(name).suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return read_xlsx(source)
    if suffix in (".csv", ".txt"):
        return read_csv(source)
    if suffix == ".xls":
        raise LedgerFormatError("不支持旧版 .xls 文件：请在 Excel 中“另存为” .xlsx 后再导入")
    raise LedgerFormatError(f"不支持的文件类型“{suffix or name}”：请使用 .xlsx 或 .csv")
