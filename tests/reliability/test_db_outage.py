"""Database outage: PostgreSQL is stopped for a few seconds in the middle of a round (calls in
progress, the planner active) and started again. Calls that end while it is away are kept in the
dialer's fsynced spool and written when it is back; the dialer and the planner service reconnect
by themselves. Nothing is lost: every INVITE the peer answered has its CallAttempt and every
check-in is done. (Root runs ``pg_ctlcluster``; the cluster is started again in a ``finally``.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from dialogs.engine import DialogEngine
from dialogs.script import load_scripts
from ivr.dialer import Dialer, DialerConfig
from ivr.dialplan import DialPlan
from ivr.sip import SipConfig, UserAgent
from ivr.testing.fastpeer import Answer, Behaviour, FastPeer
from ivr.testing.fastrunner import FastRunner
from scheduler.config import load_policy
from scheduler.queue import Queue, RequestKind
from scheduler.service import PlannerConfig, PlannerService, current_planner
from storage.crypto import Vault
from storage.db import make_engine, make_session_factory
from storage.enums import CheckInStatus
from storage.migrate import upgrade
from storage.models import CheckIn
from storage.models.checkin import CallAttempt
from tests.conftest import PG_URL, pg_schema_url
from tests.reliability.world import make_elders

pytestmark = [pytest.mark.postgres, pytest.mark.sip, pytest.mark.slow]
N = 30
CLUSTER = ["15", "main"]


def pg_ctl(action: str, *extra: str) -> None:
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *CLUSTER, action, *extra], check=True,
                   capture_output=True, timeout=60)


def pg_online() -> bool:
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False).stdout
    return any(line.split()[:2] == CLUSTER and "online" in line for line in out.splitlines())


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("PostgreSQL 未配置：设置 TANFANG_TEST_DATABASE_URL")
    if os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None:
        pytest.skip("需要 root 和 pg_ctlcluster 才能重启 PostgreSQL")
    schema = f"dbout_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield pg_schema_url(PG_URL, schema)
    finally:
        if not pg_online():  # whatever happened, leave the cluster running for everyone else
            pg_ctl("start")
        for _ in range(50):
            try:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                break
            except Exception:
                time.sleep(0.2)
        admin.dispose()


async def test_postgres_restart_mid_round_loses_no_outcome(pg_url: str, vault: Vault, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    engine = make_engine(pg_url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    elders = make_elders(sessions, vault, N, now)
    policy = load_policy()
    queue = Queue(sessions, policy)
    for e in elders:
        queue.request_call(e, RequestKind.MANUAL, now, reason="例行探访", source="test", ignore_call_window=True)
    peer = await FastPeer.open(rule=lambda _n: Behaviour(Answer.ANSWER, 1500))  # 1.5 s calls
    ua = UserAgent(SipConfig(invite_timeout_s=2.0))
    await ua.start()
    spool_dir = tmp_path / "spool"
    dialer = Dialer(sessions=sessions, runner=FastRunner(ua), engine=DialogEngine(load_scripts()),
                    dial_plan=DialPlan(peer.template), vault=vault, policy=policy,
                    config=DialerConfig(worker="dialer-db", line_capacity=8, poll_s=0.1, db_retry_attempts=3,
                                        db_retry_cap_s=0.5, spool_dir=spool_dir))
    planner = PlannerService(make_engine(pg_url), PlannerConfig(db_url=pg_url, plan_interval_s=1, lock_retry_s=0.5,
                                                                owner="planner-db"))
    tasks = [asyncio.create_task(dialer.run()), asyncio.create_task(planner.run())]
    down_at = up_at = 0.0
    try:
        for _ in range(200):  # calls in progress, some stored already, the planner active
            await asyncio.sleep(0.1)
            if len(peer.invites) >= 8 and dialer.stats.settled and planner.active:
                break
        assert planner.active
        down_at = time.time()
        await asyncio.to_thread(pg_ctl, "stop", "-m", "fast")  # every connection is cut
        await asyncio.sleep(4.0)  # the calls in progress end while the database is away
        await asyncio.to_thread(pg_ctl, "start")
        up_at = time.time()
        for _ in range(600):
            with contextlib.suppress(Exception):
                with sessions() as s:
                    done = s.scalar(select(func.count()).select_from(CheckIn).where(
                        CheckIn.status == CheckInStatus.DONE, CheckIn.slot.like("Q:%")))
                if done == N and len(dialer.spool or ()) == 0:
                    break
            await asyncio.sleep(0.1)
        for _ in range(100):  # the planner took its lock again and ticked after the restart
            lease = await asyncio.to_thread(current_planner, sessions)
            if lease is not None and lease.last_tick_at is not None and lease.last_tick_at.timestamp() > up_at:
                break
            await asyncio.sleep(0.2)
    finally:
        if not pg_online():
            pg_ctl("start")
        await dialer.stop()
        tasks[1].cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 30)
        await ua.stop()
        peer.close()
    spooled = [r for r in caplog.records if getattr(r, "action", None) == "call_spooled"]
    with sessions() as s:
        statuses = [r.status for r in s.scalars(select(CheckIn).where(CheckIn.slot.like("Q:%")))]  # ours
        attempts = s.execute(select(CallAttempt.checkin_id, CallAttempt.dialog_result)).all()
        last_write = s.scalar(select(func.max(CheckIn.updated_at)))
    stored = {f"{a.checkin_id}.{a.dialog_result['claim']}" for a in attempts}
    answered = {r.checkin for r in peer.invites if r.status == 200}
    print(f"\ndatabase outage: down {up_at - down_at:.1f}s; {len(peer.invites)} INVITEs, {len(attempts)} attempts, "
          f"{len(spooled)} calls kept in the spool while it was down; last write {last_write}")
    assert spooled, "no call ended while the database was down: the test did not test the spool"
    assert statuses == [CheckInStatus.DONE] * N
    assert answered <= stored, f"answered calls without a stored outcome: {answered - stored}"
    assert len(attempts) == len(peer.invites)  # each call stored once
    assert list(spool_dir.glob("*.call")) == []
    planner_lease = current_planner(sessions)
    assert planner_lease is not None and planner_lease.last_tick_at is not None
    assert planner_lease.last_tick_at.timestamp() > up_at, "the planner did not resume after the restart"
    engine.dispose()
