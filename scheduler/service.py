"""The planner process: single-active (PostgreSQL advisory lock; a lease row on SQLite), running
APScheduler 3 (AsyncIOScheduler, SQLAlchemy job store) with jobs that call top-level functions.

Instances that do not hold the lock wait and retry; when the active one dies its database
connection closes, PostgreSQL drops the lock, and a waiting instance takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import PolicySet, load_policy
from scheduler.queue import write_session
from storage.db import is_transient, make_engine, make_session_factory
from storage.models import PlannerLease

log = logging.getLogger(__name__)
LOCK_KEY = 0x74616E66  # "tanf"
LEASE_NAME = "planner"


class PlannerLock:
    """Who plans. PostgreSQL: a session advisory lock held on a dedicated connection (released by
    the server if the process dies). SQLite: a lease row that expires unless renewed."""

    def __init__(self, engine: Engine, owner: str, lease: timedelta = timedelta(seconds=60)) -> None:
        self.engine = engine
        self.owner = owner
        self.lease = lease
        self.pg = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self._sessions = make_session_factory(engine)

    @property
    def held(self) -> bool:
        return self._conn is not None if self.pg else self._held

    _held = False

    def try_acquire(self, now: datetime) -> bool:
        if self.pg:
            if self._conn is not None:
                return True
            conn = self.engine.connect()
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar())
            conn.commit()
            if not got:
                conn.close()
                return False
            self._conn = conn
            self._beat(now, acquired=True)
            return True
        with write_session(self._sessions) as s:
            row = s.get(PlannerLease, LEASE_NAME)
            if row is not None and row.owner != self.owner and row.expires_at > now:
                return False
            if row is None:
                s.add(PlannerLease(name=LEASE_NAME, owner=self.owner, acquired_at=now, heartbeat_at=now,
                                   expires_at=now + self.lease))
            else:
                if row.owner != self.owner:
                    row.acquired_at = now
                row.owner, row.heartbeat_at, row.expires_at = self.owner, now, now + self.lease
        self._held = True
        return True

    def heartbeat(self, now: datetime) -> bool:
        """Renew; False when the lock was lost (connection died / lease taken over)."""
        if self.pg:
            if self._conn is None:
                return False
            try:
                self._conn.execute(text("SELECT 1"))
                self._conn.commit()
            except Exception:  # the connection is gone: so is the lock
                self.forget()
                return False
            self._beat(now)
            return True
        with write_session(self._sessions) as s:
            row = s.get(PlannerLease, LEASE_NAME)
            if row is None or row.owner != self.owner:
                self._held = False
                return False
            row.heartbeat_at, row.expires_at = now, now + self.lease
        return True

    def forget(self) -> None:
        """Drop a lock whose connection died (the server released it with the session)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
                self._conn.close()
            self._conn = None
        self._held = False

    def _beat(self, now: datetime, acquired: bool = False) -> None:
        with write_session(self._sessions) as s:
            row = s.get(PlannerLease, LEASE_NAME)
            if row is None:
                s.add(PlannerLease(name=LEASE_NAME, owner=self.owner, acquired_at=now, heartbeat_at=now,
                                   expires_at=now + self.lease))
            else:
                if acquired:
                    row.acquired_at = now
                row.owner, row.heartbeat_at, row.expires_at = self.owner, now, now + self.lease

    def release(self) -> None:
        if self.pg and self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
        elif self._held:
            with write_session(self._sessions) as s:
                row = s.get(PlannerLease, LEASE_NAME)
                if row is not None and row.owner == self.owner:
                    row.expires_at = row.heartbeat_at
            self._held = False


def current_planner(sessions: sessionmaker[Session]) -> PlannerLease | None:
    with sessions() as s:
        return s.scalar(select(PlannerLease).where(PlannerLease.name == LEASE_NAME))


# -- jobs: top-level functions with picklable arguments (APScheduler's job store keeps them) --

@lru_cache(maxsize=4)
def _runtime(db_url: str, policy_file: str | None) -> tuple[sessionmaker[Session], PolicySet]:
    engine = make_engine(db_url)
    return make_session_factory(engine), load_policy(Path(policy_file) if policy_file else None)


def resolve_clock(clock: str | None) -> Callable[[], datetime]:
    """``"package.module:function"`` → that function (a picklable way to inject a clock into jobs);
    None → the real clock."""
    if not clock:
        return lambda: datetime.now(UTC)
    module, _, attr = clock.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    if not callable(fn):
        raise TypeError(f"clock {clock!r} is not callable")
    return cast(Callable[[], datetime], fn)


