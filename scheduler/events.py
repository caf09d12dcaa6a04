"""Surge events: CAP alert lifecycle (alert, update, cancel, expiry), staff lockdowns, listing.

Every change re-plans the elders the event covers (``planner.replan_event``): new surge calls
are written within the planner's rolling horizon (later days by the tick), and surge calls no
longer wanted (cancelled or shortened event) are cancelled.
"""

from __future__ import annotations

import logging
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.cap import CapAlert, CapError, area_names, geocode_candidates, parse_cap
from scheduler.config import PolicySet
from scheduler.planner import PlanResult, replan_event
from scheduler.queue import write_session
from storage.enums import EventKind
from storage.models import Region, SurgeEvent, SurgeEventRegion

log = logging.getLogger(__name__)
DEFAULT_DURATION = timedelta(hours=48)


class EventError(ValueError):
    """A staff action on events was refused (message in Chinese)."""


@dataclass(frozen=True)
class ImportResult:
    action: str  # created / updated / cancelled / duplicate / ignored
    event_id: int | None
    message: str  # Chinese
    replan: PlanResult | None = None


@dataclass(frozen=True)
class EventView:
    id: int
    kind: EventKind
    title: str
    level: str | None
    starts_at: datetime
    ends_at: datetime
    state: str  # 未开始 / 生效中 / 已结束 / 已取消
    regions: list[str]
    source: str


def match_regions(session: Session, alert: CapAlert) -> list[Region]:
    codes = [c for a in alert.areas for g in a.geocodes for c in geocode_candidates(g)]
    names = [n for a in alert.areas for n in area_names(a)]
    conds = []
    if codes:
        conds.append(Region.code.in_(codes))
    if names:
        conds.append(Region.name.in_(names))
    if not conds:
        return []
    regions = list(session.scalars(select(Region).where(or_(*conds))))
    # Keep the broadest: a county covers its townships already.
    regions.sort(key=lambda r: len(r.path))
    kept: list[Region] = []
    for r in regions:
        if not any(k.contains(r) for k in kept):
            kept.append(r)
    return kept


def _set_regions(session: Session, ev: SurgeEvent, regions: list[Region]) -> None:
    session.execute(delete(SurgeEventRegion).where(SurgeEventRegion.event_id == ev.id))
    session.add_all(SurgeEventRegion(event_id=ev.id, region_id=r.id) for r in regions)


def _note_previous(session: Session, events: list[SurgeEvent], old_ends: list[datetime] | None,
                   old_paths: list[str] | None) -> None:
    """Record the ends and region paths ``events`` have before this message changes them: the
    re-plan must reach the days and the regions an update drops (or a cancel ends), not only the
    event's new ones."""
    if old_ends is not None:
        old_ends.extend(ev.ends_at for ev in events)
    if old_paths is not None and events:
        old_paths.extend(session.scalars(
            select(Region.path).join(SurgeEventRegion, SurgeEventRegion.region_id == Region.id)
            .where(SurgeEventRegion.event_id.in_([ev.id for ev in events]))))


