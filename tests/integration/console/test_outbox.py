"""The alert outbox: oldest first, each alert delivered once, transient failures retried with
backoff, permanent ones marked failed and shown in the console. The notifier here is a fake of an
external channel (a WeChat-like service), defined in the test."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.notify import AlertKind, AlertMessage, DeliveryResult, DeliveryStatus, RecipientKind
from scheduler.outbox import ConsoleNotifier, NotifierRegistry, OutboxDispatcher, RetryPolicy, enqueue_alert
from storage.models.escalation import Alert, AlertStatus
from tests.integration.console.conftest import Clock, login
from tests.integration.console.world import World


class FakeChannel:
    """Records what it was given; answers from a script of statuses (then SENT)."""

    channel = "fake"

    def __init__(self, script: list[DeliveryStatus] | None = None, delay: float = 0.0) -> None:
        self.script = list(script or [])
        self.sent: list[AlertMessage] = []
        self.calls: list[int] = []
        self.delay = delay

    async def send(self, alert: AlertMessage) -> DeliveryResult:
        self.calls.append(alert.id)
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.script.pop(0) if self.script else DeliveryStatus.SENT
        if status is DeliveryStatus.SENT:
            self.sent.append(alert)
        return DeliveryResult(status, "渠道暂时不可用" if status is DeliveryStatus.RETRY else "用户未关注")


def enqueue(sessions: sessionmaker[Session], clock: Clock, title: str, channels: tuple[str, ...] = ("fake",),
            region_path: str | None = None) -> list[int]:
    with sessions() as s, s.begin():
        rows = enqueue_alert(s, kind=AlertKind.INFO, recipient_kind=RecipientKind.STAFF, recipient_id=1, title=title,
                             body="正文", now=clock(), channels=channels, region_path=region_path)
        return [r.id for r in rows]


async def test_oldest_first_and_once(sessions: sessionmaker[Session], world: World, clock: Clock) -> None:
    for t in ("一", "二", "三"):
        enqueue(sessions, clock, t)
        clock.advance(seconds=1)
    fake = FakeChannel()
    d = OutboxDispatcher(sessions, NotifierRegistry([fake]), clock)
    assert await d.run_once() == 3
    assert [a.title for a in fake.sent] == ["一", "二", "三"]
    assert await d.run_once() == 0
    with sessions() as s:
        assert {r.status for r in s.scalars(select(Alert))} == {AlertStatus.SENT}


async def test_two_dispatchers_never_send_the_same_alert(sessions: sessionmaker[Session], world: World,
                                                         clock: Clock) -> None:
    for i in range(20):
        enqueue(sessions, clock, f"第{i}条")
    fake = FakeChannel(delay=0.001)
    registry = NotifierRegistry([fake])
    d1, d2 = OutboxDispatcher(sessions, registry, clock), OutboxDispatcher(sessions, registry, clock)
    await asyncio.gather(d1.run_once(limit=20), d2.run_once(limit=20), d1.run_once(limit=20))
    assert sorted(Counter(fake.calls).values()) == [1] * 20


async def test_retry_with_backoff_then_sent(sessions: sessionmaker[Session], world: World, clock: Clock) -> None:
    (aid,) = enqueue(sessions, clock, "重试")
    fake = FakeChannel([DeliveryStatus.RETRY, DeliveryStatus.RETRY])
    d = OutboxDispatcher(sessions, NotifierRegistry([fake]), clock, RetryPolicy(base_s=30, factor=2))
    await d.run_once()
    with sessions() as s:
        row = s.get(Alert, aid)
        assert row is not None and row.status is AlertStatus.PENDING and row.attempts == 1
        assert row.next_attempt_at == clock() + timedelta(seconds=30) and row.last_error == "渠道暂时不可用"
    assert await d.run_once() == 0  # not due yet
    clock.advance(seconds=30)
    await d.run_once()
    with sessions() as s:
        row = s.get(Alert, aid)
        assert row is not None and row.attempts == 2 and row.next_attempt_at == clock() + timedelta(seconds=60)
    clock.advance(seconds=60)
    await d.run_once()
    with sessions() as s:
        row = s.get(Alert, aid)
        assert row is not None and row.status is AlertStatus.SENT and row.attempts == 3 and row.sent_at == clock()
    assert fake.calls == [aid, aid, aid] and len(fake.sent) == 1


async def test_permanent_failure_is_shown_in_the_console(client: TestClient, sessions: sessionmaker[Session],
                                                         world: World, clock: Clock) -> None:
    (failed,) = enqueue(sessions, clock, "张桂兰紧急通知", region_path="23/2301/230125/230125001/230125001001")
    (gave_up,) = enqueue(sessions, clock, "多次重试", region_path="23/2301/230125/230125001/230125001001")
    fake = FakeChannel([DeliveryStatus.FAILED] + [DeliveryStatus.RETRY] * 3)
    d = OutboxDispatcher(sessions, NotifierRegistry([fake]), clock, RetryPolicy(base_s=1, max_attempts=3))
    for _ in range(4):
        await d.run_once()
        clock.advance(seconds=10)
    with sessions() as s:
        a, b = s.get(Alert, failed), s.get(Alert, gave_up)
        assert a is not None and a.status is AlertStatus.FAILED and a.last_error == "用户未关注"
        assert b is not None and b.status is AlertStatus.FAILED and b.attempts == 3
    await login(client, "jia")
    page = await (await client.get("/alerts")).text()
    assert "张桂兰紧急通知" in page and "多次重试" in page
    await login(client, "yi")  # another township does not see them
    page = await (await client.get("/alerts")).text()
    assert "张桂兰紧急通知" not in page


async def test_raising_notifier_is_retried_and_unregistered_channels_wait(sessions: sessionmaker[Session],
                                                                          world: World, clock: Clock) -> None:
    class Broken:
        channel = "fake"

        async def send(self, alert: AlertMessage) -> DeliveryResult:
            raise ConnectionResetError

    (a,) = enqueue(sessions, clock, "异常")
    (w,) = enqueue(sessions, clock, "微信", channels=("wechat",))
    d = OutboxDispatcher(sessions, NotifierRegistry([Broken(), ConsoleNotifier()]), clock)
    await d.run_once()
    with sessions() as s:
        ra, rw = s.get(Alert, a), s.get(Alert, w)
        assert ra is not None and ra.status is AlertStatus.PENDING and "ConnectionResetError" in (ra.last_error or "")
        assert rw is not None and rw.status is AlertStatus.PENDING and rw.attempts == 0


async def test_console_channel_skips_family(sessions: sessionmaker[Session], world: World, clock: Clock) -> None:
    with sessions() as s, s.begin():
        (row,) = enqueue_alert(s, kind=AlertKind.EMERGENCY, recipient_kind=RecipientKind.CONTACT, recipient_id=1,
                               title="家属", body="x", now=clock(), channels=("console",))
        aid = row.id
    await OutboxDispatcher(sessions, NotifierRegistry([ConsoleNotifier()]), clock).run_once()
    with sessions() as s:
        r = s.get(Alert, aid)
        assert r is not None and r.status is AlertStatus.SKIPPED