def plan_tick_job(db_url: str, policy_file: str | None, horizon_hours: int, clock: str | None = None) -> str:
    from scheduler.planner import tick

    sessions, policies = _runtime(db_url, policy_file)
    now = resolve_clock(clock)()
    result = tick(sessions, now, policies, horizon=timedelta(hours=horizon_hours))
    with write_session(sessions) as s:
        row = s.get(PlannerLease, LEASE_NAME)
        if row is not None:
            row.last_tick_at, row.last_tick_note = now, result.summary()[:255]
    return result.summary()


_POLLERS: dict[tuple[str, str], Any] = {}


def cap_poll_job(db_url: str, policy_file: str | None, source: str, clock: str | None = None) -> int:
    from scheduler.events import CapPoller

    sessions, policies = _runtime(db_url, policy_file)
    poller = _POLLERS.setdefault((db_url, source), CapPoller(source, sessions, policies))
    return len(poller.poll(resolve_clock(clock)()))


def privacy_purge_job(db_url: str, recordings_dir: str | None, recording_days: int, transcript_days: int,
                      clock: str | None = None) -> str:
    """Daily: recordings and transcripts past retention, and erasures due after consent withdrawal."""
    from scheduler.privacy import Retention, purge

    sessions, _policies = _runtime(db_url, None)
    retention = Retention(Path(recordings_dir) if recordings_dir else None, recording_days, transcript_days)
    with write_session(sessions) as s:
        return purge(s, resolve_clock(clock)(), retention).summary()


@dataclass(frozen=True)
class PlannerConfig:
    db_url: str
    policy_file: str | None = None
    plan_interval_s: int = 300
    horizon_hours: int = 48
    cap_source: str | None = None
    cap_poll_s: int = 300
    lock_retry_s: float = 10.0
    owner: str = "planner"
    clock: str | None = None  # "module:function" returning an aware datetime (tests); None = real time
    # The daily privacy purge (03:30 Beijing time); without recordings_dir recordings are kept.
    recordings_dir: str | None = None
    recording_retention_days: int = 90
    transcript_retention_days: int = 365


class PlannerService:
    """Waits for the planner lock, then runs the APScheduler jobs until stopped or the lock is lost."""

    def __init__(self, engine: Engine, config: PlannerConfig) -> None:
        self.engine = engine
        self.config = config
        self.lock = PlannerLock(engine, config.owner, lease=timedelta(seconds=max(30, config.lock_retry_s * 3)))
        self.scheduler: Any = None
        self.active = False

    def _start_scheduler(self) -> None:
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        sched = AsyncIOScheduler(jobstores={"default": SQLAlchemyJobStore(engine=self.engine)}, timezone=UTC)
        c = self.config
        sched.add_job("scheduler.service:plan_tick_job", "interval", seconds=c.plan_interval_s, id="plan_tick",
                      args=[c.db_url, c.policy_file, c.horizon_hours, c.clock], replace_existing=True,
                      next_run_time=datetime.now(UTC), coalesce=True, max_instances=1, misfire_grace_time=600)
        sched.add_job("scheduler.service:privacy_purge_job", "cron", hour=19, minute=30, id="privacy_purge",
                      args=[c.db_url, c.recordings_dir, c.recording_retention_days, c.transcript_retention_days,
                            c.clock],
                      replace_existing=True, coalesce=True, max_instances=1, misfire_grace_time=6 * 3600)
        if c.cap_source:
            sched.add_job("scheduler.service:cap_poll_job", "interval", seconds=c.cap_poll_s, id="cap_poll",
                          args=[c.db_url, c.policy_file, c.cap_source, c.clock], replace_existing=True, coalesce=True,
                          max_instances=1, next_run_time=datetime.now(UTC))
        elif sched.get_job("cap_poll"):
            sched.remove_job("cap_poll")
        sched.start()
        self.scheduler = sched

    async def run(self) -> None:
        try:
            clock = resolve_clock(self.config.clock)
            while True:
                now = clock()
                try:
                    if not self.active:
                        if await asyncio.to_thread(self.lock.try_acquire, now):
                            self.active = True
                            log.info("planner lock acquired", extra={"action": "planner_active"})
                            self._start_scheduler()
                    elif not await asyncio.to_thread(self.lock.heartbeat, now):
                        log.error("planner lock lost", extra={"action": "planner_lost"})
                        self._stop_scheduler()
                        self.active = False
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    # The database is away (restart, network): stop planning, try again next round.
                    log.warning("planner: database unavailable", extra={"action": "planner_db_unavailable"})
                    if self.active:
                        self._stop_scheduler()
                        self.active = False
                        await asyncio.to_thread(self.lock.forget)
                await asyncio.sleep(self.config.lock_retry_s)
        finally:
            self._stop_scheduler()
            await asyncio.to_thread(self.lock.release)

    def _stop_scheduler(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
