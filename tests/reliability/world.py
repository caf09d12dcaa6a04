"""A ledger for reliability tests: N consenting elders in one village, phones ``139xxxxxxxx``."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from storage.crypto import Vault
from storage.enums import Category, ConsentStatus, Locale, PhoneKind, RegionLevel, Sex, StaffRole
from storage.models import Elder, Region
from storage.models.elder import ElderPhone
from storage.models.staff import Staff


def number_of(i: int) -> str:
    return f"139{i:08d}"


def make_elders(sessions: sessionmaker[Session], vault: Vault, n: int, now: datetime,
                categories: frozenset[Category] = frozenset({Category.LIVING_ALONE})) -> list[int]:
    """Elders 0..n-1 (one phone each, consent granted) in 尚志镇/红旗村; returns their ids in order."""
    with sessions() as s, s.begin():
        county = Region(code="230183", name="尚志市", level=RegionLevel.COUNTY, path="230183")
        s.add(county)
        s.flush()
        town = Region(code="230183100", name="尚志镇", level=RegionLevel.TOWNSHIP, parent_id=county.id,
                      path="230183/230183100")
        s.add(town)
        s.flush()
        s.add(Staff(name="刘干事", role=StaffRole.TOWNSHIP_OFFICER, region_id=town.id, username="liu",
                    password_hash="x", active=True))
        rows = [{"name": f"王{i}", "sex": Sex.FEMALE, "id_number_enc": vault.encrypt(f"23018319400101{i:04d}"),
                 "id_number_hash": vault.blind_index(f"id-{i}"), "id_number_masked": "2301**********0000",
                 "region_id": town.id, "categories": categories, "locale": Locale.ZH, "call_windows": [],
                 "consent_status": ConsentStatus.GRANTED, "consent_at": now - timedelta(days=30),
                 "consent_by": "测试", "created_at": now - timedelta(days=30), "updated_at": now - timedelta(days=30)}
                for i in range(n)]
        for k in range(0, n, 2000):
            s.execute(insert(Elder), rows[k:k + 2000])
        ids = list(s.scalars(select(Elder.id).order_by(Elder.id)))
        phones = [{"elder_id": eid, "kind": PhoneKind.MOBILE, "number_enc": vault.encrypt(number_of(i)),
                   "number_hash": vault.blind_index(number_of(i)), "number_masked": number_of(i)[:3] + "****"
                   + number_of(i)[-4:], "position": 0} for i, eid in enumerate(ids)]
        for k in range(0, n, 2000):
            s.execute(insert(ElderPhone), phones[k:k + 2000])
        return ids


class Clock:
    """A settable fake clock (aware UTC)."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)

    def seconds(self) -> float:
        """The same clock as a monotonic float (for the circuit breaker)."""
        return self.t.timestamp()
