"""The durable alert outbox: enqueue in the caller's transaction, deliver later, once each.

``enqueue_alert`` writes one :class:`storage.models.escalation.Alert` row per channel in the
session it is given, so an alert exists exactly when the escalation or outcome that caused it
was committed. :class:`OutboxDispatcher` hands pending rows to the registered
:class:`scheduler.notify.Notifier` of their channel, oldest first; each row is claimed with an
optimistic update before sending (two dispatchers never send the same row), transient failures
(``RETRY``) are retried with exponential backoff, and permanent ones end as ``failed`` — the
console lists those.

Order survives an outage: a transient failure holds its whole channel — the rest of that batch
goes back unattempted, and no alert is claimed while an OLDER alert of the same channel waits for
its retry — so when the channel returns, alerts go out oldest first. The backoff is capped at
five minutes and a transient failure gives up only after ``max_attempts`` (≈ 2 hours of outage).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import and_, exists, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from scheduler.notify import (
    AlertKind,
    AlertMessage,
    DeliveryResult,
    DeliveryStatus,
    Notifier,
    RecipientKind,
)
from storage.models.escalation import Alert, AlertStatus

log = logging.getLogger(__name__)

CONSOLE_CHANNEL = "console"


@contextmanager
def write_session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction that takes SQLite's write lock at BEGIN (see ``storage.db``); plain on PostgreSQL."""
    with sessions() as session, session.begin():
        session.connection(execution_options={"sqlite_write": True})
        yield session


