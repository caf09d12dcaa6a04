"""Builders for messy ledger files (shared by the unit and integration ledger tests)."""

from __future__ import annotations

import csv
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from openpyxl import Workbook

from storage.ledger.idcard import make_id
from storage.regions import PlaceRef, RegionIndex

HEADER = ["序号", "姓名", "性别", "身份证号", "出生日期", "联系电话", "住址", "乡镇（街道）", "村（社区）",
          "老人类别", "紧急联系人", "联系人电话", "与老人关系", "语言", "知情同意"]


def ident(n: int, born: date | None = None, *, male: bool = False) -> str:
    """A valid, distinctive ID number for test elder ``n`` (born 1945-03-12, a day later per 400)."""
    born = born or date(1945, 3, 12) + timedelta(days=n // 400)
    seq = 100 + 2 * (n % 400) + (1 if male else 0)
    return make_id("230183", born, seq)


def row(n: int, **over: Any) -> list[Any]:
    """A valid data row in HEADER order for test elder ``n``; keyword overrides by header name."""
    values: dict[str, Any] = {
        "序号": n, "姓名": f"测试老人{n}", "性别": "女", "身份证号": ident(n), "出生日期": (date(1945, 3, 12) + timedelta(days=n // 400)).isoformat(),
        "联系电话": f"1390000{n:04d}", "住址": "青云村一组", "乡镇（街道）": "亚布力镇", "村（社区）": "青云村",
        "老人类别": "独居", "紧急联系人": f"儿子{n}", "联系人电话": f"1390001{n:04d}", "与老人关系": "儿子",
        "语言": "普通话", "知情同意": "是",
    }
    values.update(over)
    return [values[h] for h in HEADER]


def write_xlsx(path: Path, rows: list[list[Any]], *, merges: list[str] = ()) -> Path:  # type: ignore[assignment]
    wb = Workbook()
    ws = wb.active
    for r in rows:
        ws.append(r)
    for rng in merges:
        ws.merge_cells(rng)
    wb.save(path)
    return path


def write_csv(path: Path, rows: list[list[Any]], *, encoding: str = "utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def sample_index() -> RegionIndex:
    """The sample county's places, built by hand (no database)."""
    index = RegionIndex(scope="尚志市")
    towns = {"亚布力镇": ("230183102", ["亚布力社区", "青云村", "东兴村", "红旗村"]),
             "河东朝鲜族乡": ("230183205", ["河东村", "朝阳村", "新兴村", "光明村"])}
    rid = 1
    for tname, (tcode, villages) in towns.items():
        town = PlaceRef(rid, tcode, tname)
        index.add_township(town)
        rid += 1
        for i, v in enumerate(villages):
            index.add_village(tcode, PlaceRef(rid, f"{tcode}{201 + i}", v))
            rid += 1
    return index
