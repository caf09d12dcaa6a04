"""A small, real region tree with staff and elders, shared by console tests, browser tests and the bench.

Province 23 → city 2301 → county 230183 (宾县) → townships 甲镇 (…001) and 乙镇 (…002);
villages 一村, 二村 in 甲镇 and 三村 in 乙镇. Staff: admin, county officer, two township
officers, a visitor in 一村. Elders: 张桂兰 (一村, 失能+独居), 李秀英 (二村), 王德福 (三村, 乙镇).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy.orm import Session, sessionmaker

from console.auth import hash_password
from storage.crypto import Vault
from storage.enums import Category, ConsentStatus, ContactKind, PhoneKind, RegionLevel, StaffRole
from storage.ledger.idcard import make_id
from storage.masking import mask_id, mask_phone
from storage.models.elder import Contact, Elder, ElderPhone, Profile
from storage.models.region import Region
from storage.models.staff import Staff

PASSWORD = "correct-horse-9"  # every test account's password


@dataclass
class World:
    regions: dict[str, int] = field(default_factory=dict)  # code -> id
    staff: dict[str, int] = field(default_factory=dict)  # username -> id
    elders: dict[str, int] = field(default_factory=dict)  # short key -> id
    id_numbers: dict[str, str] = field(default_factory=dict)
    phones: dict[str, str] = field(default_factory=dict)
    contacts: dict[str, list[int]] = field(default_factory=dict)
    phone_ids: dict[str, int] = field(default_factory=dict)


REGIONS = [
    ("23", "黑龙江省", RegionLevel.PROVINCE, None),
    ("2301", "哈尔滨市", RegionLevel.CITY, "23"),
    ("230125", "宾县", RegionLevel.COUNTY, "2301"),
    ("230125001", "甲镇", RegionLevel.TOWNSHIP, "230125"),
    ("230125002", "乙镇", RegionLevel.TOWNSHIP, "230125"),
    ("230125001001", "一村", RegionLevel.VILLAGE, "230125001"),
    ("230125001002", "二村", RegionLevel.VILLAGE, "230125001"),
    ("230125002001", "三村", RegionLevel.VILLAGE, "230125002"),
]

STAFF = [
    ("admin", "管理员", StaffRole.ADMIN, "23"),
    ("county", "县民政赵", StaffRole.COUNTY_OFFICER, "230125"),
    ("jia", "甲镇民政钱", StaffRole.TOWNSHIP_OFFICER, "230125001"),
    ("yi", "乙镇民政孙", StaffRole.TOWNSHIP_OFFICER, "230125002"),
    ("visitor1", "一村探访员周", StaffRole.VISITOR, "230125001001"),
]

ELDERS = [
    ("zhang", "张桂兰", "230125001001", {Category.DISABLED, Category.LIVING_ALONE}, "13904510001", 11),
    ("li", "李秀英", "230125001002", {Category.EMPTY_NEST}, "13904510002", 12),
    ("wang", "王德福", "230125002001", {Category.LIVING_ALONE}, "13904510003", 13),
]


def build_world(sessions: sessionmaker[Session], vault: Vault, created_at: datetime) -> World:
    w = World()
    pw_hash = hash_password(PASSWORD)
    with sessions() as s, s.begin():
        paths: dict[str, str] = {}
        for code, name, level, parent in REGIONS:
            path = f"{paths[parent]}/{code}" if parent else code
            paths[code] = path
            r = Region(code=code, name=name, level=level, parent_id=w.regions.get(parent or ""), path=path)
            s.add(r)
            s.flush()
            w.regions[code] = r.id
        for username, name, role, code in STAFF:
            st = Staff(name=name, role=role, region_id=w.regions[code], username=username, password_hash=pw_hash)
            s.add(st)
            s.flush()
            w.staff[username] = st.id
        for key, name, village, cats, phone, seq in ELDERS:
            id_number = make_id("230125", date(1940, 3, 12), seq * 2 + 1)
            e = Elder(name=name, region_id=w.regions[village], categories=frozenset(cats),
                      id_number_enc=vault.encrypt(id_number), id_number_hash=vault.blind_index(id_number),
                      id_number_masked=mask_id(id_number), address=f"{name}家", created_at=created_at,
                      consent_status=ConsentStatus.GRANTED)
            e.phones.append(ElderPhone(kind=PhoneKind.MOBILE, number_enc=vault.encrypt(phone),
                                       number_hash=vault.blind_index(phone), number_masked=mask_phone(phone)))
            son = f"1380451{seq:04d}"
            daughter = f"1370451{seq:04d}"
            e.contacts.append(Contact(name=f"{name[0]}大强", relation="儿子", kind=ContactKind.FAMILY, position=0,
                                      phone_enc=vault.encrypt(son), phone_hash=vault.blind_index(son),
                                      phone_masked=mask_phone(son)))
            e.contacts.append(Contact(name=f"{name[0]}小红", relation="女儿", kind=ContactKind.FAMILY, position=1,
                                      phone_enc=vault.encrypt(daughter), phone_hash=vault.blind_index(daughter),
                                      phone_masked=mask_phone(daughter)))
            e.profile = Profile(health_conditions=["高血压"], mobility="失能" if Category.DISABLED in cats else "自理",
                                home_hazards=["火炕"])
            s.add(e)
            s.flush()
            w.elders[key] = e.id
            w.id_numbers[key] = id_number
            w.phones[key] = phone
            w.contacts[key] = [c.id for c in e.contacts]
            w.phone_ids[key] = e.phones[0].id
    return w
