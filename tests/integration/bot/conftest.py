"""A running /wechat callback on 127.0.0.1 against the WeChat simulator and the fake API,
over SQLite and PostgreSQL, in plain, compatible and safe mode."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import Engine

from bot.adapters import EscalationVisits, QueueCalls
from bot.api import ApiConfig, TokenStore, WechatApi
from bot.callback import CallbackService, add_routes
from bot.dedup import DedupStore, write_session
from bot.flows import BotConfig, DefaultRecorder, Flows
from bot.ports import BotTurn
from bot.testing import FakeWechatApi, WechatServerSim, new_aes_key, reply_content
from bot.wire import CallbackKeys
from storage.crypto import Vault
from storage.enums import ConsentStatus, RegionLevel, StaffRole
from storage.masking import mask_phone
from storage.models.elder import Contact, Elder, ElderPhone, Profile
from storage.models.region import Region
from storage.models.staff import Staff

APPID = "wx1234567890abcdef"
SECRET = "s3cret"


class KeywordEngine:
    """Test stand-in for the dialogs engine (not landed yet): asks once, ends on the answer."""

    def start(self, *, elder_id: int, elder_name: str, locale: str, now: datetime) -> tuple[dict[str, Any], BotTurn]:
        return {"step": "ask"}, BotTurn(texts=(f"{elder_name}您好，最近身体怎么样？",), options=(("1", "挺好"), ("2", "不太好")))

    def answer(self, state: dict[str, Any], *, text: str | None, digit: str | None, now: datetime,
               intent: Any = None) -> tuple[dict[str, Any], BotTurn]:
        if digit == "1" or (text and "挺好" in text):
            return {"step": "end"}, BotTurn(texts=("好的，祝您身体健康！",), finished=True, outcome="well", intents=("fine",))
        if digit == "2" or (text and ("不" in text or "晕" in text)):
            return {"step": "end"}, BotTurn(texts=("知道了，工作人员会尽快联系您。",), finished=True, outcome="needs_followup", intents=("unwell",))
        return state, BotTurn(texts=("没听明白。",), options=(("1", "挺好"), ("2", "不太好")))


@dataclass
class World:
    region_id: int
    elder_id: int
    contact_id: int
    contact2_id: int
    staff_id: int
    elder_phone: str = "13812340001"
    contact_phone: str = "+86 139-1234-5678"


def seed(engine: Engine, vault: Vault) -> World:
    with write_session(engine) as s:
        prov = Region(code="23", name="黑龙江省", level=RegionLevel.PROVINCE, path="23")
        s.add(prov)
        s.flush()
        village = Region(code="230183001", name="红星村", level=RegionLevel.VILLAGE, parent_id=prov.id, path="23/230183001")
        s.add(village)
        s.flush()
        idn = "230183194501011234"
        elder = Elder(
            name="王秀英", id_number_enc=vault.encrypt(idn), id_number_hash=vault.blind_index(idn),
            id_number_masked="2301**********1234", region_id=village.id, consent_status=ConsentStatus.GRANTED,
        )
        s.add(elder)
        s.flush()
        s.add(ElderPhone(elder_id=elder.id, kind="mobile", number_enc=vault.encrypt("13812340001"),
                         number_hash=vault.blind_index("13812340001"), number_masked=mask_phone("13812340001")))
        c = Contact(elder_id=elder.id, name="李明", relation="儿子", phone_enc=vault.encrypt("+86 139-1234-5678"),
                    phone_hash=vault.blind_index("13912345678"), phone_masked="139****5678", may_receive_alerts=True)
        c2 = Contact(elder_id=elder.id, name="李华", relation="女儿", phone_enc=vault.encrypt("13700009999"),
                     phone_hash=vault.blind_index("13700009999"), phone_masked="137****9999", position=1,
                     may_receive_alerts=False)
        s.add_all([c, c2])
        s.add(Profile(elder_id=elder.id, health_details_shared_with_family=False))
        staff = Staff(name="赵干事", role=StaffRole.VISITOR, region_id=village.id, phone_enc=vault.encrypt("13600001111"),
                      phone_hash=vault.blind_index("13600001111"), phone_masked="136****1111")
        s.add(staff)
        s.flush()
        return World(village.id, elder.id, c.id, c2.id, staff.id)


@dataclass
class Harness:
    engine: Engine
    vault: Vault
    world: World
    sim: WechatServerSim
    api_fake: FakeWechatApi
    api: WechatApi
    service: CallbackService
    url: str
    http: aiohttp.ClientSession
    flows: Flows
    statuses: list[int] = field(default_factory=list)

    async def post_raw(self, params: dict[str, str], body: bytes) -> tuple[int, str]:
        async with self.http.post(self.url, params=params, data=body) as r:
            return r.status, await r.text()

    async def send(self, inner: str) -> str | None:
        """Post one message as WeChat would; the reply's Content (None for success)."""
        params, body = self.sim.envelope(inner)
        status, text = await self.post_raw(params, body)
        assert status == 200, (status, text)
        return reply_content(self.sim.open_reply(text))

    async def say(self, openid: str, content: str) -> str | None:
        return await self.send(self.sim.text(openid, content))


def now_utc() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(params=["plain", "compat", "safe"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pg_safe_only(request: pytest.FixtureRequest, mode: str) -> None:
    """Skip before any database is made: plain/compatible mode run on SQLite only."""
    params = getattr(request.node, "callspec", None)
    if params is not None and params.params.get("db_url") == "postgres" and mode != "safe":
        pytest.skip("plain/compatible mode run on SQLite; PostgreSQL runs the safe mode (keeps the suite short)")


@pytest.fixture
async def harness(pg_safe_only: None, engine: Engine, vault: Vault, mode: str) -> AsyncIterator[Harness]:
    world = seed(engine, vault)
    aes = new_aes_key()
    token = secrets.token_hex(8)
    keys = CallbackKeys(token=token, appid=APPID, aes_key=aes if mode != "plain" else None)
    fake = FakeWechatApi(APPID, SECRET)
    base = await fake.start()
    http = aiohttp.ClientSession()
    api = WechatApi(ApiConfig(APPID, SECRET, base_url=base, timeout_s=2.0), now=now_utc, tokens=TokenStore(engine))
    flows = Flows(vault, BotConfig(), calls=QueueCalls(), visits=EscalationVisits(), engine=KeywordEngine(),
                  recorder=DefaultRecorder())
    service = CallbackService(keys, mode, engine, flows, DedupStore(engine, vault, "test", now_utc),  # type: ignore[arg-type]
                              now=now_utc, fallback=api)
    app = web.Application()
    add_routes(app, service)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sim = WechatServerSim(token, APPID, aes if mode != "plain" else None, mode)  # type: ignore[arg-type]
    h = Harness(engine, vault, world, sim, fake, api, service, f"http://127.0.0.1:{port}/wechat", http, flows)
    try:
        yield h
    finally:
        await service.drain()
        await http.close()
        await api.close()
        await runner.cleanup()
        await fake.stop()
