"""``POST /api/signals`` over real HTTP (aiohttp test server on 127.0.0.1), per-device token auth."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import load_policy
from scheduler.queue import write_session
from scheduler.signals import register_device, signals_routes
from scheduler.windows import LOCAL_TZ
from storage.enums import Category, CheckInStatus
from storage.models import CheckIn, DeviceSignal
from tests.integration.scheduler.data import add_elder, make_regions

NOW = datetime(2026, 12, 1, 23, 10, tzinfo=LOCAL_TZ)  # quiet hours: an SOS is called anyway
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
async def api(sessions: sessionmaker[Session]):  # type: ignore[no-untyped-def]
    with sessions() as s, s.begin():
        regs = make_regions(s)
        elder = add_elder(s, 1, regs["230183100"], {Category.LIVING_ALONE})
    with write_session(sessions) as s:
        sos = register_device(s, device_id="sos-1", elder_id=elder, kind="sos_button", now=NOW)
        water = register_device(s, device_id="water-1", elder_id=elder, kind="water_meter", now=NOW)
    app = web.Application()
    app.add_routes(signals_routes(sessions, load_policy(), lambda: NOW))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, {"sos": sos, "water": water, "elder": elder}
    finally:
        await client.close()


def counts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as s:
        return (s.scalar(select(func.count()).select_from(CheckIn)) or 0,
                s.scalar(select(func.count()).select_from(DeviceSignal)) or 0)


async def post(client: TestClient, token: str | None, body: object = None, raw: bytes | None = None
               ) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if raw is not None:
        resp = await client.post("/api/signals", data=raw, headers={**headers, "Content-Type": "application/json"})
    else:
        resp = await client.post("/api/signals", json=body, headers=headers)
    assert resp.content_type == "application/json"
    return resp.status, await resp.json()


SOS = {"device_id": "sos-1", "kind": "sos", "observed_at": "2026-12-01T23:09:30+08:00"}


async def test_good_token_sos_queues_an_immediate_call(api, sessions) -> None:
    client, t = api
    status, body = await post(client, t["sos"], SOS)
    assert status == 200 and body["action"] == "call_now" and CJK.search(str(body["message"]))
    with sessions() as s:
        c = s.get(CheckIn, body["checkin_id"])
        assert c is not None and c.elder_id == t["elder"] and c.priority == 0 and c.ignore_call_window
        assert c.status is CheckInStatus.DUE and c.dialog_flags["source"] == "api:sos-1"
        sig = s.scalar(select(DeviceSignal))
        assert sig is not None and sig.source == "api:sos-1" and sig.action == "call_now"
    # A replay of the same press is recorded once and gives no second call.
    status, again = await post(client, t["sos"], SOS)
    assert status == 200 and again["action"] == "duplicate"
    assert counts(sessions) == (1, 1)


async def test_water_reading_below_threshold(api, sessions) -> None:
    client, t = api
    status, body = await post(client, t["water"], {"device_id": "water-1", "kind": "water",
                                                   "observed_at": "2026-12-01T22:00:00+08:00", "litres_24h": 3.5})
    assert status == 200 and body["action"] == "call_within"


@pytest.mark.parametrize("case", ["no_header", "bad_token", "other_device_token", "not_bearer"])
async def test_bad_tokens_are_refused_in_chinese(api, sessions, case) -> None:
    client, t = api
    before = counts(sessions)
    if case == "not_bearer":
        resp = await client.post("/api/signals", json=SOS, headers={"Authorization": f"Basic {t['sos']}"})
        status, body = resp.status, await resp.json()
    else:
        token = {"no_header": None, "bad_token": "x" * 43, "other_device_token": t["water"]}[case]
        status, body = await post(client, token, SOS)
    assert status in (401, 403)
    assert CJK.search(str(body["error"]))
    assert counts(sessions) == before


@pytest.mark.parametrize("raw", [
    b"{not json", b"", b"[1, 2]", b'"sos"', b"\xff\xfe\x00",
    b'{"device_id": "sos-1", "kind": "fire", "observed_at": "2026-12-01T23:09:30+08:00"}',
    b'{"device_id": "sos-1", "kind": "sos"}',
    b'{"device_id": "sos-1", "kind": "sos", "observed_at": "yesterday"}',
    b'{"device_id": "sos-1", "kind": "sos", "observed_at": "2026-12-01T23:09:30+08:00", "extra": 1}',
    b'{"device_id": "sos-1", "kind": "sos", "observed_at": "2026-12-01T23:09:30"}',  # no time zone
    b'{"device_id": "water-1", "kind": "water", "observed_at": "2026-12-01T22:00:00+08:00"}',  # no litres
    b'{"device_id": "water-1", "kind": "water", "observed_at": "2026-12-01T22:00:00+08:00", "litres_24h": -1}',
])
async def test_malformed_bodies_are_400_never_500(api, sessions, raw) -> None:
    client, t = api
    before = counts(sessions)
    token = t["water"] if b"water-1" in raw else t["sos"]
    status, body = await post(client, token, raw=raw)
    assert status == 400, body
    assert CJK.search(str(body["error"]))
    assert counts(sessions) == before
