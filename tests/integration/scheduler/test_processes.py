"""Real processes on PostgreSQL: a dialer killed (SIGKILL) mid-lease, and two planners racing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from scheduler.config import load_policy
from scheduler.queue import Queue
from scheduler.windows import LOCAL_TZ
from storage.db import make_engine, make_session_factory
from storage.enums import Category, CheckInStatus, Outcome
from storage.models import CheckIn, CheckInTransition, Elder, HomeVisitTask
from tests.integration.scheduler.data import elder_row, make_regions

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=LOCAL_TZ)
MIX = [{Category.EMPTY_NEST}, {Category.LIVING_ALONE}, {Category.DISABLED, Category.LIVING_ALONE},
       {Category.SEVERELY_DISABLED}, {Category.LEFT_BEHIND}]


def _pg(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only (row locks and SKIP LOCKED across processes)")


def _elders(db_url: str, n: int, *, due: bool) -> list[int]:
    sessions = make_session_factory(make_engine(db_url))
    with sessions() as s, s.begin():
        rid = make_regions(s)["230183100"].id
        s.execute(insert(Elder), [elder_row(i, rid, MIX[i % len(MIX)]) for i in range(n)])
        ids = list(s.scalars(select(Elder.id).order_by(Elder.id)))
        if due:
            s.execute(insert(CheckIn), [
                {"elder_id": e, "slot": "T", "kind": "routine", "status": "due", "priority": 50, "due_at": NOW,
                 "next_attempt_at": NOW - timedelta(seconds=i), "ignore_call_window": False, "reasons": [],
                 "dialog_flags": {}, "attempts": 0, "version": 0, "created_at": NOW, "updated_at": NOW}
                for i, e in enumerate(ids)])
    return ids


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tests.integration.scheduler.proc", *args], cwd=REPO, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _kill(p: subprocess.Popen[str]) -> None:
    p.send_signal(signal.SIGKILL)
    assert p.wait(timeout=30) == -signal.SIGKILL


@pytest.mark.parametrize("hold", [False, True], ids=["after_commit", "inside_claim_tx"])
def test_worker_killed_mid_lease_its_items_are_claimed_again(db_url: str, hold: bool) -> None:
    _pg(db_url)
    _elders(db_url, 20, due=True)
    lease = timedelta(seconds=90)
    child = _spawn("claim", db_url, "5", str(lease.total_seconds()), NOW.isoformat(), *(["--hold"] if hold else []))
    try:
        doomed = set(json.loads(child.stdout.readline()))  # type: ignore[union-attr]
        assert len(doomed) == 5
        q = Queue(make_session_factory(make_engine(db_url)), load_policy())
        soon = NOW + timedelta(seconds=30)
        # While the child lives: its items are leased (or row-locked) and never handed out twice.
        first = q.claim("w2", 20, timedelta(minutes=5), soon)
        assert not doomed & {c.id for c in first}
        # (Inside its open transaction the child also row-locks the few extra rows it looked at.)
        assert len(first) == 15 if not hold else 8 <= len(first) <= 15
        _kill(child)
    finally:
        if child.poll() is None:
            child.kill()
    if hold:
        # Killed inside its transaction: PostgreSQL rolled the claim back, the items are due at once.
        again = q.claim("w3", 20, timedelta(minutes=5), soon + timedelta(seconds=1))
    else:
        # Killed after committing: nobody gets them until the lease runs out...
        assert q.claim("w3", 20, timedelta(minutes=5), soon + timedelta(seconds=5)) == []
        again = q.claim("w3", 20, timedelta(minutes=5), NOW + lease + timedelta(seconds=5))
    assert doomed <= {c.id for c in again} and len(first) + len(again) == 20
    for c in again:
        if c.id in doomed:
            q.complete(c.id, worker="w3", version=c.version, outcome=Outcome.WELL,
                       now=NOW + lease + timedelta(seconds=9))
    with q.sessions() as s:
        trail = s.execute(select(CheckInTransition.checkin_id, CheckInTransition.from_status,
                                 CheckInTransition.to_status, CheckInTransition.actor)
                          .where(CheckInTransition.checkin_id.in_(doomed)).order_by(CheckInTransition.id)).all()
        statuses = set(s.scalars(select(CheckIn.status).where(CheckIn.id.in_(doomed))))
    assert statuses == {CheckInStatus.DONE}
    for cid in doomed:
        steps = [(t.from_status, t.to_status, t.actor) for t in trail if t.checkin_id == cid]
        if hold:
            assert steps == [(CheckInStatus.DUE, CheckInStatus.DIALING, "w3"),
                             (CheckInStatus.DIALING, CheckInStatus.DONE, "w3")]
        else:
            assert steps == [(CheckInStatus.DUE, CheckInStatus.DIALING, "doomed"),
                             (CheckInStatus.DIALING, CheckInStatus.DUE, "lease-reaper"),
                             (CheckInStatus.DUE, CheckInStatus.DIALING, "w3"),
                             (CheckInStatus.DIALING, CheckInStatus.DONE, "w3")]


def test_two_planner_processes_racing_never_double_a_checkin(db_url: str) -> None:
    _pg(db_url)
    n = 3000
    _elders(db_url, n, due=False)
    start, end = datetime(2026, 12, 1, tzinfo=LOCAL_TZ), datetime(2027, 1, 1, tzinfo=LOCAL_TZ)
    procs = [_spawn("plan", db_url, start.isoformat(), end.isoformat()) for _ in range(2)]
    try:
        for p in procs:
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        results = [json.loads(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
        assert all(p.wait(timeout=120) == 0 for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    planned = results[0]["planned"]
    assert planned == results[1]["planned"] and planned > 2 * n
    sessions = make_session_factory(make_engine(db_url))
    with sessions() as s:
        total = s.scalar(select(func.count()).select_from(CheckIn))
        distinct = s.scalar(select(func.count()).select_from(
            select(CheckIn.elder_id, CheckIn.slot).distinct().subquery()))
        tasks = s.scalar(select(func.count()).select_from(HomeVisitTask))
    # Every planned call exists exactly once, and each was inserted by exactly one of the two.
    assert total == distinct == planned == results[0]["inserted"] + results[1]["inserted"]
    assert tasks == results[0]["home_tasks"] + results[1]["home_tasks"] > 0
