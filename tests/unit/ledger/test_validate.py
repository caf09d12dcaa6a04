"""Row validation: messy values accepted and normalised, bad ones named by row, column and reason."""

from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from storage.enums import Category, ConsentStatus, ContactKind, Locale, PhoneKind, RiskTier, Sex
from storage.ledger.idcard import make_id
from storage.ledger.reader import read_ledger
from storage.ledger.validate import ValidationResult, validate_rows
from tests.unit.ledger.files import HEADER, ident, row, sample_index, write_csv, write_xlsx


def check(tmp_path: Path, rows: list[list[Any]], *, kind: str = "xlsx") -> ValidationResult:
    path = tmp_path / f"t.{kind}"
    (write_xlsx if kind == "xlsx" else write_csv)(path, [HEADER, *rows])
    return validate_rows(read_ledger(path).rows, sample_index(), today=date(2026, 1, 1))


def errors(result: ValidationResult) -> list[tuple[int | None, str, str]]:
    return [(e.row, e.column, e.reason) for e in result.errors]


def id_ending_in_x() -> str:
    return next(n for s in range(1000) if (n := make_id("230183", date(1941, 8, 8), s)).endswith("X"))


def test_good_row(tmp_path: Path) -> None:
    result = check(tmp_path, [row(1, 老人类别="独居、失能", 语言="朝鲜语", 知情同意="是")])
    assert result.ok and result.rows == 1
    (r,) = result.records
    assert r.row == 2 and r.name == "测试老人1" and r.sex is Sex.FEMALE
    assert r.birth_date == date(1945, 3, 12)
    assert r.categories == {Category.LIVING_ALONE, Category.DISABLED}
    assert r.locale is Locale.KO and r.consent is ConsentStatus.GRANTED
    assert [p.number for p in r.phones] == ["13900000001"]
    assert r.contacts is not None and r.contacts[0].kind is ContactKind.FAMILY
    assert r.region_code == "230183102202"  # 青云村 in the hand-built index


def test_full_width_digits_lowercase_x_and_spaces(tmp_path: Path) -> None:
    x_id = id_ending_in_x()
    messy = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else "x" for c in x_id)
    messy = messy[:6] + " " + messy[6:14] + "　" + messy[14:]
    result = check(tmp_path, [row(1, 身份证号=messy, 出生日期="1941年8月8日", 性别="", 联系电话="１３９ ００００ ０００１")])
    assert result.ok, result.errors
    (r,) = result.records
    assert r.id.number == x_id and r.phones[0].number == "13900000001"


def test_landline_and_several_phones(tmp_path: Path) -> None:
    result = check(tmp_path, [row(1, 联系电话="0451-53990001、139 0000 0001"), row(2, 联系电话="（0451）5399 0002")])
    assert result.ok, result.errors
    a, b = result.records
    assert [(p.number, p.kind) for p in a.phones] == [("0451-53990001", PhoneKind.LANDLINE), ("13900000001", PhoneKind.MOBILE)]
    assert b.phones[0].number == "0451-53990002"


def test_phone_stored_as_float_is_recovered(tmp_path: Path) -> None:
    result = check(tmp_path, [row(1, 联系电话=13900000001.0, 联系人电话=13900010001)])
    assert result.ok, result.errors
    assert result.records[0].phones[0].number == "13900000001"


def test_landline_stored_as_number_lost_its_zero(tmp_path: Path) -> None:
    result = check(tmp_path, [row(1, 联系电话=45153990001)])
    assert errors(result) == [(2, "联系电话", "座机号被 Excel 存成了数字，开头的0已丢失；请把该列设为“文本”格式后重新填写")]


def test_id_in_scientific_notation_is_flagged(tmp_path: Path) -> None:
    result = check(tmp_path, [row(1, 身份证号=2.30183194503121e17), row(2, 身份证号="2.30183E+17")], kind="xlsx")
    assert [(r, c) for r, c, _ in errors(result)] == [(2, "身份证号"), (3, "身份证号")]
    assert all("科学计数法" in e.reason for e in result.errors)


def test_wrong_checksum_named_and_masked(tmp_path: Path) -> None:
    bad = ident(2)[:17] + ("0" if ident(2)[17] != "0" else "1")
    result = check(tmp_path, [row(1), row(2, 身份证号=bad), row(3)])
    (e,) = result.errors
    assert (e.row, e.column) == (3, "身份证号") and "校验位" in e.reason
    assert e.value == bad[:4] + "*" * 10 + bad[-4:]
    assert bad not in str(e)
    assert [r.row for r in result.records] == [2, 4]


