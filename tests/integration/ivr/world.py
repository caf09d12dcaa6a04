"""A tiny elder ledger for dialer tests: one village, elders with encrypted phones, a duty officer."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from storage.crypto import Vault
from storage.enums import Category, ConsentStatus, Locale, PhoneKind, RegionLevel, Sex, StaffRole
from storage.models import Elder, Region
from storage.models.elder import ElderPhone
from storage.models.staff import Staff


def make_world(sessions: sessionmaker[Session], vault: Vault, numbers: list[str],
               locale: Locale = Locale.ZH) -> list[int]:
    """Elders (one per number) in 尚志镇/红旗村, a township officer; returns the elder ids."""
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
        ids = []
        for i, number in enumerate(numbers):
            e = Elder(name=f"王{i}", sex=Sex.FEMALE, id_number_enc=vault.encrypt(f"2301831940010{i:05d}"),
                      id_number_hash=vault.blind_index(f"id{i}"), id_number_masked="2301**********0000",
                      region_id=town.id, categories=frozenset({Category.LIVING_ALONE}), locale=locale,
                      consent_status=ConsentStatus.GRANTED)
            e.phones.append(ElderPhone(kind=PhoneKind.MOBILE, number_enc=vault.encrypt(number),
                                       number_hash=vault.blind_index(number), number_masked=number[:3] + "****" + number[-4:],
                                       position=0))
            s.add(e)
            s.flush()
            ids.append(e.id)
        return ids
