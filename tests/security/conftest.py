"""Security fixtures: the console world plus staff OUTSIDE 张桂兰's regions at every level.

Own-region principals (admin, county, jia, visitor1) and other-region principals of the same
roles (county2 of another county, yi of the sibling township, visitor3 of 三村) all try the same
resources of 张桂兰 (一村, 甲镇, 宾县).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.orm import Session, sessionmaker

from console.app import mount
from console.auth import hash_password
from console.config import ConsoleConfig
from storage.crypto import Vault
from storage.enums import EventKind, RegionLevel, StaffRole
from storage.models.checkin import CallAttempt
from storage.models.region import Region
from storage.models.schedule import SurgeEvent, SurgeEventRegion
from storage.models.staff import Staff
from tests.integration.console.conftest import T0, Clock
from tests.integration.console.test_lifecycle import make_escalation
from tests.integration.console.world import PASSWORD, World, build_world

OWN = {"admin": "admin", "county_officer": "county", "township_officer": "jia", "visitor": "visitor1"}
OTHER = {"admin": "admin", "county_officer": "county2", "township_officer": "yi", "visitor": "visitor3"}


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def world(sessions: sessionmaker[Session], vault: Vault) -> World:
    w = build_world(sessions, vault, T0 - timedelta(days=60))
    pw = hash_password(PASSWORD)
    with sessions() as s, s.begin():
        city = s.get(Region, w.regions["2301"])
        assert city is not None
        other = Region(code="230126", name="巴彦县", level=RegionLevel.COUNTY, parent_id=city.id, path=f"{city.path}/230126")
        s.add(other)
        s.flush()
        w.regions["230126"] = other.id
        for username, name, role, region in (("county2", "巴彦县民政李", StaffRole.COUNTY_OFFICER, other.id),
                                             ("visitor3", "三村探访员吴", StaffRole.VISITOR, w.regions["230125002001"])):
            st = Staff(name=name, role=role, region_id=region, username=username, password_hash=pw)
            s.add(st)
            s.flush()
            w.staff[username] = st.id
    return w


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    d = tmp_path / "recordings"
    d.mkdir()
    return d


@pytest.fixture
def target(sessions: sessionmaker[Session], world: World, clock: Clock, recordings: Path) -> dict[str, int]:
    """张桂兰's escalation, a recorded call and a lockdown of her village."""
    esc = make_escalation(sessions, world, clock, reason="暖气不热")
    (recordings / "c1.wav").write_bytes(b"RIFF....WAVE")
    with sessions() as s, s.begin():
        call = CallAttempt(elder_id=world.elders["zhang"], started_at=clock(), recording_path="c1.wav",
                           transcript=[{"who": "elder", "text": "暖气不热"}])
        s.add(call)
        ev = SurgeEvent(kind=EventKind.LOCKDOWN, title="一村封控", source="staff", starts_at=clock(),
                        ends_at=clock() + timedelta(days=7), status="active")
        ev2 = SurgeEvent(kind=EventKind.LOCKDOWN, title="一村封控二", source="staff", starts_at=clock(),
                         ends_at=clock() + timedelta(days=7), status="active")
        s.add_all([ev, ev2])
        s.flush()
        s.add(SurgeEventRegion(event_id=ev.id, region_id=world.regions["230125001001"]))
        s.add(SurgeEventRegion(event_id=ev2.id, region_id=world.regions["230125001001"]))
        ids = {"esc": esc, "call": call.id, "event": ev.id, "event2": ev2.id, "elder": world.elders["zhang"],
               "phone": world.phone_ids["zhang"], "contact": world.contacts["zhang"][0]}
    return ids | wechat_target(sessions, world, clock)


def wechat_target(sessions: sessionmaker[Session], world: World, clock: Clock) -> dict[str, int]:
    """A live binding code for 张桂兰 herself and a family member's WeChat binding."""
    from storage.models.wechat import WechatBinding, WechatBindingCode

    with sessions() as s, s.begin():
        code = WechatBindingCode(code_hash="matrix-test", kind="code", role="elder", elder_id=world.elders["zhang"],
                                 created_at=clock(), expires_at=clock() + timedelta(days=3), attempts=0,
                                 max_attempts=5)
        b = WechatBinding(openid="o_matrix_family_1", role="family", elder_id=world.elders["zhang"],
                          contact_id=world.contacts["zhang"][0], consent_at=clock(), consent_text="同意",
                          bound_at=clock(), digest_opt_in=False)
        s.add_all([code, b])
        s.flush()
        return {"wcode": code.id, "wbinding": b.id}


def console_app(sessions: sessionmaker[Session], vault: Vault, clock: Clock, recordings: Path) -> web.Application:
    app = web.Application()
    mount(app, sessions=sessions, vault=vault, now=clock, config=ConsoleConfig(recordings_dir=recordings))
    return app


@pytest.fixture
async def client(sessions: sessionmaker[Session], vault: Vault, clock: Clock, recordings: Path,
                 world: World) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(console_app(sessions, vault, clock, recordings), host="127.0.0.1")) as c:
        yield c