def test_birth_date_contradicting_id(tmp_path: Path) -> None:
    result = check(tmp_path, [row(1, 出生日期="1945-03-13"), row(2, 出生日期=datetime(1945, 3, 12)), row(3, 出生日期="1945.03")])
    assert errors(result) == [(2, "出生日期", "出生日期与身份证号中的出生日期不一致")]


def test_sex_contradicting_id(tmp_path: Path) -> None:
    result = check(tmp_path, [row(1, 性别="男")])
    assert errors(result) == [(2, "性别", "性别与身份证号不符（身份证号第17位表示女）")]


def test_duplicate_rows_name_both_rows(tmp_path: Path) -> None:
    result = check(tmp_path, [row(1), row(2), row(1), row(3, 身份证号=ident(2))])
    assert errors(result) == [
        (4, "身份证号", "与第2行的身份证号重复（同一位老人只能出现一次）"),
        (5, "身份证号", "与第3行的身份证号重复（同一位老人只能出现一次）"),
    ]


def test_unknown_places_named(tmp_path: Path) -> None:
    result = check(tmp_path, [row(1, **{"乡镇（街道）": "苇河镇"}), row(2, **{"村（社区）": "不存在村"}),
                              row(3, **{"乡镇（街道）": "河东朝鲜族乡", "村（社区）": "青云村"}),
                              row(4, **{"乡镇（街道）": "亚布力", "村（社区）": "青云"})])
    assert errors(result) == [
        (2, "乡镇（街道）", "尚志市没有名为“苇河镇”的乡镇（街道）"),
        (3, "村（社区）", "亚布力镇没有名为“不存在村”的村（社区）"),
        (4, "村（社区）", "河东朝鲜族乡没有名为“青云村”的村（社区）"),
    ]
    assert result.records[0].row == 5  # "亚布力"/"青云" match without the 镇/村 suffix


def test_required_cells_and_unknown_category(tmp_path: Path) -> None:
    result = check(tmp_path, [row(1, 姓名="", 联系电话="", 老人类别="低保")])
    assert errors(result) == [
        (2, "姓名", "姓名不能为空"),
        (2, "联系电话", "联系电话不能为空"),
        (2, "老人类别", "无法识别的老人类别：低保（可用：独居、空巢、留守、失能、重残、计划生育特殊家庭）"),
    ]


def test_contacts_pair_up_and_counts_must_match(tmp_path: Path) -> None:
    result = check(tmp_path, [
        row(1, 紧急联系人="李建国、王芳", 联系人电话="13900010001、0451-53990009", 与老人关系="儿子、网格员"),
        row(2, 紧急联系人="李建国、王芳", 联系人电话="13900010002"),
        row(3, 紧急联系人="", 联系人电话="13900010003", 与老人关系=""),
        row(4, 紧急联系人="", 联系人电话="", 与老人关系=""),
    ])
    assert errors(result) == [
        (3, "联系人电话", "联系人有2位，电话有1个，无法一一对应（用“、”分隔）"),
        (4, "紧急联系人", "填写了联系人电话，但没有联系人姓名"),
    ]
    first, last = result.records
    assert first.contacts is not None and last.contacts == ()
    assert [(c.name, c.kind, c.phone.number if c.phone else None) for c in first.contacts] == [
        ("李建国", ContactKind.FAMILY, "13900010001"), ("王芳", ContactKind.GRID_WORKER, "0451-53990009")]


def test_bad_phone_value_is_masked_in_report(tmp_path: Path) -> None:
    result = check(tmp_path, [row(1, 联系电话="1390000123")])
    (e,) = result.errors
    assert e.value == "139***0123" and "1390000123" not in str(e)


@pytest.mark.parametrize(("cell", "status"), [("是", ConsentStatus.GRANTED), ("√", ConsentStatus.GRANTED),
                                              ("2024-03-01", ConsentStatus.GRANTED), ("否", ConsentStatus.WITHDRAWN),
                                              ("", None)])
def test_consent(tmp_path: Path, cell: str, status: ConsentStatus | None) -> None:
    result = check(tmp_path, [row(1, 知情同意=cell)])
    assert result.records[0].consent is status


def test_optional_values_validated(tmp_path: Path) -> None:
    result = check(tmp_path, [row(1, 语言="俄语", 知情同意="也许")])
    assert errors(result) == [(2, "语言", "语言应为“普通话”或“朝鲜语”"), (2, "知情同意", "知情同意应填“是”“否”或同意日期")]


def test_default_risk_is_left_to_the_importer(tmp_path: Path) -> None:
    (r,) = check(tmp_path, [row(1)]).records
    assert r.risk_tier is None
    from storage.ledger.validate import default_risk

    assert default_risk(frozenset({Category.LIVING_ALONE, Category.DISABLED})) is RiskTier.HIGH
    assert default_risk(frozenset({Category.EMPTY_NEST})) is RiskTier.GENERAL
