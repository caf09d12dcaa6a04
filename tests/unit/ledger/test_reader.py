"""Finding the header and the data rows in messy ledger files."""

from datetime import datetime
from pathlib import Path

import pytest

from storage.ledger.columns import Field
from storage.ledger.reader import LedgerFormatError, read_ledger
from tests.unit.ledger.files import HEADER, row, write_csv, write_xlsx


def _rows(path: Path) -> list[tuple[int, str]]:
    table = read_ledger(path)
    return [(r.row, str(r.first(Field.NAME)[1])) for r in table.rows]


def test_title_row_blank_rows_and_footer(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "a.xlsx",
        [["尚志市特殊困难老人台帐"], [], HEADER, row(1), [], [None, "  "], row(2), [],
         ["合计：2人"], ["填表人：张三", None, None, "审核人：李四"]],
        merges=["A1:O1"],
    )
    table = read_ledger(path)
    assert table.header_row == 3
    assert [(r.row, r.first(Field.NAME)[1]) for r in table.rows] == [(4, "测试老人1"), (7, "测试老人2")]


def test_merged_group_header_with_sub_header_row(tmp_path: Path) -> None:
    top = ["序号", "姓名", "身份证号", "联系方式", None, "乡镇", "村", "类别", "紧急联系人", None, None]
    sub = [None, None, None, "手机", "座机", None, None, None, "姓名", "电话", "关系"]
    data = [1, "王桂兰", "230183194503120026", "13900000001", "0451-53990001", "亚布力镇", "青云村", "独居",
            "李建国", "13900010001", "儿子"]
    path = write_xlsx(tmp_path / "m.xlsx", [top, sub, data],
                      merges=["A1:A2", "B1:B2", "C1:C2", "D1:E1", "F1:F2", "G1:G2", "H1:H2", "I1:K1"])
    table = read_ledger(path)
    fields = {c.field: c.header for c in table.columns if c.field is not Field.PHONE}
    assert fields[Field.CONTACT_NAME] == "紧急联系人/姓名"
    assert fields[Field.CONTACT_PHONE] == "紧急联系人/电话"
    assert fields[Field.CONTACT_RELATION] == "紧急联系人/关系"
    assert [c.header for c in table.columns if c.field is Field.PHONE] == ["联系方式/手机", "联系方式/座机"]
    (only,) = list(table.rows)
    assert only.row == 3
    assert only.first(Field.NAME)[1] == "王桂兰"
    assert [v for _h, v in only.cells[Field.PHONE]] == ["13900000001", "0451-53990001"]
    assert only.first(Field.CONTACT_NAME)[1] == "李建国"


def test_numbers_and_dates_come_through_raw(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "n.xlsx", [HEADER, row(1, 联系电话=13900000001.0, 出生日期=datetime(1945, 3, 12))])
    (r,) = list(read_ledger(path).rows)
    assert r.first(Field.PHONE)[1] == 13900000001.0
    assert r.first(Field.BIRTH_DATE)[1] == datetime(1945, 3, 12)


@pytest.mark.parametrize(("encoding", "label"), [("utf-8", "UTF-8"), ("utf-8-sig", "UTF-8-BOM"), ("gbk", "GBK"),
                                                 ("gb18030", "GBK")])
def test_csv_encodings(tmp_path: Path, encoding: str, label: str) -> None:
    path = write_csv(tmp_path / "x.csv", [["台帐（2024年）"], HEADER, row(1, 姓名="朴英哲"), row(2)], encoding=encoding)
    table = read_ledger(path)
    assert label in table.source
    assert [(r.row, r.first(Field.NAME)[1]) for r in table.rows] == [(3, "朴英哲"), (4, "测试老人2")]


def test_header_variants(tmp_path: Path) -> None:
    header = ["编号", "老人姓名", "公民身份号码", "手机号码", "家庭住址", "乡镇/街道", "村/社区", "人员类别",
              "联系人", "联系人手机", "与本人关系", "使用语言", "是否同意"]
    path = write_csv(tmp_path / "v.csv", [header, [1, "甲", "230183194503120026", "13900000001", "", "亚布力镇",
                                                   "青云村", "空巢", "", "", "", "", ""]])
    fields = {c.field for c in read_ledger(path).columns}
    assert {Field.NAME, Field.ID_NUMBER, Field.PHONE, Field.TOWNSHIP, Field.VILLAGE, Field.CATEGORY,
            Field.CONTACT_NAME, Field.CONTACT_PHONE, Field.CONTACT_RELATION, Field.LOCALE, Field.CONSENT} <= fields


def test_repeated_header_rows_are_skipped(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "r.xlsx", [HEADER, row(1), HEADER, row(2)])
    assert _rows(path) == [(2, "测试老人1"), (4, "测试老人2")]


def test_missing_required_columns_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [["姓名", "身份证号", "联系电话", "住址"], ["甲", "1", "2", "3"]])
    with pytest.raises(LedgerFormatError, match="乡镇（街道）、村（社区）、老人类别"):
        read_ledger(path)


def test_no_header_at_all(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "n.csv", [["a", "b"], ["1", "2"]])
    with pytest.raises(LedgerFormatError, match="找不到表头"):
        read_ledger(path)


def test_unsupported_suffixes(tmp_path: Path) -> None:
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(LedgerFormatError, match="另存为"):
        read_ledger(tmp_path / "old.xls")
    (tmp_path / "bad.xlsx").write_bytes(b"not a zip")
    with pytest.raises(LedgerFormatError, match="无法打开"):
        read_ledger(tmp_path / "bad.xlsx")


def test_csv_row_numbers_count_records_like_excel(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "nl.csv", [HEADER, row(1, 住址="青云村\n一组"), row(2)])
    assert _rows(path) == [(2, "测试老人1"), (3, "测试老人2")]


def test_tab_separated_text(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("\n".join("\t".join(str(v) for v in r) for r in [HEADER, row(1)]), encoding="utf-8")
    assert _rows(path) == [(2, "测试老人1")]
