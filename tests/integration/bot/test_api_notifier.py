"""The API client and the notifier against the fake WeChat API (errors injected, tokens shared)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot.api import ApiConfig, ApiUnavailable, QuotaExceeded, TokenStore, WechatApi, WechatApiError
from bot.dedup import write_session
from bot.flows import BotConfig, Flows
from bot.notifier import NotifierConfig, WechatNotifier, send_daily_digest
from bot.testing import FakeWechatApi
from scheduler.notify import AlertKind, AlertMessage, DeliveryStatus, RecipientKind
from storage.crypto import Vault
from storage.models.wechat import WechatBinding, WechatFollower, WechatToken
from tests.integration.bot.conftest import APPID, SECRET, World, now_utc, seed

TEMPLATE = "TPL_ALERT"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWechatApi]:
    f = FakeWechatApi(APPID, SECRET)
    await f.start()
    yield f
    await f.stop()


def make_api(fake: FakeWechatApi, engine: Engine | None, timeout: float = 2.0, secret: str = SECRET) -> WechatApi:
    return WechatApi(ApiConfig(APPID, secret, base_url=fake.base_url, timeout_s=timeout), now=now_utc,
                     tokens=TokenStore(engine) if engine is not None else None)


def bind(engine: Engine, openid: str, *, contact_id: int | None = None, staff_id: int | None = None,
         elder_id: int | None = None, role: str = "family", last_inbound: datetime | None = None,
         digest: bool = False) -> None:
    now = now_utc()
    with write_session(engine) as s:
        s.add(WechatBinding(openid=openid, role=role, elder_id=elder_id, contact_id=contact_id, staff_id=staff_id,
                            consent_at=now, consent_text="同意", bound_at=now, digest_opt_in=digest))
        s.add(WechatFollower(openid=openid, subscribed=True, failed_code_attempts=0, last_inbound_at=last_inbound))


def alert(kind: AlertKind, rk: RecipientKind, rid: int, elder_id: int | None = None, aid: int = 1) -> AlertMessage:
    return AlertMessage(id=aid, kind=kind, recipient_kind=rk, recipient_id=rid, elder_id=elder_id, escalation_id=None,
                        title="紧急：王秀英可能需要帮助", body="老人说摔倒了。请尽快确认老人安全。", created_at=now_utc(),
                        url="/escalations/1")


async def test_token_shared_between_processes_and_refreshed_early(fake: FakeWechatApi, engine: Engine) -> None:
    a, b = make_api(fake, engine), make_api(fake, engine)
    try:
        tokens = await asyncio.gather(*(a.access_token() for _ in range(10)), *(b.access_token() for _ in range(10)))
        assert len(set(tokens)) == 1
        assert a.token_fetches + b.token_fetches == 1  # the lock, then the shared row
        with Session(engine) as s:
            row = s.get(WechatToken, APPID)
            assert row is not None and row.access_token == tokens[0]
            # close to expiry: refreshed early (stable_token hands out the same valid token)
            row.expires_at = now_utc() + timedelta(minutes=2)
            s.commit()
        c = make_api(fake, engine)
        await c.access_token()
        assert c.token_fetches == 1
        await c.close()
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("code", [40001, 42001])
async def test_token_errors_get_one_refresh_and_retry(fake: FakeWechatApi, engine: Engine, code: int) -> None:
    api = make_api(fake, engine)
    try:
        await api.send_custom_text("o1", "你好")
        fake.inject("/cgi-bin/message/custom/send", code)
        await api.send_custom_text("o1", "再来")
        assert len(fake.sent("/custom/send")) == 2
        # twice in a row: one retry only, then the error surfaces
        fake.inject("/cgi-bin/message/custom/send", code, times=2)
        with pytest.raises(WechatApiError) as e:
            await api.send_custom_text("o1", "第三次")
        assert e.value.errcode == code
    finally:
        await api.close()


async def test_expired_token_is_replaced(fake: FakeWechatApi, engine: Engine) -> None:
    api = make_api(fake, engine)
    try:
        first = await api.access_token()
        fake.revoke_tokens()  # WeChat forgot it: 40001 on the next call
        await api.send_template("o1", TEMPLATE, {"first": "x"})
        assert await api.access_token() != first
    finally:
        await api.close()


async def test_bad_secret_quota_and_timeout(fake: FakeWechatApi, engine: Engine) -> None:
    bad = make_api(fake, engine, secret="wrong")
    with pytest.raises(WechatApiError) as e:
        await bad.access_token()
    assert e.value.errcode == 40125
    await bad.close()
    api = make_api(fake, engine, timeout=0.3)
    try:
        fake.inject("/cgi-bin/message/template/send", 45009)
        with pytest.raises(QuotaExceeded):
            await api.send_template("o1", TEMPLATE, {"first": "x"})
        fake.inject_delay("/cgi-bin/message/template/send", 1.0)
        with pytest.raises(ApiUnavailable):
            await api.send_template("o1", TEMPLATE, {"first": "x"})
    finally:
        await api.close()


async def world_and_notifier(fake: FakeWechatApi, engine: Engine, vault: Vault,
                             quota: list[str] | None = None) -> tuple[World, WechatNotifier, WechatApi]:
    world = seed(engine, vault)
    api = make_api(fake, engine)

    async def on_quota(path: str) -> None:
        if quota is not None:
            quota.append(path)

    n = WechatNotifier(api, engine, NotifierConfig(default_template=TEMPLATE, console_url="http://127.0.0.1:8080"),
                       now=now_utc, on_quota=on_quota)
    return world, n, api


async def test_emergency_to_family_by_template_once(fake: FakeWechatApi, engine: Engine, vault: Vault) -> None:
    w, n, api = await world_and_notifier(fake, engine, vault)
    bind(engine, "o_son", contact_id=w.contact_id, elder_id=w.elder_id)
    try:
        a = alert(AlertKind.EMERGENCY, RecipientKind.CONTACT, w.contact_id, w.elder_id)
        r = await n.send(a)
        assert r.status is DeliveryStatus.SENT
        sent = fake.sent("/template/send")
        assert len(sent) == 1 and sent[0].body["touser"] == "o_son" and sent[0].body["template_id"] == TEMPLATE
        assert sent[0].body["data"]["first"]["value"].startswith("紧急")
        assert sent[0].body["url"] == "http://127.0.0.1:8080/escalations/1"
        assert (await n.send(a)).status is DeliveryStatus.SENT  # the outbox retried: not sent twice
        assert len(fake.sent("/template/send")) == 1
    finally:
        await api.close()


async def test_contact_without_alert_permission_or_binding(fake: FakeWechatApi, engine: Engine, vault: Vault) -> None:
    w, n, api = await world_and_notifier(fake, engine, vault)
    bind(engine, "o_daughter", contact_id=w.contact2_id, elder_id=w.elder_id)  # may_receive_alerts=False
    try:
        assert (await n.send(alert(AlertKind.UNREACHED, RecipientKind.CONTACT, w.contact2_id))).status is DeliveryStatus.NOT_APPLICABLE
        assert (await n.send(alert(AlertKind.UNREACHED, RecipientKind.CONTACT, w.contact_id))).status is DeliveryStatus.NOT_APPLICABLE
        assert fake.calls == []
    finally:
        await api.close()


async def test_staff_assignment_and_duty(fake: FakeWechatApi, engine: Engine, vault: Vault) -> None:
    w, n, api = await world_and_notifier(fake, engine, vault)
    bind(engine, "o_staff", staff_id=w.staff_id, role="staff")
    try:
        r = await n.send(alert(AlertKind.ESCALATION_ASSIGNED, RecipientKind.STAFF, w.staff_id, aid=5))
        assert r.status is DeliveryStatus.SENT
        r = await n.send(alert(AlertKind.EMERGENCY, RecipientKind.DUTY, w.region_id, aid=6))
        assert r.status is DeliveryStatus.SENT
        assert [c.body["touser"] for c in fake.sent("/template/send")] == ["o_staff", "o_staff"]
    finally:
        await api.close()


async def test_quota_is_retried_and_surfaced(fake: FakeWechatApi, engine: Engine, vault: Vault) -> None:
    quota: list[str] = []
    w, n, api = await world_and_notifier(fake, engine, vault, quota)
    bind(engine, "o_son", contact_id=w.contact_id, elder_id=w.elder_id)
    try:
        fake.inject("/cgi-bin/message/template/send", 45009)
        r = await n.send(alert(AlertKind.UNREACHED, RecipientKind.CONTACT, w.contact_id))
        assert r.status is DeliveryStatus.RETRY and "45009" in r.detail
        assert quota == ["/cgi-bin/message/template/send"]
        assert (await n.send(alert(AlertKind.UNREACHED, RecipientKind.CONTACT, w.contact_id))).status is DeliveryStatus.SENT
    finally:
        await api.close()


async def test_timeout_is_retry(fake: FakeWechatApi, engine: Engine, vault: Vault) -> None:
    w, n, _ = await world_and_notifier(fake, engine, vault)
    api = make_api(fake, engine, timeout=0.3)
    n.api = api
    bind(engine, "o_son", contact_id=w.contact_id, elder_id=w.elder_id)
    try:
        fake.inject_delay("/cgi-bin/message/template/send", 1.0)
        r = await n.send(alert(AlertKind.UNREACHED, RecipientKind.CONTACT, w.contact_id))
        assert r.status is DeliveryStatus.RETRY
    finally:
        await api.close()


async def test_info_inside_window_by_customer_service_then_45015_falls_back(fake: FakeWechatApi, engine: Engine, vault: Vault) -> None:
    w, n, api = await world_and_notifier(fake, engine, vault)
    bind(engine, "o_son", contact_id=w.contact_id, elder_id=w.elder_id, last_inbound=now_utc() - timedelta(hours=1))
    try:
        assert (await n.send(alert(AlertKind.INFO, RecipientKind.CONTACT, w.contact_id, aid=10))).status is DeliveryStatus.SENT
        assert len(fake.sent("/custom/send")) == 1 and not fake.sent("/template/send")
        fake.closed_window.add("o_son")
        assert (await n.send(alert(AlertKind.INFO, RecipientKind.CONTACT, w.contact_id, aid=11))).status is DeliveryStatus.SENT
        assert len(fake.sent("/template/send")) == 1
        assert [c.answer.get("errcode") for c in fake.calls if c.path.endswith("/custom/send")] == [0, 45015]
    finally:
        await api.close()


async def test_subscription_message_when_only_bizsend_is_configured(fake: FakeWechatApi, engine: Engine, vault: Vault) -> None:
    w, _, api = await world_and_notifier(fake, engine, vault)
    n = WechatNotifier(api, engine, NotifierConfig(subscribe_ids={"unreached": "SUB1"}), now=now_utc)
    bind(engine, "o_son", contact_id=w.contact_id, elder_id=w.elder_id)
    try:
        assert (await n.send(alert(AlertKind.UNREACHED, RecipientKind.CONTACT, w.contact_id))).status is DeliveryStatus.SENT
        sent = fake.sent("/subscribe/bizsend")
        assert len(sent) == 1 and sent[0].body["template_id"] == "SUB1"
        # nothing configured for escalation_assigned and outside the window: a permanent failure
        r = await n.send(alert(AlertKind.EMERGENCY, RecipientKind.CONTACT, w.contact_id, aid=2))
        assert r.status is DeliveryStatus.FAILED
    finally:
        await api.close()


async def test_daily_digest_opt_in_once_per_day(fake: FakeWechatApi, engine: Engine, vault: Vault) -> None:
    w, _, api = await world_and_notifier(fake, engine, vault)
    bind(engine, "o_in", contact_id=w.contact_id, elder_id=w.elder_id, digest=True, last_inbound=now_utc() - timedelta(hours=3))
    bind(engine, "o_out", contact_id=w.contact_id, elder_id=w.elder_id, digest=True)  # outside the window
    bind(engine, "o_no", contact_id=w.contact_id, elder_id=w.elder_id, digest=False)
    flows = Flows(vault, BotConfig())
    try:
        now = datetime.now(UTC)
        r = await send_daily_digest(engine, api, flows, now=now, template_id="TPL_DIGEST")
        assert (r.sent, r.failed) == (2, 0)
        assert [c.body["touser"] for c in fake.sent("/custom/send")] == ["o_in"]
        assert [c.body["touser"] for c in fake.sent("/template/send")] == ["o_out"]
        assert "王秀英" in fake.sent("/custom/send")[0].body["text"]["content"]
        again = await send_daily_digest(engine, api, flows, now=now, template_id="TPL_DIGEST")
        assert (again.sent, again.skipped) == (0, 2)
        with Session(engine) as s:
            assert len(s.scalars(select(WechatBinding)).all()) == 3
    finally:
        await api.close()


async def test_quota_alert_reaches_the_console_once_an_hour(engine: Engine) -> None:
    from bot.service import QuotaAlerter
    from storage.models.escalation import Alert

    alerter = QuotaAlerter(engine, now_utc)
    await alerter("/cgi-bin/message/template/send")
    await alerter("/cgi-bin/message/template/send")
    with Session(engine) as s:
        rows = s.scalars(select(Alert)).all()
        assert [(r.kind, r.channel) for r in rows] == [("quota", "console")]
        assert "45009" in rows[0].body
