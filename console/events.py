"""Surge events as staff see them: declare and end a lockdown in their region, see weather alerts.

Rows are the scheduler's :class:`storage.models.schedule.SurgeEvent`; the planner reads active
events on its next tick, so a declared lockdown raises contact frequency without further action.
An officer sees events covering their region, its ancestors (a province-wide cold wave) or any
region below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from console.scope import Principal, scope_clause
from scheduler import events as scheduler_events
from scheduler.config import PolicySet
from storage.enums import EventKind, RegionLevel
from storage.models.region import Region
from storage.models.schedule import SurgeEvent, SurgeEventRegion


class EventError(ValueError):
    """Input that cannot be accepted (message in Chinese)."""


class EventNotFound(LookupError):
    pass


@dataclass(frozen=True)
class EventRow:
    id: int
    kind: EventKind
    title: str
    level: str | None
    starts_at: datetime
    ends_at: datetime
    status: str
    regions: list[str]
    active: bool
    can_end: bool

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind.value, "kind_label": self.kind.label, "title": self.title,
                "level": self.level, "starts_at": self.starts_at.isoformat(), "ends_at": self.ends_at.isoformat(),
                "status": self.status, "regions": self.regions, "active": self.active, "can_end": self.can_end}


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _visible_event_ids(me: Principal) -> object:
    cond = scope_clause(me, Region.path)
    if not me.is_admin:
        cond = or_(cond, Region.path.in_(_ancestors(me.region_path)))
    return (select(SurgeEventRegion.event_id).join(Region, Region.id == SurgeEventRegion.region_id).where(cond))


def list_events(session: Session, me: Principal, now: datetime, limit: int = 100) -> list[EventRow]:
    evs = session.scalars(select(SurgeEvent).where(SurgeEvent.id.in_(_visible_event_ids(me)))  # type: ignore[arg-type]
                          .order_by(SurgeEvent.starts_at.desc()).limit(limit)).all()
    out = []
    for ev in evs:
        regions = session.execute(select(Region.name, Region.path).join(
            SurgeEventRegion, SurgeEventRegion.region_id == Region.id).where(SurgeEventRegion.event_id == ev.id)).all()
        active = ev.status == "active" and ev.starts_at <= now < ev.ends_at
        in_scope = all(me.is_admin or p == me.region_path or p.startswith(me.region_path + "/") for _n, p in regions)
        out.append(EventRow(ev.id, EventKind(ev.kind), ev.title, ev.level, ev.starts_at, ev.ends_at, ev.status,
                            [n for n, _p in regions], active,
                            can_end=(ev.kind == EventKind.LOCKDOWN and ev.status == "active" and ev.ends_at > now
                                     and in_scope and me.can_manage)))
    return out


def declarable_regions(session: Session, me: Principal) -> list[Region]:
    """Townships and villages (and the own region) where the principal may declare a lockdown."""
    if not me.can_manage:
        return []
    return list(session.scalars(select(Region).where(
        scope_clause(me, Region.path), Region.level.in_([RegionLevel.COUNTY, RegionLevel.TOWNSHIP, RegionLevel.VILLAGE]))
        .order_by(Region.path).limit(2000)))


def declare_lockdown(session: Session, me: Principal, region_code: str, title: str, starts_at: datetime,  # noqa: PLR0917
                     ends_at: datetime, now: datetime) -> SurgeEvent:
    if not me.can_manage:
        raise EventError("探访员不能宣布封控，请联系乡镇或县级民政干部")
    region = session.scalar(select(Region).where(Region.code == region_code, scope_clause(me, Region.path)))
    if region is None:
        raise EventError("请选择您管辖范围内的地区")
    if ends_at <= starts_at:
        raise EventError("结束时间必须晚于开始时间")
    if ends_at <= now:
        raise EventError("结束时间已过，不需要宣布")
    ev = SurgeEvent(kind=EventKind.LOCKDOWN, title=(title or f"{region.name}封控")[:255], source="staff",
                    starts_at=starts_at, ends_at=ends_at, status="active", status_at=now,
                    created_by=f"staff:{me.staff_id}", history=[])
    ev.regions.append(SurgeEventRegion(region_id=region.id))
    session.add(ev)
    session.flush()
    return ev


def end_event(session: Session, me: Principal, event_id: int, now: datetime) -> SurgeEvent:
    rows = [r for r in list_events(session, me, now, limit=1000) if r.id == event_id]
    if not rows:
        raise EventNotFound("没有找到这个事件（或不在您的管辖范围）")
    if not rows[0].can_end:
        raise EventError("只能提前结束您管辖范围内、仍在进行的封控")
    ev = session.get(SurgeEvent, event_id)
    assert ev is not None
    ev.status = "ended"
    ev.status_at = now
    ev.status_note = f"staff:{me.staff_id} 提前结束"
    ev.ends_at = max(min(ev.ends_at, now), ev.starts_at)
    return ev


def declare_and_replan(sessions: sessionmaker[Session], me: Principal, region_code: str, title: str,  # noqa: PLR0917
                       starts_at: datetime, ends_at: datetime, now: datetime, policies: PolicySet | None) -> int:
    """Check scope, then declare through the scheduler (which re-plans at once) when it is configured."""
    if policies is None:
        with sessions() as s, s.begin():
            return declare_lockdown(s, me, region_code, title, starts_at, ends_at, now).id
    with sessions() as s:
        if not me.can_manage:
            raise EventError("探访员不能宣布封控，请联系乡镇或县级民政干部")
        if s.scalar(select(Region.id).where(Region.code == region_code, scope_clause(me, Region.path))) is None:
            raise EventError("请选择您管辖范围内的地区")
    if ends_at <= now:
        raise EventError("结束时间已过，不需要宣布")
    try:
        event_id, _plan = scheduler_events.declare(
            sessions, kind=EventKind.LOCKDOWN, region_codes=[region_code], starts_at=starts_at, ends_at=ends_at,
            now=now, policies=policies, by=f"staff:{me.staff_id}", title=title or None)
    except scheduler_events.EventError as exc:
        raise EventError(str(exc)) from exc
    return event_id


def end_and_replan(sessions: sessionmaker[Session], me: Principal, event_id: int, now: datetime,
                   policies: PolicySet | None) -> None:
    if policies is None:
        with sessions() as s, s.begin():
            end_event(s, me, event_id, now)
        return
    with sessions() as s:
        rows = [r for r in list_events(s, me, now, limit=1000) if r.id == event_id]
    if not rows:
        raise EventNotFound("没有找到这个事件（或不在您的管辖范围）")
    if not rows[0].can_end:
        raise EventError("只能提前结束您管辖范围内、仍在进行的封控")
    try:
        scheduler_events.end_event(sessions, event_id, now=now, policies=policies, by=f"staff:{me.staff_id}")
    except scheduler_events.EventError as exc:
        raise EventError(str(exc)) from exc