def _apply(session: Session, alert: CapAlert, now: datetime, old_ends: list[datetime] | None = None,
           old_paths: list[str] | None = None) -> tuple[str, int | None, str]:
    if session.scalar(select(SurgeEvent.id).where(SurgeEvent.external_id == alert.identifier)) is not None:
        return "duplicate", None, f"预警 {alert.identifier} 已导入过，忽略"
    referenced = list(session.scalars(select(SurgeEvent).where(SurgeEvent.external_id.in_(alert.references))))
    for ev in list(referenced):
        if any(h.get("identifier") == alert.identifier for h in ev.history):
            return "duplicate", ev.id, f"预警 {alert.identifier} 已应用过，忽略"
    entry = {"identifier": alert.identifier, "msg_type": alert.msg_type, "sent": alert.sent.isoformat(),
             "applied_at": now.isoformat()}
    if alert.msg_type == "Cancel":
        if not referenced:
            return "ignored", None, f"取消消息引用的预警（{', '.join(alert.references) or '无'}）不存在，忽略"
        _note_previous(session, referenced, old_ends, old_paths)
        for ev in referenced:
            ev.status, ev.status_at, ev.status_note = "cancelled", now, f"预警已解除（{alert.identifier}）"
            ev.history = [*ev.history, entry]
        return "cancelled", referenced[0].id, f"已解除：{'、'.join(e.title for e in referenced)}"
    if alert.msg_type not in ("Alert", "Update"):
        return "ignored", None, f"msgType={alert.msg_type} 不需要处理"
    if not alert.actionable:
        return "ignored", None, f"非实际预警（status={alert.status}, urgency={alert.urgency}），忽略"
    regions = match_regions(session, alert)
    if not regions:
        areas = "、".join(a.desc for a in alert.areas) or "（无）"
        return "ignored", None, f"预警区域 {areas} 与本系统的行政区划都不匹配，忽略"
    ends = alert.expires or (alert.onset + DEFAULT_DURATION)
    if ends <= alert.onset:
        raise CapError("expires 早于 onset")
    target = referenced[0] if (alert.msg_type == "Update" and referenced) else None
    _note_previous(session, referenced, old_ends, old_paths)
    if target is None:
        target = SurgeEvent(kind=EventKind.WEATHER, source="cap", external_id=alert.identifier, history=[entry],
                            title="", starts_at=alert.onset, ends_at=ends, created_by=alert.sender or "cap",
                            created_at=now, updated_at=now)
        session.add(target)
        action = "created"
    else:
        target.history = [*target.history, entry]
        action = "updated"
    target.hazard, target.level, target.title = alert.hazard, alert.level, alert.title
    target.description = alert.headline or alert.description
    target.sender = alert.sender
    target.cap_severity, target.cap_urgency, target.cap_certainty = alert.severity, alert.urgency, alert.certainty
    target.starts_at, target.ends_at, target.status, target.status_at = alert.onset, ends, "active", now
    session.flush()
    _set_regions(session, target, regions)
    # Older alerts this one replaces (beyond the one updated) stop.
    for ev in referenced:
        if ev.id != target.id and ev.status == "active":
            ev.status, ev.status_at, ev.status_note = "ended", now, f"被 {alert.identifier} 取代"
    names = "、".join(r.name for r in regions)
    verb = "新增" if action == "created" else "更新"
    return action, target.id, f"{verb}{target.title}：{names}，{alert.onset:%m-%d %H:%M} 至 {ends:%m-%d %H:%M}"


def import_cap(sessions: sessionmaker[Session], data: bytes, now: datetime, policies: PolicySet, *,
               horizon: timedelta = timedelta(hours=48)) -> ImportResult:
    """Apply one CAP message (all or nothing), then re-plan the elders it covers."""
    alert = parse_cap(data)
    old_ends: list[datetime] = []
    old_paths: list[str] = []
    with write_session(sessions) as s:
        action, event_id, message = _apply(s, alert, now, old_ends, old_paths)
    log.info("cap %s: %s", action, alert.identifier, extra={"action": f"cap_{action}"})
    plan = None
    if event_id is not None and action in ("created", "updated", "cancelled"):
        # An update may shorten the alert or drop regions, and a message may update, replace or
        # cancel several alerts: re-plan up to their previous ends, over their previous regions
        # too, so the calls no longer wanted go and superseded routine calls come back.
        plan = replan_event(sessions, event_id, now, policies, horizon=horizon, until=max(old_ends, default=None),
                            previous_paths=old_paths)
    return ImportResult(action, event_id, message, plan)


def declare(sessions: sessionmaker[Session], *, kind: EventKind, region_codes: list[str], starts_at: datetime,
            ends_at: datetime, now: datetime, policies: PolicySet, by: str, title: str | None = None,
            level: str | None = None, hazard: str | None = None,
            horizon: timedelta = timedelta(hours=48)) -> tuple[int, PlanResult]:
    """Staff declare an event (a lockdown, or a weather event without a CAP feed)."""
    if kind is EventKind.FESTIVAL:
        raise EventError("节日由农历自动计算，无需登记")
    if ends_at <= starts_at:
        raise EventError("结束时间必须晚于开始时间")
    with write_session(sessions) as s:
        regions = list(s.scalars(select(Region).where(Region.code.in_(region_codes))))
        missing = set(region_codes) - {r.code for r in regions}
        if missing:
            raise EventError(f"行政区划代码不存在：{'、'.join(sorted(missing))}")
        names = "、".join(r.name for r in regions)
        ev = SurgeEvent(kind=kind, source="staff", title=title or f"{names}{kind.label}", starts_at=starts_at,
                        ends_at=ends_at, level=level, hazard=hazard, created_by=by, status="active", status_at=now,
                        history=[{"action": "declare", "by": by, "at": now.isoformat()}],
                        created_at=now, updated_at=now)
        s.add(ev)
        s.flush()
        _set_regions(s, ev, regions)
        event_id = ev.id
    log.info("event declared", extra={"action": "event_declare", "event": event_id, "kind": kind.value})
    return event_id, replan_event(sessions, event_id, now, policies, horizon=horizon)