def enqueue_alert(
    session: Session,
    *,
    kind: AlertKind,
    recipient_kind: RecipientKind,
    recipient_id: int | None,
    title: str,
    body: str,
    now: datetime,
    channels: Iterable[str] = (CONSOLE_CHANNEL,),
    elder_id: int | None = None,
    escalation_id: int | None = None,
    region_path: str | None = None,
    url: str | None = None,
) -> list[Alert]:
    """Add one pending row per channel to ``session`` (no commit: the caller's transaction owns it)."""
    rows = []
    for channel in dict.fromkeys(channels):
        row = Alert(
            kind=str(kind),
            channel=channel,
            recipient_kind=str(recipient_kind),
            recipient_id=recipient_id,
            elder_id=elder_id,
            escalation_id=escalation_id,
            region_path=region_path,
            title=title[:100],
            body=body,
            url=url,
            status=AlertStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        session.add(row)
        rows.append(row)
    session.flush()
    return rows


def to_message(row: Alert) -> AlertMessage:
    return AlertMessage(
        id=row.id,
        kind=AlertKind(row.kind),
        recipient_kind=RecipientKind(row.recipient_kind),
        recipient_id=row.recipient_id,
        elder_id=row.elder_id,
        escalation_id=row.escalation_id,
        title=row.title,
        body=row.body,
        created_at=row.created_at,
        url=row.url,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff ``base * factor**(attempts-1)`` capped at ``cap``; give up after ``max_attempts``."""

    base_s: float = 30.0
    factor: float = 2.0
    cap_s: float = 300.0  # at most 5 minutes between tries: an alert goes out soon after the channel returns
    max_attempts: int = 24  # 30+60+120+240 s, then every 5 min: about 2 hours of outage before "failed"
    lease_s: float = 120.0  # a claimed row is retried after this if the dispatcher dies mid-send

    def delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.cap_s, self.base_s * self.factor ** max(attempts - 1, 0)))


class ConsoleNotifier:
    """The console channel: the row itself is what staff see, so delivery is marking it shown."""

    channel = CONSOLE_CHANNEL

    async def send(self, alert: AlertMessage) -> DeliveryResult:
        if alert.recipient_kind is RecipientKind.CONTACT:
            return DeliveryResult(DeliveryStatus.NOT_APPLICABLE, "控制台不能通知家属")
        return DeliveryResult(DeliveryStatus.SENT, "已显示在控制台")


class NotifierRegistry:
    """The channels alerts go to. ``register`` a Notifier once at assembly time."""

    def __init__(self, notifiers: Sequence[Notifier] = ()) -> None:
        self._by_channel: dict[str, Notifier] = {}
        for n in notifiers:
            self.register(n)

    def register(self, notifier: Notifier) -> None:
        if notifier.channel in self._by_channel:
            raise ValueError(f"渠道 {notifier.channel} 已注册")
        self._by_channel[notifier.channel] = notifier

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self._by_channel)

    def get(self, channel: str) -> Notifier | None:
        return self._by_channel.get(channel)


# Where the assembly keeps the registry, so any component (e.g. WeChat) can register its Notifier:
#     app[NOTIFIERS].register(WechatNotifier(...))
NOTIFIERS: web.AppKey[NotifierRegistry] = web.AppKey("notifiers", NotifierRegistry)


class OutboxDispatcher:
    """Delivers pending alerts; call :meth:`run_once` from a job or loop it with :meth:`run_forever`."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        registry: NotifierRegistry,
        now: Callable[[], datetime],
        retry: RetryPolicy | None = None,
        send_timeout_s: float = 30.0,
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.now = now
        self.retry = retry or RetryPolicy()
        self.send_timeout_s = send_timeout_s

    def _claim(self, limit: int) -> list[tuple[int, AlertMessage, str, int]]:
        now = self.now()
        claimed: list[tuple[int, AlertMessage, str, int]] = []
        channels = self.registry.channels
        if not channels:
            return claimed
        older = aliased(Alert)
        waiting_older = exists().where(and_(  # an older alert of the channel is waiting for its retry
            older.channel == Alert.channel, older.status == AlertStatus.PENDING, older.next_attempt_at > now,
            older.created_at <= Alert.created_at, older.id < Alert.id))
        with write_session(self.sessions) as s:
            rows = s.scalars(
                select(Alert)
                .where(
                    Alert.status == AlertStatus.PENDING,
                    Alert.channel.in_(channels),
                    Alert.next_attempt_at <= now,
                    ~waiting_older,
                )
                .order_by(Alert.created_at, Alert.id)
                .limit(limit)
            ).all()
            for row in rows:
                res = s.execute(
                    update(Alert)
                    .where(
                        Alert.id == row.id,
                        Alert.status == AlertStatus.PENDING,
                        Alert.attempts == row.attempts,
                    )
                    .values(
                        attempts=row.attempts + 1,
                        next_attempt_at=now + timedelta(seconds=self.retry.lease_s),
                    )
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append((row.id, to_message(row), row.channel, row.attempts + 1))
        return claimed

    def _finish(self, alert_id: int, attempts: int, result: DeliveryResult) -> None:
        now = self.now()
        values: dict[str, object]
        if result.status is DeliveryStatus.SENT:
            values = {"status": AlertStatus.SENT, "sent_at": now, "last_error": None}
        elif result.status is DeliveryStatus.NOT_APPLICABLE:
            values = {"status": AlertStatus.SKIPPED, "last_error": result.detail[:255] or None}
        elif result.status is DeliveryStatus.RETRY and attempts < self.retry.max_attempts:
            values = {"next_attempt_at": now + self.retry.delay(attempts), "last_error": result.detail[:255]}
        else:
            values = {"status": AlertStatus.FAILED, "last_error": (result.detail or "发送失败")[:255]}
            log.error("alert %s failed permanently", alert_id, extra={"action": "alert_failed"})
        with write_session(self.sessions) as s:
            s.execute(
                update(Alert)
                .where(Alert.id == alert_id, Alert.attempts == attempts, Alert.status == AlertStatus.PENDING)
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def _unclaim(self, alert_id: int, attempts: int) -> None:
        """Give back a claimed alert that was not attempted (its channel is failing): no attempt counted."""
        with write_session(self.sessions) as s:
            s.execute(
                update(Alert)
                .where(Alert.id == alert_id, Alert.attempts == attempts, Alert.status == AlertStatus.PENDING)
                .values(attempts=attempts - 1, next_attempt_at=self.now())
                .execution_options(synchronize_session=False)
            )

    async def run_once(self, limit: int = 100) -> int:
        """Deliver up to ``limit`` due alerts in creation order; returns how many were attempted."""
        claimed = await asyncio.to_thread(self._claim, limit)
        held: set[str] = set()
        tried = 0
        for alert_id, message, channel, attempts in claimed:
            if channel in held:
                await asyncio.to_thread(self._unclaim, alert_id, attempts)
                continue
            tried += 1
            notifier = self.registry.get(channel)
            if notifier is None:  # unregistered between claim and send
                result = DeliveryResult(DeliveryStatus.RETRY, "渠道未注册")
            else:
                try:
                    result = await asyncio.wait_for(notifier.send(message), self.send_timeout_s)
                except TimeoutError:
                    result = DeliveryResult(DeliveryStatus.RETRY, "发送超时")
                except Exception as exc:  # a notifier bug must not stop the outbox
                    log.warning("notifier %s raised %s", channel, type(exc).__name__,
                                extra={"action": "alert_notifier_error"})
                    result = DeliveryResult(DeliveryStatus.RETRY, f"渠道异常：{type(exc).__name__}")
            await asyncio.to_thread(self._finish, alert_id, attempts, result)
            if result.status is DeliveryStatus.RETRY:
                held.add(channel)  # the channel is failing: keep the rest of it in order for later
        return tried

    async def run_forever(self, interval_s: float = 5.0) -> None:
        while True:
            try:
                n = await self.run_once()
            except Exception:  # the database may be briefly away; keep the loop alive
                log.exception("outbox dispatch failed", extra={"action": "outbox_error"})
                n = 0
            if n == 0:
                await asyncio.sleep(interval_s)
