"""Importing ledgers into a real database: all or nothing, updates instead of duplicates, round trips."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path
from typing import Any

from openpyxl import load_workbook
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from storage.crypto import Vault
from storage.enums import Category, Locale, PhoneKind, RiskTier
from storage.ledger.importer import LedgerImportReport, import_ledger
from storage.ledger.template import export_ledger
from storage.models import Contact, Elder, ElderPhone
from tests.conftest import SAMPLES
from tests.integration.ledger.conftest import fixed_now
from tests.unit.ledger.files import HEADER, ident, row, write_csv, write_xlsx


def run(path: Path, sessions: sessionmaker[Session], vault: Vault, **kw: Any) -> LedgerImportReport:
    return import_ledger(path, sessions=sessions, vault=vault, now=fixed_now, **kw)


def count(sessions: sessionmaker[Session], model: Any) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def sample_numbers() -> set[str]:
    """Every ID and phone number in the sample (as digits)."""
    with (SAMPLES / "ledger_sample_gbk.csv").open(encoding="gbk", newline="") as f:
        rows = list(csv.reader(f))[2:]
    out: set[str] = set()
    for r in rows:
        out.add(r[3])
        for cell in (r[5], r[13]):
            out.update(p.replace("-", "") for p in cell.split("、") if p)
    return out


def test_sample_imports_from_xlsx_then_gbk_csv_is_unchanged(sessions: sessionmaker[Session], vault: Vault, county: str) -> None:
    first = run(SAMPLES / "ledger_sample.xlsx", sessions, vault)
    assert first.ok, first.errors
    assert (first.created, first.updated, first.unchanged, first.rows) == (50, 0, 0, 50)
    again = run(SAMPLES / "ledger_sample_gbk.csv", sessions, vault)
    assert again.ok, again.errors
    assert "GBK" in again.source
    assert (again.created, again.updated, again.unchanged) == (0, 0, 50)
    assert count(sessions, Elder) == 50

    with sessions() as s:
        elders = list(s.scalars(select(Elder)))
        cats = set().union(*(e.categories for e in elders))
        assert cats == set(Category)
        assert sum(e.locale is Locale.KO for e in elders) >= 10
        for e in elders:
            if {Category.LIVING_ALONE, Category.DISABLED} <= e.categories:
                assert e.risk_tier is RiskTier.HIGH
        landlines = list(s.scalars(select(ElderPhone).where(ElderPhone.kind == PhoneKind.LANDLINE)))
        assert landlines and all(vault.decrypt(p.number_enc).startswith("0451-") for p in landlines)
        some = elders[0]
        number = vault.decrypt(some.id_number_enc)
        assert some.id_number_hash == vault.blind_index(number)
        assert some.id_number_masked == number[:4] + "*" * 10 + number[-4:]


def test_no_clear_numbers_in_the_database(sessions: sessionmaker[Session], vault: Vault, county: str) -> None:
    assert run(SAMPLES / "ledger_sample.xlsx", sessions, vault).ok
    dump: list[str] = []
    with sessions() as s:
        for table in ("elders", "elder_phones", "contacts"):
            for r in s.execute(text(f"SELECT * FROM {table}")):
                dump.extend(str(v) for v in r if not isinstance(v, (bytes, memoryview)))
    blob = "\n".join(dump).replace("-", "")
    leaked = [n for n in sample_numbers() if n in blob]
    assert leaked == []


def test_messy_workbook_imports(tmp_path: Path, sessions: sessionmaker[Session], vault: Vault, county: str) -> None:
    x_id = next(n for s in range(500) if (n := ident(s)).endswith("X"))
    fw = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else "x" for c in x_id)
    rows = [
        ["尚志市特殊困难老人台帐"], [],
        HEADER,
        row(1, 联系电话=13900000001.0),
        [],
        row(2, 身份证号=fw, 出生日期=datetime(1945, 3, 12), 性别="", 联系电话="０４５１－５３９９ ０００２"),
        row(3, 联系电话="+86 139-0000-0003、0451 53990003", 老人类别="独居/半失能", 语言="韩语"),
        [None, None], [],
        ["合计：3人"], ["填表人：张三", None, None, "审核人：李四"],
    ]
    path = write_xlsx(tmp_path / "messy.xlsx", rows, merges=["A1:O1"])
    report = run(path, sessions, vault)
    assert report.ok, [str(e) for e in report.errors]
    assert (report.created, report.rows) == (3, 3)
    with sessions() as s:
        by_hash = {e.id_number_hash: e for e in s.scalars(select(Elder))}
        e2 = by_hash[vault.blind_index(x_id)]
        assert [vault.decrypt(p.number_enc) for p in e2.phones] == ["0451-53990002"]
        e3 = by_hash[vault.blind_index(ident(3))]
        assert e3.locale is Locale.KO and e3.categories == {Category.LIVING_ALONE, Category.DISABLED}
        assert e3.risk_tier is RiskTier.HIGH
        assert [p.kind for p in e3.phones] == [PhoneKind.MOBILE, PhoneKind.LANDLINE]


def test_one_bad_row_writes_nothing(tmp_path: Path, sessions: sessionmaker[Session], vault: Vault, county: str) -> None:
    bad = ident(4)[:17] + ("1" if ident(4)[17] != "1" else "2")
    path = write_csv(tmp_path / "bad.csv", [HEADER, row(1), row(2), row(3, 出生日期="1950-01-01"), row(4, 身份证号=bad),
                                            row(5), row(1)], encoding="utf-8-sig")
    report = run(path, sessions, vault)
    assert [(e.row, e.column) for e in report.errors] == [(4, "出生日期"), (5, "身份证号"), (7, "身份证号")]
    assert (report.created, report.updated, report.unchanged) == (0, 0, 0)
    assert not report.written
    assert count(sessions, Elder) == 0 and count(sessions, ElderPhone) == 0 and count(sessions, Contact) == 0


def test_bad_row_on_reimport_changes_nothing(tmp_path: Path, sessions: sessionmaker[Session], vault: Vault, county: str) -> None:
    good = write_xlsx(tmp_path / "a.xlsx", [HEADER, row(1), row(2)])
    assert run(good, sessions, vault).created == 2
    changed = write_xlsx(tmp_path / "b.xlsx", [HEADER, row(1, 姓名="改名了"), row(2), row(3, 联系电话="123")])
    report = run(changed, sessions, vault)
    assert [(e.row, e.column) for e in report.errors] == [(4, "联系电话")]
    with sessions() as s:
        assert sorted(s.scalars(select(Elder.name))) == ["测试老人1", "测试老人2"]


def test_reimport_updates_instead_of_duplicating(tmp_path: Path, sessions: sessionmaker[Session], vault: Vault, county: str) -> None:
    first = write_xlsx(tmp_path / "a.xlsx", [HEADER, row(1), row(2), row(3)])
    assert run(first, sessions, vault).created == 3
    second = write_xlsx(tmp_path / "b.xlsx", [
        HEADER,
        row(1, 联系电话="13900009999、0451-53999999"),  # phones replaced
        row(2, 老人类别="空巢", 紧急联系人="邻居甲、网格员乙", 联系人电话="13900019998、13900019999", 与老人关系="邻居、网格员"),
        row(3),
        row(4),  # new
    ])
    report = run(second, sessions, vault)
    assert report.ok, report.errors
    assert (report.created, report.updated, report.unchanged) == (1, 2, 1)
    assert count(sessions, Elder) == 4
    with sessions() as s:
        e1 = s.scalar(select(Elder).where(Elder.id_number_hash == vault.blind_index(ident(1))))
        assert e1 is not None
        assert [vault.decrypt(p.number_enc) for p in e1.phones] == ["13900009999", "0451-53999999"]
        e2 = s.scalar(select(Elder).where(Elder.id_number_hash == vault.blind_index(ident(2))))
        assert e2 is not None and e2.categories == {Category.EMPTY_NEST}
        assert [(c.name, c.relation, c.position) for c in e2.contacts] == [("邻居甲", "邻居", 0), ("网格员乙", "网格员", 1)]
    assert count(sessions, ElderPhone) == 5  # 2 + 1 + 1 + 1: old phones gone, none orphaned
    assert count(sessions, Contact) == 5


def test_dry_run_counts_but_writes_nothing(tmp_path: Path, sessions: sessionmaker[Session], vault: Vault, county: str) -> None:
    report = run(SAMPLES / "ledger_sample.xlsx", sessions, vault, dry_run=True)
    assert report.ok and report.created == 50 and not report.written
    assert count(sessions, Elder) == 0


def test_unknown_county_and_missing_regions(tmp_path: Path, sessions: sessionmaker[Session], vault: Vault) -> None:
    report = run(SAMPLES / "ledger_sample.xlsx", sessions, vault)
    assert report.errors and report.errors[0].row is None and "regions import" in report.errors[0].reason


def test_county_option(sessions: sessionmaker[Session], vault: Vault, county: str) -> None:
    assert run(SAMPLES / "ledger_sample.xlsx", sessions, vault, county_code=county).created == 50
    report = run(SAMPLES / "ledger_sample.xlsx", sessions, vault, county_code="230102")
    assert report.errors and "230102" in report.errors[0].reason


def test_export_reveal_round_trip_is_unchanged(tmp_path: Path, sessions: sessionmaker[Session], vault: Vault, county: str) -> None:
    assert run(SAMPLES / "ledger_sample.xlsx", sessions, vault).created == 50
    out = tmp_path / "export.xlsx"
    result = export_ledger(out, sessions, vault=vault, reveal=True)
    assert result.rows == 50
    report = run(out, sessions, vault)
    assert report.ok, [str(e) for e in report.errors[:5]]
    assert (report.created, report.updated, report.unchanged) == (0, 0, 50)


def test_masked_export_has_no_clear_numbers_and_cannot_be_reimported(
    tmp_path: Path, sessions: sessionmaker[Session], vault: Vault, county: str
) -> None:
    assert run(SAMPLES / "ledger_sample.xlsx", sessions, vault).created == 50
    out = tmp_path / "masked.xlsx"
    assert export_ledger(out, sessions, region_code="230183205").rows == 18  # 河东朝鲜族乡 only
    cells = [str(c) for r in load_workbook(out, read_only=True).active.iter_rows(values_only=True) for c in r if c]
    blob = io.StringIO("\n".join(cells)).getvalue().replace("-", "")
    assert not [n for n in sample_numbers() if n in blob]
    assert any("****" in c for c in cells)
    report = run(out, sessions, vault)
    assert report.errors and count(sessions, Elder) == 50


def test_regions_reimport_renames_and_is_idempotent(sessions: sessionmaker[Session], county: str, tmp_path: Path) -> None:
    from storage.db import transaction
    from storage.models import Region
    from storage.regions import import_regions, load_region_file

    with transaction(sessions) as s:
        again = import_regions(s, load_region_file(SAMPLES / "regions.yaml"))
    assert (again.created, again.updated, again.unchanged) == (0, 0, 13)
    renamed = tmp_path / "r.yaml"
    renamed.write_text((SAMPLES / "regions.yaml").read_text(encoding="utf-8").replace("红旗村", "红旗社区"), encoding="utf-8")
    with transaction(sessions) as s:
        result = import_regions(s, load_region_file(renamed))
    assert (result.created, result.updated, result.unchanged) == (0, 1, 12)
    with sessions() as s:
        village = s.scalar(select(Region).where(Region.code == "230183102203"))
        assert village is not None and village.name == "红旗社区"
        assert village.path == "23/2301/230183/230183102/230183102203"


def test_reveal_needs_the_vault(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    import pytest

    with pytest.raises(ValueError, match="vault"):
        export_ledger(tmp_path / "x.xlsx", sessions, reveal=True)
