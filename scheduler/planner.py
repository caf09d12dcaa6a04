"""The planner: stream elders in batches, ask the policy, write due check-ins idempotently.

Inserts use ``INSERT … ON CONFLICT (elder_id, slot) DO NOTHING`` (SQLite and PostgreSQL; on
PostgreSQL rows go through ``COPY`` into a temporary table first, for speed), so re-running a
tick, or two planners racing, never creates a second call for a slot. Memory stays flat: one
batch of elders (keyset pagination by id) is in memory at a time.
"""

from __future__ import annotations

import io
import json
import logging
import time as _time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Integer, func, or_, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import PolicySet
from scheduler.policy import ActiveEvent, ElderFacts, History, PlannedCheckIn, home_visit_months, plan_elder
from scheduler.queue import OPEN, _record_many, cancel, write_session
from storage.enums import CheckInStatus as S
from storage.enums import ConsentStatus, ElderStatus, EventKind, RiskTier
from storage.models import CheckIn, Elder, HomeVisitTask, Region, SurgeEvent, SurgeEventRegion
from storage.models.base import mask_to_categories

log = logging.getLogger(__name__)
BATCH = 5000


@dataclass
class PlanResult:
    elders: int = 0
    planned: int = 0  # check-ins the policy asked for
    inserted: int = 0  # new rows (the rest existed already)
    home_tasks: int = 0
    promoted: int = 0  # planned → due
    cancelled: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"老人 {self.elders} 位，应有探访 {self.planned} 条，新写入 {self.inserted} 条，"
                f"上门任务新增 {self.home_tasks} 条，转为待拨打 {self.promoted} 条，取消 {self.cancelled} 条，"
                f"用时 {self.seconds:.1f} 秒")


@lru_cache(maxsize=128)
def _cats(mask: int) -> Any:
    return mask_to_categories(mask)


def load_events(session: Session, start: datetime, end: datetime, *, event_ids: list[int] | None = None) -> list[ActiveEvent]:
    """Active weather/lockdown events overlapping ``[start, end)``, with their region paths."""
    q = (select(SurgeEvent, Region.path).join(SurgeEventRegion, SurgeEventRegion.event_id == SurgeEvent.id)
         .join(Region, Region.id == SurgeEventRegion.region_id)
         .where(SurgeEvent.status == "active", SurgeEvent.starts_at < end, SurgeEvent.ends_at > start))
    if event_ids is not None:
        q = q.where(SurgeEvent.id.in_(event_ids))
    by_id: dict[int, tuple[SurgeEvent, list[str]]] = {}
    for ev, path in session.execute(q):
        by_id.setdefault(ev.id, (ev, []))[1].append(path)
    return [ActiveEvent(ev.id, EventKind(ev.kind), ev.starts_at, ev.ends_at, tuple(sorted(paths)), ev.title,
                        ev.level, ev.hazard) for ev, paths in by_id.values()]


def _region_filter(paths: list[str]) -> Any:
    return or_(*[or_(Region.path == p, Region.path.like(p + "/%")) for p in paths])


def iter_elder_batches(
    sessions: sessionmaker[Session], *, region_paths: list[str] | None = None, elder_ids: list[int] | None = None,
    batch: int = BATCH, history_since: datetime | None = None,
) -> Iterator[list[tuple[ElderFacts, History]]]:
    """Active elders in id order, ``batch`` at a time, each with its visit history."""
    last = 0
    while True:
        with sessions() as s:
            q = (select(Elder.id, Region.path, type_coerce(Elder.categories, Integer).label("mask"), Elder.risk_tier,
                        Elder.call_windows, Elder.pause_until, Elder.consent_status)
                 .join(Region, Region.id == Elder.region_id)
                 .where(Elder.status == ElderStatus.ACTIVE, Elder.id > last)
                 .order_by(Elder.id).limit(batch))
            if region_paths:
                q = q.where(_region_filter(region_paths))
            if elder_ids is not None:
                q = q.where(Elder.id.in_(elder_ids))
            rows = s.execute(q).all()
            if not rows:
                return
            lo, hi = rows[0].id, rows[-1].id
            hq = (select(CheckIn.elder_id,
                         func.max(CheckIn.completed_at).filter(CheckIn.status == S.DONE).label("done"),
                         func.count().filter(CheckIn.status.in_(OPEN)).label("open"))
                  .where(CheckIn.elder_id >= lo, CheckIn.elder_id <= hi)
                  .group_by(CheckIn.elder_id))
            if history_since is not None:
                hq = hq.where(or_(CheckIn.status.in_(OPEN), CheckIn.completed_at >= history_since))
            hist = {h.elder_id: History(h.done, int(h.open or 0)) for h in s.execute(hq)}
        empty = History()
        yield [(ElderFacts(r.id, r.path, _cats(r.mask or 0), RiskTier(r.risk_tier), tuple(r.call_windows or ()),
                           r.pause_until, ConsentStatus(r.consent_status), ElderStatus.ACTIVE),
                hist.get(r.id, empty)) for r in rows]
        last = hi
        if len(rows) < batch:
            return


