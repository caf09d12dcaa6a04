"""The WeChat :class:`scheduler.notify.Notifier`: alerts to bound family members and staff.

Recipients: a Contact's bound followers (only where ``Contact.may_receive_alerts``), a Staff
member's bound followers, or for ``DUTY`` the bound staff of the elder's region and the regions
above it. Urgent kinds go as template messages (subscription ``bizsend`` where only that is
configured); the digest and info go as customer-service messages inside the 48-hour window and
fall back to a template on 45015. Each (alert, follower) pair is sent at most once, so a retried
alert never reaches the same person twice. Quota exhaustion (45009) raises a QUOTA alert.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot import texts
from bot.api import ApiUnavailable, OutsideWindow, QuotaExceeded, WechatApi, WechatApiError
from bot.dedup import write_session
from bot.flows import Flows
from scheduler.notify import AlertKind, AlertMessage, DeliveryResult, DeliveryStatus, RecipientKind
from storage.models.elder import Contact, Elder
from storage.models.region import Region
from storage.models.staff import Staff
from storage.models.wechat import WechatBinding, WechatDedup, WechatFollower

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=48)
CHAT_FIRST = (AlertKind.DAILY_DIGEST, AlertKind.INFO)
PERMANENT_RECIPIENT_ERRORS = (40003, 43004, 43101)  # bad openid, unsubscribed, refused subscription


@dataclass(frozen=True)
class NotifierConfig:
    """Template ids per alert kind (``default_template`` for kinds not listed)."""

    template_ids: Mapping[str, str] = field(default_factory=dict)
    default_template: str | None = None
    subscribe_ids: Mapping[str, str] = field(default_factory=dict)
    service_name: str = "探访关爱服务"
    console_url: str | None = None  # base URL for staff links


@dataclass(frozen=True)
class Recipient:
    openid: str
    in_window: bool


QuotaHook = Callable[[str], Awaitable[None]]


class WechatNotifier:
    """``WechatNotifier(api, engine, config, now=..., on_quota=...)``; register as channel "wechat"."""

    channel = "wechat"

    def __init__(
        self,
        api: WechatApi,
        engine: Engine,
        config: NotifierConfig,
        *,
        now: Callable[[], datetime],
        on_quota: QuotaHook | None = None,
    ) -> None:
        self.api = api
        self.engine = engine
        self.config = config
        self.now = now
        self.on_quota = on_quota

    async def send(self, alert: AlertMessage) -> DeliveryResult:
        try:
            recipients = await asyncio.to_thread(self._recipients, alert)
        except Exception:
            log.exception("recipient lookup failed", extra={"action": "wechat_notify_lookup_failed"})
            return DeliveryResult(DeliveryStatus.RETRY, "数据库暂时不可用")
        if not recipients:
            return DeliveryResult(DeliveryStatus.NOT_APPLICABLE, "收件人未绑定微信")
        sent = failed = 0
        retry: list[str] = []
        for r in recipients:
            key = f"out:{alert.id}:{r.openid}"
            if await asyncio.to_thread(self._already_sent, key):
                sent += 1
                continue
            status, detail = await self._deliver(alert, r)
            if status is DeliveryStatus.SENT:
                await asyncio.to_thread(self._mark_sent, key)
                sent += 1
            elif status is DeliveryStatus.RETRY:
                retry.append(detail)
            else:
                failed += 1
                log.warning("wechat delivery failed", extra={"action": "wechat_notify_failed", "detail": detail})
        if retry:
            return DeliveryResult(DeliveryStatus.RETRY, retry[0])
        if sent:
            return DeliveryResult(DeliveryStatus.SENT, f"已发送 {sent} 人" + (f"，{failed} 人失败" if failed else ""))
        return DeliveryResult(DeliveryStatus.FAILED, "微信消息发送失败（对方已取消关注或模板未配置）")

    async def _deliver(self, alert: AlertMessage, r: Recipient) -> tuple[DeliveryStatus, str]:
        try:
            await self._route(alert, r)
        except QuotaExceeded as exc:
            await self._quota(exc.path)
            return DeliveryStatus.RETRY, "微信接口调用次数已用完（45009），稍后重试"
        except ApiUnavailable as exc:
            return DeliveryStatus.RETRY, f"微信接口暂时不可用：{exc}"
        except WechatApiError as exc:
            if exc.errcode in (40001, 42001, -1):
                return DeliveryStatus.RETRY, f"微信接口错误 {exc.errcode}"
            return DeliveryStatus.FAILED, f"微信接口错误 {exc.errcode}"
        except LookupError as exc:
            return DeliveryStatus.FAILED, str(exc)
        return DeliveryStatus.SENT, ""

    async def _route(self, alert: AlertMessage, r: Recipient) -> None:
        kind = str(alert.kind)
        text = f"{alert.title}\n{alert.body}"
        if alert.kind in CHAT_FIRST and r.in_window:
            try:
                await self.api.send_custom_text(r.openid, text)
                return
            except OutsideWindow:
                log.info("outside 48h window, using template", extra={"action": "wechat_cs_fallback"})
        template = self.config.template_ids.get(kind) or self.config.default_template
        data = {
            "first": alert.title,
            "keyword1": alert.body,
            "keyword2": texts.local_time(alert.created_at),
            "remark": self.config.service_name,
        }
        url = f"{self.config.console_url.rstrip('/')}{alert.url}" if self.config.console_url and alert.url else None
        if template:
            await self.api.send_template(r.openid, template, data, url=url)
            return
        sub = self.config.subscribe_ids.get(kind)
        if sub:
            await self.api.send_subscribe(r.openid, sub, {"thing1": alert.title[:20], "thing2": alert.body[:20]})
            return
        if r.in_window:
            await self.api.send_custom_text(r.openid, text)
            return
        raise LookupError("未配置模板消息，且对方不在 48 小时会话窗口内")

    async def _quota(self, path: str) -> None:
        if self.on_quota is None:
            return
        try:
            await self.on_quota(path)
        except Exception:
            log.exception("quota alert failed", extra={"action": "wechat_quota_alert_failed"})

    # -- database --------------------------------------------------------------------
    def _recipients(self, alert: AlertMessage) -> list[Recipient]:
        with Session(self.engine) as s:
            return recipients_for(s, alert.recipient_kind, alert.recipient_id, self.now())

    def _already_sent(self, key: str) -> bool:
        with Session(self.engine) as s:
            return s.get(WechatDedup, key) is not None

    def _mark_sent(self, key: str) -> None:
        try:
            with write_session(self.engine) as s:
                now = self.now()
                s.add(WechatDedup(key=key, owner="notifier", created_at=now, completed_at=now, reply=""))
        except IntegrityError:
            pass


def recipients_for(session: Session, kind: RecipientKind | str, recipient_id: int | None, now: datetime) -> list[Recipient]:
    """The followers to reach for an alert recipient (bound, subscribed, allowed to receive alerts)."""
    kind = RecipientKind(kind)
    if recipient_id is None:
        return []
    q = select(WechatBinding).where(WechatBinding.unbound_at.is_(None))
    if kind is RecipientKind.CONTACT:
        contact = session.get(Contact, recipient_id)
        if contact is None or not contact.may_receive_alerts:
            return []
        q = q.where(WechatBinding.role == "family", WechatBinding.contact_id == recipient_id)
    elif kind is RecipientKind.STAFF:
        q = q.where(WechatBinding.role == "staff", WechatBinding.staff_id == recipient_id)
    else:  # DUTY: the region's id; bound active staff of that region and the regions above it
        region = session.get(Region, recipient_id)
        if region is None:
            return []
        parts = region.path.split("/")
        paths = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        staff_ids = select(Staff.id).join(Region, Staff.region_id == Region.id).where(
            Region.path.in_(paths), Staff.active.is_(True)
        )
        q = q.where(WechatBinding.role == "staff", WechatBinding.staff_id.in_(staff_ids))
    out: dict[str, Recipient] = {}
    for b in session.scalars(q):
        f = session.get(WechatFollower, b.openid)
        if f is not None and not f.subscribed:
            continue
        in_window = bool(f and f.last_inbound_at and now - f.last_inbound_at < WINDOW)
        out[b.openid] = Recipient(b.openid, in_window)
    return list(out.values())


# -- the daily 平安 digest ---------------------------------------------------------------


@dataclass
class DigestReport:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    details: list[str] = field(default_factory=list)


async def send_daily_digest(
    engine: Engine,
    api: WechatApi,
    flows: Flows,
    *,
    now: datetime,
    template_id: str | None = None,
) -> DigestReport:
    """Send each opted-in family follower one status message per elder per day (idempotent).

    The scheduler calls this once a day (e.g. 19:00 Asia/Shanghai); calling it again the same
    day sends nothing twice.
    """
    day = now.astimezone(texts.SHANGHAI).date().isoformat()
    jobs = await asyncio.to_thread(_digest_jobs, engine, flows, now)
    report = DigestReport()
    for openid, elder_id, text, in_window in jobs:
        key = f"digest:{day}:{openid}:{elder_id}"
        if not await asyncio.to_thread(_claim_digest, engine, key, now):  # sent today, or another process is on it
            report.skipped += 1
            continue
        body = "今日平安消息\n" + text
        try:
            if in_window:
                try:
                    await api.send_custom_text(openid, body)
                except OutsideWindow:
                    if not template_id:
                        raise
                    await api.send_template(openid, template_id, {"first": "今日平安消息", "keyword1": text, "keyword2": texts.local_time(now)})
            elif template_id:
                await api.send_template(openid, template_id, {"first": "今日平安消息", "keyword1": text, "keyword2": texts.local_time(now)})
            else:
                report.skipped += 1
                report.details.append("不在 48 小时窗口且未配置模板")
                await asyncio.to_thread(_release_digest, engine, key)
                continue
        except (WechatApiError, ApiUnavailable) as exc:
            report.failed += 1
            report.details.append(str(exc))
            await asyncio.to_thread(_release_digest, engine, key)  # a later run the same day may retry
            continue
        except BaseException:
            await asyncio.to_thread(_release_digest, engine, key)
            raise
        with write_session(engine) as s:
            row = s.get(WechatDedup, key)
            if row is not None:
                row.completed_at = now
        report.sent += 1
    log.info("daily digest", extra={"action": "wechat_digest", "sent": report.sent, "failed": report.failed})
    return report


def _claim_digest(engine: Engine, key: str, now: datetime) -> bool:
    """Take the day's digest slot for one follower and elder (a primary-key insert: of several
    processes running the digest at once, exactly one wins)."""
    try:
        with write_session(engine) as s:
            s.add(WechatDedup(key=key, owner="digest", created_at=now, completed_at=None, reply=""))
    except IntegrityError:
        return False
    return True


def _release_digest(engine: Engine, key: str) -> None:
    with write_session(engine) as s:
        row = s.get(WechatDedup, key)
        if row is not None and row.completed_at is None:
            s.delete(row)


def _digest_jobs(engine: Engine, flows: Flows, now: datetime) -> list[tuple[str, int, str, bool]]:
    jobs = []
    with Session(engine) as s:
        rows = s.scalars(
            select(WechatBinding).where(
                WechatBinding.unbound_at.is_(None),
                WechatBinding.role == "family",
                WechatBinding.digest_opt_in.is_(True),
            )
        ).all()
        seen = set()
        for b in rows:
            if b.elder_id is None or (b.openid, b.elder_id) in seen:
                continue
            seen.add((b.openid, b.elder_id))
            f = s.get(WechatFollower, b.openid)
            if f is not None and not f.subscribed:
                continue
            if s.get(Elder, b.elder_id) is None:
                continue
            in_window = bool(f and f.last_inbound_at and now - f.last_inbound_at < WINDOW)
            jobs.append((b.openid, b.elder_id, flows.status_text(s, b.elder_id, now), in_window))
    return jobs