def end_event(sessions: sessionmaker[Session], event_id: int, *, now: datetime, policies: PolicySet, by: str,
              horizon: timedelta = timedelta(hours=48)) -> PlanResult:
    """End an event now (staff lift a lockdown, or an alert is over early)."""
    with write_session(sessions) as s:
        ev = s.get(SurgeEvent, event_id)
        if ev is None:
            raise EventError(f"事件 {event_id} 不存在")
        if ev.status != "active" or ev.ends_at <= now:
            raise EventError(f"事件 {event_id}（{ev.title}）已结束，无需再结束")
        ev.status, ev.status_at, ev.status_note = "ended", now, f"由 {by} 结束"
        old_end = ev.ends_at
        ev.ends_at = max(now, ev.starts_at)
        ev.history = [*ev.history, {"action": "end", "by": by, "at": now.isoformat()}]
    # Up to the old end: the doubled/surge calls it had added are cancelled, superseded routine
    # calls come back.
    return replan_event(sessions, event_id, now, policies, horizon=horizon, until=old_end)


def list_events(sessions: sessionmaker[Session], now: datetime, *, include_past: bool = False) -> list[EventView]:
    with sessions() as s:
        q = select(SurgeEvent).order_by(SurgeEvent.starts_at)
        if not include_past:
            q = q.where(SurgeEvent.status == "active", SurgeEvent.ends_at > now)
        out = []
        for ev in s.scalars(q):
            regions = list(s.scalars(select(Region.name).join(SurgeEventRegion, SurgeEventRegion.region_id == Region.id)
                                     .where(SurgeEventRegion.event_id == ev.id)))
            if ev.status == "cancelled":
                state = "已取消"
            elif ev.status == "ended" or ev.ends_at <= now:
                state = "已结束"
            elif ev.starts_at > now:
                state = "未开始"
            else:
                state = "生效中"
            out.append(EventView(ev.id, EventKind(ev.kind), ev.title, ev.level, ev.starts_at, ev.ends_at, state,
                                 regions, ev.source))
        return out


class CapPoller:
    """Polls a directory (``*.xml``) or an http(s) URL returning one CAP message; each new
    message is imported once (CAP identifiers make re-imports no-ops anyway)."""

    def __init__(self, source: str, sessions: sessionmaker[Session], policies: PolicySet) -> None:
        self.source = source
        self.sessions = sessions
        self.policies = policies
        self._seen: set[tuple[str, float, int]] = set()

    def _fetch(self) -> list[tuple[str, bytes]]:
        if self.source.startswith(("http://", "https://")):
            with urllib.request.urlopen(self.source, timeout=20) as resp:  # noqa: S310 - configured URL
                return [(self.source, resp.read(2_000_000))]
        out = []
        for p in sorted(Path(self.source).glob("*.xml")):
            st = p.stat()
            key = (str(p), st.st_mtime, st.st_size)
            if key in self._seen:
                continue
            self._seen.add(key)
            out.append((str(p), p.read_bytes()))
        return out

    def poll(self, now: datetime) -> list[ImportResult]:
        results = []
        try:
            items = self._fetch()
        except OSError as exc:
            log.warning("cap source unreachable: %s", type(exc).__name__, extra={"action": "cap_poll_failed"})
            return []
        for name, data in items:
            try:
                results.append(import_cap(self.sessions, data, now, self.policies))
            except CapError as exc:
                log.warning("bad CAP file %s: %s", name, exc, extra={"action": "cap_rejected"})
                results.append(ImportResult("ignored", None, f"{name}：{exc}"))
        return results
