"""Alert outbox under an hour-long notifier outage (fake clock): alerts created before and during
the outage wait durably and are delivered afterwards, once each, oldest first; an alert the
channel refuses for good is marked failed and shown on the console's alerts page."""

from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.notify import AlertKind, AlertMessage, DeliveryResult, DeliveryStatus, RecipientKind
from scheduler.outbox import NotifierRegistry, OutboxDispatcher, enqueue_alert
from storage.models.escalation import Alert, AlertStatus
from tests.integration.console.conftest import T0, Clock, login
from tests.integration.console.world import World

REGION = "23/2301/230125/230125001/230125001001"  # 甲's township in the console world


class FlakyWechat:
    """A WeChat-like channel: down (transient errors) until ``up_at``; refuses one recipient for good."""

    channel = "wechat"

    def __init__(self, clock: Clock, up_at: datetime) -> None:
        self.clock, self.up_at = clock, up_at
        self.delivered: list[str] = []
        self.tries = 0

    async def send(self, alert: AlertMessage) -> DeliveryResult:
        self.tries += 1
        if self.clock() < self.up_at:
            return DeliveryResult(DeliveryStatus.RETRY, "微信接口暂时不可用：连接被拒绝")
        if "已取消关注" in alert.title:
            return DeliveryResult(DeliveryStatus.FAILED, "对方已取消关注（43004）")
        self.delivered.append(alert.title)
        return DeliveryResult(DeliveryStatus.SENT, "已发送")


def enqueue(sessions: sessionmaker[Session], clock: Clock, title: str) -> int:
    with sessions() as s, s.begin():
        (row,) = enqueue_alert(s, kind=AlertKind.UNREACHED, recipient_kind=RecipientKind.STAFF, recipient_id=1,
                               title=title, body="正文", now=clock(), channels=("wechat",), region_path=REGION)
        return row.id


async def test_hour_long_outage_then_oldest_first_once_each(sessions: sessionmaker[Session], world: World,
                                                            clock: Clock, client: TestClient) -> None:
    outage_end = T0 + timedelta(hours=1)
    channel = FlakyWechat(clock, outage_end)
    dispatcher = OutboxDispatcher(sessions, NotifierRegistry([channel]), clock)
    titles: list[str] = []
    # one alert every 5 minutes for the hour (one of them to a family member who unsubscribed),
    # the dispatcher runs every 30 s of the clock as its loop would
    for minute in range(0, 60 * 2):
        if minute % 5 == 0 and minute < 60:
            title = f"第{minute // 5 + 1:02d}条：张桂兰未接通" if minute != 25 else "第06条：已取消关注的家属"
            enqueue(sessions, clock, title)
            titles.append(title)
        for _ in range(2):
            await dispatcher.run_once()
            clock.advance(seconds=30)
        if clock() > outage_end + timedelta(minutes=10) and len(channel.delivered) == len(titles) - 1:
            break
    expected = [t for t in titles if "已取消关注" not in t]
    assert channel.delivered == expected  # once each, oldest first
    with sessions() as s:
        rows = {r.title: r for r in s.scalars(select(Alert))}
    assert all(rows[t].status is AlertStatus.SENT for t in expected)
    last_sent = max(r.sent_at for t in expected if (r := rows[t]).sent_at is not None)
    assert last_sent <= outage_end + timedelta(minutes=6)  # soon after it returned
    failed = rows["第06条：已取消关注的家属"]
    assert failed.status is AlertStatus.FAILED and "43004" in (failed.last_error or "")
    print(f"\noutbox: {len(titles)} alerts over a 60-minute outage, {channel.tries} delivery tries, "
          f"{len(expected)} delivered in creation order by {last_sent - outage_end} "
          f"after the channel returned, 1 failed for good")
    await login(client, "jia")
    page = await (await client.get("/alerts")).text()
    assert "第06条：已取消关注的家属" in page and "43004" in page
