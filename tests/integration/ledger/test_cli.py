"""``tanfang regions …`` and ``tanfang ledger …`` end to end through ``tanfang.cli.main``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from openpyxl import load_workbook

from tanfang.cli import main
from tests.conftest import SAMPLES
from tests.integration.ledger.test_import import sample_numbers
from tests.unit.ledger.files import HEADER, ident, row, write_csv


@pytest.fixture
def cli_db(settings_env: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Settings pointing at the migrated test database (SQLite or PostgreSQL), regions imported."""
    monkeypatch.setenv("TANFANG_DATABASE_URL", db_url)
    assert main(["regions", "import", str(SAMPLES / "regions.yaml")]) == 0
    return db_url


def test_unmigrated_database_gives_clear_error(settings_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "import", str(SAMPLES / "ledger_sample.xlsx")]) == 2
    assert "tanfang db upgrade" in capsys.readouterr().err


def test_regions_import_is_idempotent_and_listed(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["regions", "import", str(SAMPLES / "regions.yaml")]) == 0
    assert "新建 0，更新 0，未变 13" in capsys.readouterr().out
    assert main(["regions", "list", "--under", "230183205"]) == 0
    out = capsys.readouterr().out
    assert "河东朝鲜族乡" in out and "朝阳村" in out and "青云村" not in out


def test_bad_region_file(cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text('- code: "23"\n  name: 黑龙江省\n  children:\n    - {code: "2201", name: 长春市}\n', encoding="utf-8")
    assert main(["regions", "import", str(bad)]) == 1
    assert "应以上级代码 23 开头" in capsys.readouterr().err


def test_import_json_then_reimport(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["ledger", "import", str(SAMPLES / "ledger_sample.xlsx"), "--json", "--county", "230183"]) == 0
    assert json.loads(capsys.readouterr().out) == {"created": 50, "updated": 0, "unchanged": 0, "errors": []}
    assert main(["ledger", "import", str(SAMPLES / "ledger_sample_gbk.csv")]) == 0
    assert "新建 0，更新 0，未变 50" in capsys.readouterr().out


def test_invalid_file_exit_1_names_rows_and_writes_nothing(
    cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    bad_id = ident(2)[:17] + ("3" if ident(2)[17] != "3" else "4")
    path = write_csv(tmp_path / "bad.csv", [["标题"], HEADER, row(1), row(2, 身份证号=bad_id), row(3, 出生日期="1944-01-01"),
                                            row(1)], encoding="gbk")
    capsys.readouterr()
    caplog.set_level(logging.DEBUG)
    assert main(["ledger", "import", str(path)]) == 1
    out = capsys.readouterr().out
    assert "未写入任何数据" in out
    assert f"第4行“身份证号”列（{bad_id[:4]}{'*' * 10}{bad_id[-4:]}）：身份证号校验位不正确" in out
    assert "第5行“出生日期”列" in out and "第6行“身份证号”列" in out and "与第3行的身份证号重复" in out
    assert bad_id not in out and ident(1) not in out

    assert main(["ledger", "import", str(path), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert (data["created"], data["updated"], data["unchanged"]) == (0, 0, 0)
    assert [(e["row"], e["column"]) for e in data["errors"]] == [(4, "身份证号"), (5, "出生日期"), (6, "身份证号")]
    assert all(set(e) >= {"row", "column", "reason"} for e in data["errors"])

    assert main(["ledger", "import", str(SAMPLES / "ledger_sample.xlsx"), "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["created"] == 50  # nothing was written before
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert bad_id not in logged and not [n for n in sample_numbers() if n in logged]


def test_template_and_export(cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tpl = tmp_path / "模板.xlsx"
    assert main(["ledger", "template", str(tpl)]) == 0
    wb = load_workbook(tpl)
    header = [c.value for c in wb["台帐"][1]]
    assert header[:4] == ["姓名", "性别", "身份证号", "出生日期"] and "填写说明" in wb.sheetnames
    assert main(["ledger", "import", str(tpl), "--json"]) == 0  # the empty template imports as nothing
    capsys.readouterr()

    assert main(["ledger", "import", str(SAMPLES / "ledger_sample.xlsx")]) == 0
    out = tmp_path / "导出.xlsx"
    assert main(["ledger", "export", str(out), "--region", "230183102"]) == 0
    assert "已导出 32 位老人" in capsys.readouterr().out
    cells = "\n".join(str(c) for r in load_workbook(out).active.iter_rows(values_only=True) for c in r if c)
    assert not [n for n in sample_numbers() if n in cells.replace("-", "")]

    revealed = tmp_path / "明文.xlsx"
    assert main(["ledger", "export", str(revealed), "--reveal"]) == 0
    assert main(["ledger", "import", str(revealed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"created": 0, "updated": 0, "unchanged": 50, "errors": []}
    assert main(["ledger", "export", str(tmp_path / "x.xlsx"), "--region", "999"]) == 1


def test_missing_file(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ledger", "import", "/nonexistent/台帐.xlsx"]) == 2
    assert "找不到台帐文件" in capsys.readouterr().err


def test_progress_bar_on_large_files(cli_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [HEADER] + [row(n, 联系电话=f"137{n:08d}", 联系人电话=f"136{n:08d}") for n in range(1, 2101)]
    path = write_csv(tmp_path / "big.csv", rows, encoding="gbk")
    capsys.readouterr()
    assert main(["ledger", "import", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["created"] == 2100
    assert "校验" in captured.err and "写入" in captured.err and "/2100" in captured.err
