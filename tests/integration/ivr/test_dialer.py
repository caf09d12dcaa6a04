"""The dialer against real peers: queue → call → CallAttempt → queue acknowledged → escalation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dialogs.engine import DialogEngine
from ivr.breaker import MediaGuard
from ivr.call import CallRunner, RunnerConfig
from ivr.dialer import Dialer, DialerConfig
from ivr.dialplan import DialPlan
from ivr.media.clock import MediaClock
from ivr.media.rtp import RtpSession
from ivr.sip import UserAgent
from scheduler.config import load_policy
from scheduler.queue import Queue, RequestKind
from storage.crypto import Vault
from storage.db import make_engine, make_session_factory
from storage.enums import CheckInStatus, Outcome, Severity
from storage.migrate import upgrade
from storage.models import CheckIn
from storage.models.checkin import CallAttempt
from storage.models.escalation import Alert, Escalation
from tests.integration.ivr.world import make_world
from tests.integration.sip.peers import KamailioProxy

pytestmark = pytest.mark.sip
NUMBER = "13800000001"


@pytest.fixture
def db(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'dialer.db'}")
    upgrade(engine)
    return make_session_factory(engine)


class DtmfElder:
    """Presses a key 1 s into each prompt that asks a question (while it still plays)."""

    def __init__(self, phone, keys: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
        self.phone = phone
        self.keys = dict(keys)
        self.pressed: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def prompt_started(self, prompt_id: str, at: float) -> None:
        key = self.keys.pop(prompt_id, None)
        if key is not None:
            t = asyncio.ensure_future(self._press(key))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _press(self, key: str) -> None:
        await asyncio.sleep(1.0)
        self.pressed.append(key)
        await asyncio.to_thread(self.phone.send_dtmf, key)


def make_dialer(db, ua: UserAgent, prompt_cache, dialog_engine: DialogEngine, vault: Vault, template: str,  # type: ignore[no-untyped-def]
                tmp_path: Path, *, ring_timeout_s: float = 10, observer=None, **cfg) -> Dialer:  # type: ignore[no-untyped-def]
    runner = CallRunner(ua, prompt_cache, asr=None, parser=None,
                        config=RunnerConfig(ring_timeout_s=ring_timeout_s, recordings_dir=tmp_path / "rec"))
    cfg.setdefault("poll_s", 0.2)
    return Dialer(sessions=db, runner=runner, engine=dialog_engine, dial_plan=DialPlan(template), vault=vault,
                  config=DialerConfig(worker="test-dialer", **cfg), policy=load_policy(), observer=observer)


def request(db, elder_ids: list[int]) -> list[int]:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    queue = Queue(db, load_policy())
    return [queue.request_call(e, RequestKind.MANUAL, datetime.now(UTC), reason="测试", source="test",
                               ignore_call_window=True).id for e in elder_ids]


async def run_until(dialer: Dialer, done, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    task = asyncio.create_task(dialer.run())
    try:
        for _ in range(int(timeout_s * 10)):
            if done():
                break
            await asyncio.sleep(0.1)
    finally:
        await dialer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 60)


def checkin(db, cid: int) -> CheckIn:  # type: ignore[no-untyped-def]
    with db() as s:
        row = s.get(CheckIn, cid)
        assert row is not None
        s.expunge(row)
        return row


@pytest.mark.slow
async def test_mandarin_elder_presses_2_and_an_escalation_exists(db, baresip, sip_ua, prompt_cache, dialog_engine,
                                                                 vault: Vault, tmp_path: Path) -> None:
    phone = baresip(answer="auto", user=NUMBER)
    [elder] = make_world(db, vault, [NUMBER])
    [cid] = request(db, [elder])
    # identity: 1 (本人) · how are you: 2 (需要帮助) · help menu: 1 (身体不舒服) · how bad: 2 · family: 2 · else: 1
    presses = DtmfElder(phone, {"q.identity": "1", "q.how_are_you": "2", "q.help_menu": "1",
                                "q.unwell_how_bad": "2", "q.unwell_family": "2", "q.anything_else": "1"})
    dialer = make_dialer(db, sip_ua, prompt_cache, dialog_engine, vault, f"sip:{{number}}@127.0.0.1:{phone.sip_port}",
                         tmp_path, observer=presses)
    await run_until(dialer, lambda: dialer.stats.settled, 120)
    row = checkin(db, cid)
    assert row.status is CheckInStatus.DONE and row.outcome is Outcome.NEEDS_FOLLOWUP
    with db() as s:
        attempt = s.scalars(select(CallAttempt).where(CallAttempt.checkin_id == cid)).one()
        assert attempt.sip_status == 200 and attempt.result == "answered"
        assert attempt.digits == "121221"
        assert attempt.recording_path and recorded(attempt.recording_path)
        assert attempt.ring_seconds is not None and attempt.talk_seconds and attempt.talk_seconds > 3
        assert attempt.outcome is Outcome.NEEDS_FOLLOWUP
        assert attempt.dialog_result["flags"]["unwell"] is True
        assert NUMBER not in (attempt.target_masked or "")
        esc = s.scalars(select(Escalation).where(Escalation.source_checkin_id == cid)).one()
        assert esc.severity is Severity.P2 and "身体不适" in esc.reason
    # each key stopped its prompt: the prompt that was answered by a key lasted ~1 s, not its full length
    assert presses.pressed == list("121221")


async def test_busy_and_no_answer_go_to_the_retry_ladder(db, baresip, sip_ua, prompt_cache, dialog_engine,
                                                        vault: Vault, tmp_path: Path) -> None:
    busy = baresip(reject_incoming=True, user=NUMBER)
    [e1] = make_world(db, vault, [NUMBER])
    [cid] = request(db, [e1])
    dialer = make_dialer(db, sip_ua, prompt_cache, dialog_engine, vault, f"sip:{{number}}@127.0.0.1:{busy.sip_port}",
                         tmp_path)
    await run_until(dialer, lambda: dialer.stats.settled, 30)
    row = checkin(db, cid)
    assert row.status is CheckInStatus.RETRY_WAIT and row.attempts == 1
    with db() as s:
        attempt = s.scalars(select(CallAttempt).where(CallAttempt.checkin_id == cid)).one()
        assert attempt.sip_status == 486 and attempt.result == "busy" and not attempt.trunk_failure

    ringing = baresip(answer="manual", user=NUMBER)
    with db() as s, s.begin():
        s.get(CheckIn, cid).next_attempt_at = row.due_at  # type: ignore[union-attr]
    dialer = make_dialer(db, sip_ua, prompt_cache, dialog_engine, vault,
                         f"sip:{{number}}@127.0.0.1:{ringing.sip_port}", tmp_path, ring_timeout_s=3)
    await run_until(dialer, lambda: dialer.stats.settled, 30)
    row = checkin(db, cid)
    assert row.status is CheckInStatus.RETRY_WAIT and row.attempts == 2
    with db() as s:
        last = s.scalars(select(CallAttempt).where(CallAttempt.checkin_id == cid).order_by(CallAttempt.id)).all()[-1]
        assert last.sip_status == 487 and last.result == "no_answer"


class Trunk503(KamailioProxy):
    """kamailio as a broken trunk: every INVITE gets 503 Service Unavailable."""

    def _config(self) -> str:
        cfg = super()._config()
        return cfg.replace("request_route {\n", 'request_route {\n    if (is_method("INVITE")) '
                           '{ sl_send_reply("503", "Service Unavailable"); exit; }\n', 1)


async def test_trunk_503_opens_the_breaker_and_alerts_once(db, sip_ua, prompt_cache, dialog_engine, vault: Vault,
                                                          tmp_path: Path) -> None:
    trunk = Trunk503(tmp_path / "trunk").start()
    try:
        elders = make_world(db, vault, ["13800000001", "13800000002", "13800000003", "13800000004"])
        cids = request(db, elders)
        dialer = make_dialer(db, sip_ua, prompt_cache, dialog_engine, vault, f"sip:{{number}}@{trunk.domain}", tmp_path,
                             line_capacity=1, breaker_threshold=2, breaker_cooldown_s=1.0)
        await run_until(dialer, lambda: len(dialer.stats.settled) >= 3, 30)
    finally:
        trunk.stop()
    assert dialer.breaker.opened_count == 1
    assert dialer.breaker.history[:3] == ["open", "half_open", "open"]  # the probe after cool-down failed too
    with db() as s:
        attempts = s.scalars(select(CallAttempt)).all()
        assert len(attempts) >= 3 and all(a.trunk_failure and a.sip_status == 503 for a in attempts)
        rows = [s.get(CheckIn, c) for c in cids]
        assert all(r is not None and r.attempts == 0 for r in rows)  # never counted against the elder
        assert all(r is not None and r.status in (CheckInStatus.DUE,) for r in rows)
        alerts = s.scalars(select(Alert).where(Alert.kind == "trunk_down")).all()
        assert len(alerts) == 1 and "线路" in alerts[0].title


def recorded(path: str) -> bool:
    return os.path.exists(path)


class _Sink(asyncio.DatagramProtocol):
    """Where the other calls' RTP goes (a UDP socket on 127.0.0.1 that reads and forgets)."""


