"""The planner service end to end: APScheduler (AsyncIOScheduler, SQLAlchemy job store) runs the plan
tick on an accelerated, injected clock and writes check-ins (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, inspect, select, text

from scheduler.service import PlannerConfig, PlannerService, current_planner
from scheduler.windows import LOCAL_TZ
from storage.db import make_engine, make_session_factory
from storage.enums import Category, CheckInStatus
from storage.models import CheckIn, CheckInTransition
from tests.integration.scheduler.data import add_elder, make_regions

BASE = datetime(2026, 12, 1, 8, 0, tzinfo=LOCAL_TZ)
SPEED = 6 * 3600  # one real second is six hours
_start = time.monotonic()


def fake_now() -> datetime:
    """The injected clock (resolved by name inside the APScheduler job)."""
    return (BASE + timedelta(seconds=(time.monotonic() - _start) * SPEED)).astimezone(UTC)


async def test_service_ticks_and_writes_checkins(db_url: str) -> None:
    global _start
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    with sessions() as s, s.begin():
        regs = make_regions(s)
        general = add_elder(s, 1, regs["230183100"], {Category.EMPTY_NEST})
        high = add_elder(s, 2, regs["230183100"], {Category.DISABLED, Category.LIVING_ALONE})
    cfg = PlannerConfig(db_url=db_url, plan_interval_s=1, horizon_hours=48, lock_retry_s=0.2, owner="planner-test",
                        clock=f"{__name__}:fake_now")
    _start = time.monotonic()
    svc = PlannerService(engine, cfg)
    task = asyncio.create_task(svc.run())
    ticks: set[datetime] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            lease = await asyncio.to_thread(current_planner, sessions)
            if lease is not None and lease.last_tick_at is not None:
                ticks.add(lease.last_tick_at)
            with sessions() as s:
                due = s.scalar(select(func.count()).select_from(CheckIn).where(CheckIn.status == CheckInStatus.DUE))
            if len(ticks) >= 3 and due:
                break
        assert svc.active and svc.scheduler is not None
        assert svc.scheduler.get_job("plan_tick") is not None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(ticks) >= 3, ticks
    # The ticks ran on the injected clock, not the wall clock.
    assert all(BASE <= t < BASE + timedelta(days=30) for t in ticks)
    with sessions() as s:
        rows = {(c.elder_id, c.slot): c for c in s.scalars(select(CheckIn))}
        assert (general, "R:M2026-12") in rows
        assert any(e == high and slot.startswith("R:W2026-49") for e, slot in rows)
        # Re-running the tick did not double anything: one row per (elder, slot) by construction,
        # and the promoted ones went planned → due with a recorded transition.
        promoted = s.execute(select(CheckInTransition.checkin_id).where(
            CheckInTransition.from_status == CheckInStatus.PLANNED, CheckInTransition.to_status == CheckInStatus.DUE,
            CheckInTransition.actor == "planner")).scalars().all()
        assert promoted and len(promoted) == len(set(promoted))
        assert all(rows_by_id.status is CheckInStatus.DUE for rows_by_id in
                   (s.get(CheckIn, i) for i in promoted) if rows_by_id is not None)
        lease = current_planner(sessions)
        assert lease is not None and lease.owner == "planner-test"
    # The job itself lives in the SQLAlchemy job store.
    assert "apscheduler_jobs" in inspect(engine).get_table_names()
    with engine.connect() as c:
        assert "plan_tick" in c.execute(text("SELECT id FROM apscheduler_jobs")).scalars().all()
    engine.dispose()
