"""Queue, planner, events and signals against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import load_policy
from scheduler.events import declare, end_event, import_cap
from scheduler.planner import plan_range, tick
from scheduler.queue import LeaseLost, Queue, RequestKind, UnreachedNotice, write_session
from scheduler.retry import Failure
from scheduler.service import LOCK_KEY, PlannerLock
from scheduler.signals import SignalIn, ingest, register_device
from scheduler.windows import LOCAL_TZ
from storage.db import make_engine
from storage.enums import Category, CheckInStatus, EventKind, Outcome
from storage.models import CheckIn, CheckInTransition, DeviceSignal, HomeVisitTask
from tests.integration.scheduler.data import add_elder, make_regions

POL = load_policy()
SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "cap"


def L(*a: int) -> datetime:
    return datetime(*a, tzinfo=LOCAL_TZ)


@pytest.fixture
def town(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as s, s.begin():
        regs = make_regions(s)
        ids = {
            "general": add_elder(s, 1, regs["230183100"], {Category.EMPTY_NEST}),
            "high": add_elder(s, 2, regs["230183100"], {Category.DISABLED, Category.LIVING_ALONE}),
            "other_city": add_elder(s, 3, regs["230202"], {Category.LIVING_ALONE}),
        }
    return ids


def test_plan_is_idempotent_and_creates_home_visit_tasks(sessions, town) -> None:
    start, end = L(2026, 12, 1), L(2027, 1, 1)
    a = plan_range(sessions, start, end, start, POL)
    b = plan_range(sessions, start, end, start, POL)
    assert a.inserted == a.planned > 0 and b.inserted == 0
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(CheckIn)) == a.planned
        tasks = s.execute(select(HomeVisitTask.elder_id, HomeVisitTask.month)).all()
    assert tasks == [(town["high"], "2026-12")]


def test_fresh_batch_with_an_old_slot_skips_it_and_writes_the_rest(sessions, town, caplog) -> None:
    """No history for the batch's elders (PostgreSQL then tries a plain INSERT), but one slot exists
    as an old cancelled call: that row stays as it is, every other slot is written once."""
    start, end = L(2026, 12, 1), L(2027, 1, 1)
    wanted: list = []
    plan_range(sessions, start, end, start, POL, dry_run=True, sink=wanted.append)
    old = next(p for p in wanted if p.elder_id == town["high"])
    with sessions() as s, s.begin():
        s.add(CheckIn(elder_id=old.elder_id, slot=old.slot, kind=old.kind, status=CheckInStatus.CANCELLED,
                      due_at=old.due_at, next_attempt_at=old.due_at, reasons=["旧的"]))
    with caplog.at_level("INFO", logger="scheduler.planner"):
        r = plan_range(sessions, start, end, start, POL)
    assert r.planned == len(wanted) and r.inserted == len(wanted) - 1
    with sessions() as s:
        rows = s.execute(select(CheckIn.elder_id, CheckIn.slot, CheckIn.status, CheckIn.reasons)).all()
    assert sorted((e, sl) for e, sl, _, _ in rows) == sorted((p.elder_id, p.slot) for p in wanted)
    kept = [(st, rs) for e, sl, st, rs in rows if (e, sl) == (old.elder_id, old.slot)]
    assert kept == [(CheckInStatus.CANCELLED, ["旧的"])]
    if sessions.kw["bind"].dialect.name == "postgresql":  # the plain INSERT met the slot and fell back
        assert [r for r in caplog.records if getattr(r, "action", "") == "plan_fresh_conflict"]


@pytest.mark.postgres
def test_planner_analyses_tables_that_never_were(sessions, town) -> None:
    """Autovacuum off or a database just restored: without statistics PostgreSQL would scan all
    elders for every batch; the planner analyses such tables first (and leaves analysed ones)."""
    if sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("PostgreSQL statistics")

    def reltuples() -> dict[str, float]:
        with sessions() as s:
            return dict(s.execute(text("SELECT relname, reltuples FROM pg_class WHERE oid = ANY("
                                       "CAST(ARRAY['elders', 'regions', 'checkins'] AS regclass[]))")).all())

    assert all(v < 0 for v in reltuples().values())  # a new schema: never analysed
    plan_range(sessions, L(2026, 12, 1), L(2027, 1, 1), L(2026, 12, 1), POL)
    after = reltuples()
    assert after["elders"] == 3 and after["regions"] > 0 and after["checkins"] == 0
    # Stale: far more rows changed since (autovacuum's rule: > 50 + 10 %) → analysed again.
    with sessions() as s, s.begin():
        at = L(2026, 12, 20, 10)
        s.add_all([CheckIn(elder_id=town["general"], slot=f"M:{i}", kind="manual", due_at=at, next_attempt_at=at)
                   for i in range(120)])
        s.flush()
        s.execute(text("SELECT pg_stat_force_next_flush()"))  # counted once this backend is idle again
    with sessions() as s:
        n = s.scalar(select(func.count()).select_from(CheckIn))
    plan_range(sessions, L(2026, 12, 1), L(2027, 1, 1), L(2026, 12, 1), POL)
    assert reltuples()["checkins"] == n


def test_claim_order_windows_ladder_and_unreached(sessions, town) -> None:
    notices: list[UnreachedNotice] = []
    q = Queue(sessions, POL, on_unreached=lambda s, n: notices.append(n))
    lunch = L(2026, 12, 1, 12, 30)
    q.request_call(town["general"], RequestKind.FAMILY_REQUEST, lunch, reason="家属请求", source="wechat:1")
    sos = q.request_call(town["high"], RequestKind.SOS, lunch, reason="紧急按钮", source="device:x")
    again = q.request_call(town["high"], RequestKind.SOS, lunch, reason="紧急按钮", source="device:x")
    assert again.id == sos.id and not again.created
    got = q.claim("w1", 10, timedelta(minutes=5), lunch)
    assert [c.id for c in got] == [sos.id]  # lunch: only the SOS may ring
    assert q.claim("w1", 10, timedelta(minutes=5), lunch) == []
    q.complete(sos.id, worker="w1", version=got[0].version, outcome=Outcome.EMERGENCY, now=lunch)
    # The family request waits for the afternoon window, then walks the ladder.
    t = L(2026, 12, 1, 15, 0)
    (c,) = q.claim("w2", 5, timedelta(minutes=5), t)
    steps = []
    for _ in range(10):
        r = q.fail(c.id, worker="w2", version=c.version, failure=Failure.NO_ANSWER, now=t)
        steps.append(r.status)
        if r.status is CheckInStatus.UNREACHED:
            break
        t = r.next_attempt_at
        # A trunk failure in between never uses a rung.
        (c,) = q.claim("w2", 5, timedelta(minutes=5), t)
        tr = q.fail(c.id, worker="w2", version=c.version, failure=Failure.TRUNK, now=t)
        assert tr.status is CheckInStatus.DUE and tr.attempts == r.attempts
        t = tr.next_attempt_at
        (c,) = q.claim("w2", 5, timedelta(minutes=5), t)
    assert steps == [CheckInStatus.RETRY_WAIT] * 4 + [CheckInStatus.UNREACHED]
    assert len(notices) == 1 and notices[0].elder_id == town["general"] and notices[0].attempts == 5
    with sessions() as s:
        trans = s.scalars(select(CheckInTransition).where(CheckInTransition.checkin_id == c.id)
                          .order_by(CheckInTransition.id)).all()
    assert trans[-1].to_status is CheckInStatus.UNREACHED and all(x.at is not None for x in trans)


def test_expired_lease_returns_item_and_stale_worker_is_refused(sessions, town) -> None:
    q = Queue(sessions, POL)
    t = L(2026, 12, 1, 9, 0)
    q.request_call(town["general"], RequestKind.MANUAL, t, reason="人工", source="console")
    (c,) = q.claim("dead", 1, timedelta(minutes=2), t)
    assert q.claim("w2", 1, timedelta(minutes=2), t + timedelta(minutes=1)) == []
    (c2,) = q.claim("w2", 1, timedelta(minutes=2), t + timedelta(minutes=3))
    assert c2.id == c.id
    with pytest.raises(LeaseLost):
        q.complete(c.id, worker="dead", version=c.version, outcome=Outcome.WELL, now=t + timedelta(minutes=4))
    q.complete(c.id, worker="w2", version=c2.version, outcome=Outcome.WELL, now=t + timedelta(minutes=4))


def test_cold_wave_alert_lifecycle(sessions, town) -> None:
    at = L(2026, 12, 3, 7, 30)
    res = import_cap(sessions, (SAMPLES / "01_cold_wave_red.xml").read_bytes(), at, POL)
    assert res.action == "created"
    assert import_cap(sessions, (SAMPLES / "01_cold_wave_red.xml").read_bytes(), at, POL).action == "duplicate"

    def surge() -> dict[tuple[int, str], CheckInStatus]:
        with sessions() as s:
            return {(r.elder_id, r.slot): r.status for r in s.execute(
                select(CheckIn.elder_id, CheckIn.slot, CheckIn.status).where(CheckIn.kind == "surge"))}

    first = surge()
    assert (town["high"], "X:D2026-12-03pm") in first and (town["general"], "X:D2026-12-03") in first
    assert not any(e == town["other_city"] for e, _ in first)
    # The re-plan wrote calls within the planner's 48 h horizon only; the 5th is still ahead.
    assert (town["general"], "X:D2026-12-05") not in first
    # The next day's tick plans the 5th (still inside the red alert).
    tick(sessions, L(2026, 12, 4, 7, 0), POL)
    assert (town["general"], "X:D2026-12-05") in surge()
    # Update: downgraded to orange and shortened to 5 Dec 08:00 → the 5th's surge calls are cancelled.
    upd = import_cap(sessions, (SAMPLES / "02_cold_wave_update.xml").read_bytes(), L(2026, 12, 4, 7, 0), POL)
    assert upd.action == "updated" and upd.replan and upd.replan.cancelled >= 2
    after = surge()
    assert after[(town["general"], "X:D2026-12-05")] is CheckInStatus.CANCELLED
    assert after[(town["general"], "X:D2026-12-04")] is not CheckInStatus.CANCELLED
    # Cancel: the rest of the 4th's open surge calls stop.
    can = import_cap(sessions, (SAMPLES / "03_cold_wave_cancel.xml").read_bytes(), L(2026, 12, 4, 12, 0), POL)
    assert can.action == "cancelled"
    assert surge()[(town["high"], "X:D2026-12-04pm")] is CheckInStatus.CANCELLED


def test_lockdown_declared_and_ended(sessions, town) -> None:
    now = L(2026, 11, 30, 8, 0)
    plan_range(sessions, now, L(2027, 1, 1), now, POL)
    ev, res = declare(sessions, kind=EventKind.LOCKDOWN, region_codes=["230183"], starts_at=now,
                      ends_at=L(2026, 12, 31), now=now, policies=POL, by="staff:1", horizon=timedelta(days=32))
    assert res.inserted > 0
    with sessions() as s:
        routine = s.scalars(select(CheckIn.slot).where(CheckIn.elder_id == town["general"],
                                                       CheckIn.kind == "routine")).all()
    assert {"R:H2026-12-1", "R:H2026-12-2"} <= set(routine)
    end_event(sessions, ev, now=L(2026, 12, 2), policies=POL, by="staff:1")


def test_device_signals(sessions, town) -> None:
    now = L(2026, 12, 1, 22, 0)
    with write_session(sessions) as s:
        register_device(s, device_id="sos-1", elder_id=town["high"], kind="sos_button", now=now)
        register_device(s, device_id="water-1", elder_id=town["general"], kind="water_meter", now=now)
    with write_session(sessions) as s:
        r = ingest(s, SignalIn(device_id="sos-1", kind="sos", observed_at=now), source="test", now=now, policies=POL)
        w = ingest(s, SignalIn(device_id="water-1", kind="water", observed_at=now, litres_24h=4.0), source="test",
                   now=now, policies=POL)
        ok = ingest(s, SignalIn(device_id="water-1", kind="water", observed_at=now + timedelta(hours=1),
                                litres_24h=80), source="test", now=now, policies=POL)
    assert (r.action, w.action, ok.action) == ("call_now", "call_within", "none")
    with sessions() as s:
        sos = s.get(CheckIn, r.checkin_id)
        assert sos.priority == 0 and sos.ignore_call_window and sos.status is CheckInStatus.DUE
        water = s.get(CheckIn, w.checkin_id)
        assert water.next_attempt_at == L(2026, 12, 2, 9, 0)  # 22:00 is quiet: next window
        assert s.scalar(select(func.count()).select_from(DeviceSignal)) == 3


def test_planner_lock_single_active(db_url: str) -> None:
    e1, e2 = make_engine(db_url), make_engine(db_url)
    try:
        a, b = PlannerLock(e1, "a", lease=timedelta(seconds=30)), PlannerLock(e2, "b", lease=timedelta(seconds=30))
        t = L(2026, 12, 1, 9, 0)
        assert a.try_acquire(t) and not b.try_acquire(t)
        if e1.dialect.name == "postgresql":
            # Kill a's connection from the server side, as if the process died: b takes over.
            with e2.connect() as c:
                c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype='advisory' "
                               "AND objid = :k AND pid <> pg_backend_pid()"), {"k": LOCK_KEY})
            assert not a.heartbeat(t)
            assert b.try_acquire(t)
        else:
            assert not b.try_acquire(t + timedelta(seconds=10))
            assert b.try_acquire(t + timedelta(seconds=31))  # a stopped renewing
            assert not a.heartbeat(t + timedelta(seconds=31))
        b.release()
    finally:
        e1.dispose()
        e2.dispose()


_ = threading