async def test_dialer_holds_new_calls_while_the_media_loop_falls_behind(db, baresip, sip_ua, prompt_cache,
                                                                       dialog_engine, vault: Vault,
                                                                       tmp_path: Path) -> None:
    """Five prompts play on this loop while it stalls 60 ms every 100 ms (a host that cannot keep up): the
    dialer claims nothing, says so in its status and metric; once the loop keeps time it dials again."""
    busy = baresip(reject_incoming=True, user=NUMBER)
    [elder] = make_world(db, vault, [NUMBER])
    [cid] = request(db, [elder])
    loop = asyncio.get_running_loop()
    sink, _ = await loop.create_datagram_endpoint(_Sink, local_addr=("127.0.0.1", 0), family=socket.AF_INET)
    sessions = [await RtpSession.open("127.0.0.1") for _ in range(5)]
    for rtp in sessions:
        rtp.set_remote(sink.get_extra_info("sockname"), 0, 101)
    tone = (np.sin(2 * np.pi * 440 * np.arange(8000 * 30) / 8000) * 8000).astype("<i2").tobytes()
    plays = [asyncio.create_task(rtp.play(tone)) for rtp in sessions]
    stalling = True

    async def stall() -> None:
        while stalling:
            await asyncio.sleep(0.04)
            time.sleep(0.06)  # noqa: ASYNC251 - the point: the whole loop stops, as on an overloaded host

    staller = asyncio.create_task(stall())
    clock = MediaClock.for_loop()
    dialer = make_dialer(db, sip_ua, prompt_cache, dialog_engine, vault,
                         f"sip:{{number}}@127.0.0.1:{busy.sip_port}", tmp_path)
    dialer.media_guard = MediaGuard(min_frames=100)  # five prompts send 250 frames a second
    try:
        for _ in range(50):  # the clock has judged-worthy figures before the dialer's first look
            if clock.frames_later_than(40) >= 10 and clock.frames >= 200:
                break
            await asyncio.sleep(0.1)
        task = asyncio.create_task(dialer.run())
        await asyncio.sleep(2.0)  # ten polls
        assert dialer.status()["media_overloaded"] is True
        assert dialer.metrics.media_overloaded._value.get() == 1
        row = checkin(db, cid)
        assert row.status is CheckInStatus.DUE and row.attempts == 0 and row.lease_owner is None
        assert dialer.stats.calls == 0 and dialer.media_guard.episodes == 1
    finally:
        stalling = False
        await staller
        for rtp in sessions:
            await rtp.close()
        await asyncio.gather(*plays, return_exceptions=True)
        sink.close()
    # the loop keeps time and no other prompt plays: the held check-in is dialled (and meets the busy phone)
    try:
        for _ in range(300):
            if dialer.stats.settled:
                break
            await asyncio.sleep(0.1)
        assert dialer.status()["media_overloaded"] is False
        assert dialer.metrics.media_overloaded._value.get() == 0
    finally:
        await dialer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 60)
    row = checkin(db, cid)
    assert row.status is CheckInStatus.RETRY_WAIT and row.attempts == 1
