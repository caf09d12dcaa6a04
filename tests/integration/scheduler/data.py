"""Test data for the scheduler: a small region tree (黑龙江/哈尔滨/尚志市/…) and bulk elders."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from storage.enums import Category, ConsentStatus, RegionLevel
from storage.models import Elder, Region
from storage.models.base import categories_to_mask

NOW = datetime(2026, 1, 1, tzinfo=UTC)

REGIONS = [
    # code, name, level, parent code
    ("23", "黑龙江省", RegionLevel.PROVINCE, None),
    ("2301", "哈尔滨市", RegionLevel.CITY, "23"),
    ("230183", "尚志市", RegionLevel.COUNTY, "2301"),
    ("230183100", "尚志镇", RegionLevel.TOWNSHIP, "230183"),
    ("230184", "五常市", RegionLevel.COUNTY, "2301"),
    ("2302", "齐齐哈尔市", RegionLevel.CITY, "23"),
    ("230202", "龙沙区", RegionLevel.COUNTY, "2302"),
]


def make_regions(session: Session) -> dict[str, Region]:
    out: dict[str, Region] = {}
    for code, name, level, parent in REGIONS:
        p = out.get(parent) if parent else None
        r = Region(code=code, name=name, level=level, parent_id=p.id if p else None,
                   path=f"{p.path}/{code}" if p else code)
        session.add(r)
        session.flush()
        out[code] = r
    return out


def elder_row(i: int, region_id: int, categories: set[Category], **kw: Any) -> dict[str, Any]:
    row = {
        "name": f"老人{i}", "id_number_enc": b"x", "id_number_hash": f"h{i:012d}", "id_number_masked": "2301********0000",
        "region_id": region_id, "categories": categories_to_mask(categories), "risk_tier": "general", "locale": "zh-CN",
        "call_windows": [], "consent_status": "granted", "status": "active", "created_at": NOW, "updated_at": NOW,
    }
    row.update(kw)
    return row


def add_elders(session: Session, rows: list[dict[str, Any]]) -> None:
    session.execute(insert(Elder), rows)


def add_elder(session: Session, i: int, region: Region, categories: set[Category], **kw: Any) -> int:
    kw.setdefault("consent_status", ConsentStatus.GRANTED)  # the service is voluntary: planned only with consent
    e = Elder(name=f"老人{i}", id_number_enc=b"x", id_number_hash=f"h{i:012d}", id_number_masked="2301****",
              region_id=region.id, categories=frozenset(categories), **kw)
    session.add(e)
    session.flush()
    return e.id
