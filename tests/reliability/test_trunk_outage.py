"""Trunk outage: the trunk answers 503 (or nothing) for a simulated 30 minutes while two dialer
workers run → each breaker opens, staff get ONE alert, no escalation and no retry rung is used for
the outage, and dialling resumes by itself (half-open probe) when the trunk is back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dialogs.engine import DialogEngine
from dialogs.script import load_scripts
from ivr.dialer import Dialer, DialerConfig
from ivr.dialplan import DialPlan
from ivr.sip import SipConfig, UserAgent
from ivr.testing.fastpeer import Answer, Behaviour, FastPeer
from ivr.testing.fastrunner import FastRunner
from scheduler.config import load_policy
from scheduler.queue import Queue, RequestKind
from storage.crypto import Vault
from storage.enums import CheckInStatus
from storage.models import CheckIn
from storage.models.checkin import CallAttempt
from storage.models.escalation import Alert, Escalation
from tests.reliability.world import Clock, make_elders

pytestmark = pytest.mark.sip
T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Harbin, inside the default call window
N = 24


@pytest.fixture
async def ua() -> AsyncIterator[UserAgent]:
    agent = UserAgent(SipConfig(invite_timeout_s=0.4, t1_s=0.1))
    await agent.start()
    yield agent
    await agent.stop()


@pytest.mark.parametrize("outage", ["503", "silent"])
async def test_trunk_outage_opens_breaker_alerts_once_and_recovers(
        sessions: sessionmaker[Session], vault: Vault, ua: UserAgent, outage: str) -> None:
    clock = Clock(T0)
    policy = load_policy()
    elders = make_elders(sessions, vault, N, T0)
    queue = Queue(sessions, policy)
    for e in elders:
        queue.request_call(e, RequestKind.MANUAL, T0, reason="例行探访", source="test")
    peer = await FastPeer.open(rule=lambda _number: Behaviour(Answer.ANSWER, 20))  # every elder answers
    peer.outage = outage
    engine = DialogEngine(load_scripts())
    dialers = [Dialer(sessions=sessions, runner=FastRunner(ua, now=clock), engine=engine,
                      dial_plan=DialPlan(peer.template), vault=vault, policy=policy, now=clock,
                      monotonic=clock.seconds,
                      config=DialerConfig(worker=f"dialer-{k}", line_capacity=3, poll_s=0.05, breaker_threshold=3,
                                          breaker_cooldown_s=300))
               for k in range(2)]
    tasks = [asyncio.create_task(d.run()) for d in dialers]
    try:
        # 30 simulated minutes of outage, 15 s of clock per 50 ms of real time
        while clock() < T0 + timedelta(minutes=30):
            await asyncio.sleep(0.05)
            clock.advance(seconds=15)
        outage_invites = len(peer.invites)
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(Escalation)) == 0
            assert s.scalar(select(func.count()).select_from(CheckIn).where(CheckIn.attempts > 0)) == 0
            assert s.scalar(select(func.count()).select_from(CheckIn).where(
                CheckIn.status == CheckInStatus.DONE)) == 0
        for d in dialers:
            assert d.breaker.opened_count == 1 and "half_open" in d.breaker.history  # probes failed, reopened
        # the trunk is back: the next half-open probe succeeds and each worker dials on by itself
        peer.outage = None
        for _ in range(600):
            with sessions() as s:
                done = s.scalar(select(func.count()).select_from(CheckIn).where(CheckIn.status == CheckInStatus.DONE))
            if done == N:
                break
            await asyncio.sleep(0.05)
            clock.advance(seconds=15)
    finally:
        for d in dialers:
            await d.stop()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(t, 30)
        peer.close()
    with sessions() as s:
        statuses = [r.status for r in s.scalars(select(CheckIn))]
        alerts = s.scalars(select(Alert).where(Alert.kind == "trunk_down")).all()
        failed = s.scalar(select(func.count()).select_from(CallAttempt).where(CallAttempt.trunk_failure))
        escalations = s.scalar(select(func.count()).select_from(Escalation))
        rungs = s.scalar(select(func.max(CheckIn.attempts)))
    assert statuses == [CheckInStatus.DONE] * N
    assert len(alerts) == 1 and "线路" in alerts[0].title  # two workers' breakers opened: one alert
    assert escalations == 0 and rungs == 0
    for d in dialers:
        assert d.breaker.state.value == "closed" and d.breaker.history[-1] == "closed"
    # while open the breaker let only probes through: threshold + in-flight + one probe per cool-down
    bound = 2 * (3 + 3 + 30 * 60 // 300 + 1)
    assert failed == outage_invites <= bound
    print(f"\ntrunk outage ({outage}): {outage_invites} INVITEs during 30 simulated minutes (bound {bound}), "
          f"{failed} trunk-failure attempts, 1 alert, 0 escalations; then {N} check-ins done; breaker histories "
          f"{[d.breaker.history for d in dialers]}")