_COLS = ("elder_id", "slot", "kind", "status", "priority", "due_at", "next_attempt_at", "ignore_call_window",
         "reasons", "dialog_flags", "attempts", "version", "created_at", "updated_at")


def _rows(plan: list[PlannedCheckIn], now: datetime) -> list[dict[str, Any]]:
    return [{"elder_id": p.elder_id, "slot": p.slot, "kind": p.kind,
             "status": S.DUE if p.due_at <= now else S.PLANNED, "priority": p.priority, "due_at": p.due_at,
             "next_attempt_at": p.due_at, "ignore_call_window": p.ignore_call_window, "reasons": list(p.reasons),
             "dialog_flags": p.dialog_flags, "attempts": 0, "version": 0, "created_at": now, "updated_at": now}
            for p in plan]


def insert_checkins(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert, skipping (elder, slot) pairs that exist; returns how many rows were new."""
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return _pg_copy_insert(session, rows)
    stmt = sqlite.insert(CheckIn).on_conflict_do_nothing(index_elements=["elder_id", "slot"])
    res = cast(CursorResult[Any], session.connection().execute(stmt, rows))
    return max(int(res.rowcount or 0), 0)


def _pg_copy_insert(session: Session, rows: list[dict[str, Any]]) -> int:
    conn = session.connection()
    raw = conn.connection.driver_connection
    assert raw is not None
    cur = raw.cursor()
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS _plan_in ON COMMIT DELETE ROWS AS "
                f"SELECT {', '.join(_COLS)} FROM checkins WITH NO DATA")
    buf = io.StringIO()
    for r in rows:
        buf.write("\t".join(_pg_text(r[c]) for c in _COLS))
        buf.write("\n")
    with cur.copy(f"COPY _plan_in ({', '.join(_COLS)}) FROM STDIN") as cp:
        cp.write(buf.getvalue())
    cur.execute(
        f"INSERT INTO checkins ({', '.join(_COLS)}) SELECT {', '.join(_COLS)} FROM _plan_in "
        "ON CONFLICT (elder_id, slot) DO NOTHING"
    )
    n = cur.rowcount
    cur.execute("TRUNCATE _plan_in")
    return max(int(n or 0), 0)


def _pg_text(v: Any) -> str:
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, list | dict):
        s = json.dumps(v, ensure_ascii=False)
    else:
        s = str(v.value if hasattr(v, "value") else v)
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def insert_home_tasks(session: Session, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    mod = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = mod.insert(HomeVisitTask).on_conflict_do_nothing(index_elements=["elder_id", "month"])
    res = cast(CursorResult[Any], session.connection().execute(stmt, rows))
    return max(int(res.rowcount or 0), 0)


def plan_range(
    sessions: sessionmaker[Session], start: datetime, end: datetime, now: datetime, policies: PolicySet, *,
    region_paths: list[str] | None = None, elder_ids: list[int] | None = None, batch: int = BATCH,
    dry_run: bool = False, sink: Callable[[PlannedCheckIn], None] | None = None, home_tasks: bool = True,
    reconcile_surge: bool = False,
) -> PlanResult:
    """Plan ``[start, end)`` for active elders (optionally only some regions / ids)."""
    t0 = _time.perf_counter()
    result = PlanResult()
    with sessions() as s:
        events = load_events(s, start, end)
    history_since = start - timedelta(days=62)
    for chunk in iter_elder_batches(sessions, region_paths=region_paths, elder_ids=elder_ids, batch=batch,
                                    history_since=history_since):
        plans: list[PlannedCheckIn] = []
        tasks: list[dict[str, Any]] = []
        for elder, hist in chunk:
            pol = policies.for_path(elder.region_path)
            plans.extend(plan_elder(elder, start, end, now=now, policy=pol, events=events, history=hist))
            if home_tasks:
                tasks.extend({"elder_id": elder.id, "month": month, "due_at": due, "status": "open",
                              "created_at": now, "updated_at": now}
                             for month, due in home_visit_months(elder, start, end))
        result.elders += len(chunk)
        result.planned += len(plans)
        if sink is not None:
            for p in plans:
                sink(p)
        if dry_run:
            continue
        with write_session(sessions) as s:
            result.inserted += insert_checkins(s, _rows(plans, now))
            result.home_tasks += insert_home_tasks(s, tasks)
            if reconcile_surge:
                result.cancelled += _reconcile_surge(s, [e.id for e, _ in chunk], plans, now)
    result.seconds = _time.perf_counter() - t0
    return result


def _reconcile_surge(session: Session, elder_ids: list[int], plans: list[PlannedCheckIn], now: datetime) -> int:
    """Cancel open surge check-ins the policy no longer wants (event cancelled, ended or shrunk)."""
    wanted = {(p.elder_id, p.slot) for p in plans if p.kind == "surge"}
    rows = session.execute(
        select(CheckIn.id, CheckIn.elder_id, CheckIn.slot)
        .where(CheckIn.elder_id.in_(elder_ids), CheckIn.kind == "surge",
               CheckIn.status.in_((S.PLANNED, S.DUE, S.RETRY_WAIT)), CheckIn.next_attempt_at >= now)
    ).all()
    stale = [r.id for r in rows if (r.elder_id, r.slot) not in wanted]
    return cancel(session, stale, now, "planner", "预警/封控已解除或变更，取消加密探访")


def promote_due(sessions: sessionmaker[Session], now: datetime, limit: int = 50000) -> int:
    """planned → due for items whose time has come (recorded as transitions)."""
    with write_session(sessions) as s:
        ids = [r.id for r in s.execute(
            select(CheckIn.id).where(CheckIn.status == S.PLANNED, CheckIn.next_attempt_at <= now).limit(limit))]
        if not ids:
            return 0
        s.execute(update(CheckIn).where(CheckIn.id.in_(ids), CheckIn.status == S.PLANNED)
                  .values(status=S.DUE, version=CheckIn.version + 1, updated_at=now))
        _record_many(s, [{"checkin_id": i, "from_status": S.PLANNED, "to_status": S.DUE, "at": now,
                          "actor": "planner", "note": None} for i in ids])
        return len(ids)


def tick(sessions: sessionmaker[Session], now: datetime, policies: PolicySet, *,
         horizon: timedelta = timedelta(hours=48), batch: int = BATCH) -> PlanResult:
    """One planner tick: plan ``[now, now + horizon)`` for everyone, then promote due items."""
    result = plan_range(sessions, now, now + horizon, now, policies, batch=batch)
    result.promoted = promote_due(sessions, now)
    log.info("plan tick: %s", result.summary(), extra={"action": "plan_tick"})
    return result


def replan_event(sessions: sessionmaker[Session], event_id: int, now: datetime, policies: PolicySet, *,
                 horizon: timedelta = timedelta(hours=48), batch: int = BATCH) -> PlanResult:
    """Re-plan the elders an event covers (after it was declared, updated, cancelled or ended)."""
    with sessions() as s:
        paths = list(s.scalars(select(Region.path).join(SurgeEventRegion, SurgeEventRegion.region_id == Region.id)
                               .where(SurgeEventRegion.event_id == event_id)))
    if not paths:
        return PlanResult()
    result = plan_range(sessions, now, now + horizon, now, policies, region_paths=paths, batch=batch,
                        home_tasks=False, reconcile_surge=True)
    log.info("re-planned for event %s: %s", event_id, result.summary(), extra={"action": "plan_event"})
    return result


__all__ = ["PlanResult", "insert_checkins", "iter_elder_batches", "load_events", "plan_range", "promote_due",
           "replan_event", "tick"]
