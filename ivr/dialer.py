"""The dialer worker: claims due check-ins up to its line capacity and calls them.

Any number of workers (processes, machines) share one queue: claims are leases (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL), so two workers never call the same elder; call windows are the
queue's business. Per trunk a :class:`~ivr.breaker.CircuitBreaker` stops dialling after N
consecutive trunk failures (5xx/408/timeouts), alerts staff once through the outbox, sends those
items back as ``Failure.TRUNK`` (never "the elder did not answer") and probes again after the
cool-down. A :class:`~ivr.breaker.MediaGuard` starts no new call while this process's media loop
falls behind its 20 ms grid (more calls than the host can carry). Leases are extended while a call
lasts. ``stop()``: no new claims, calls in progress finish (or end politely after ``grace_s``),
claimed-but-unstarted items go back to the queue.

A finished call is written to the local spool (``ivr.spool``, fsynced) before the database, then
stored and settled in one transaction (``ivr.persist.record_call``), retrying transient database
errors with a bounded backoff; if the database stays away the call waits in the spool and is
replayed when it returns (or by the next worker of the same slot after a crash). Every INVITE
carries ``X-Tanfang-Checkin: <check-in id>.<claim version>`` so a trunk log can be matched to the
attempts (no personal data).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from dialogs.engine import DialogEngine
from ivr.breaker import CircuitBreaker, MediaGuard
from ivr.call import CallReport, Observer
from ivr.conversation import CheckInConversation, ContactConversation, Conversation, context_for
from ivr.dialplan import DialPlan
from ivr.media.clock import MediaClock
from ivr.persist import Settled, record_call
from ivr.sip import CallResult
from ivr.spool import OutcomeSpool, SpooledCall
from scheduler import queue as q
from scheduler.config import PolicySet
from scheduler.escalations import DEFAULT_CONFIG, EscalationConfig
from scheduler.notify import AlertKind, RecipientKind
from scheduler.outbox import enqueue_alert
from storage.crypto import Vault
from storage.db import is_transient, retry_transient
from storage.models.elder import Contact, Elder
from storage.models.escalation import Alert

log = logging.getLogger(__name__)
TRUNK_ALERT_LOCK = 0x74616E67  # advisory lock key: one trunk-down alert at a time


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DialerConfig:
    worker: str
    line_capacity: int = 30
    lease: timedelta = timedelta(minutes=5)
    heartbeat_s: float = 60.0
    poll_s: float = 2.0
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 300.0
    grace_s: float = 20.0  # on stop: let calls finish this long, then end them politely
    hotline: str = "12349"
    service_name: str = "探访关爱服务"
    alert_channels: tuple[str, ...] = ("console",)
    db_retry_attempts: int = 6  # transient database errors when storing a call: 0.2 s doubling, ≤ 5 s
    db_retry_cap_s: float = 5.0
    spool_dir: Path | None = None  # None: no local spool (a call is lost if the database is away)
    lease_margin: timedelta = timedelta(seconds=30)  # do not start a call whose lease is about to end
    # No new call while more than this share of the prompt frames sent since the last look left 40 ms or
    # more behind their slot (the host cannot carry more calls; see ivr.breaker.MediaGuard). 0: off.
    media_max_late_share: float = 0.01


class CallPlacer(Protocol):
    """What the dialer needs of a runner (``ivr.call.CallRunner``, or a fast runner in benches)."""

    async def run(self, target: str, conversation: Conversation, *, stop: asyncio.Event | None = None,
                  observer: Observer | None = None, headers: dict[str, str] | None = None,
                  masked: str | None = None) -> CallReport: ...


class DialerMetrics:
    """Prometheus metrics of the dialer, registered in the app's registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry or CollectorRegistry()
        self.in_progress = Gauge("tanfang_calls_in_progress", "Calls being dialled or talked", registry=reg)
        self.checkins = Counter("tanfang_checkins_total", "Finished call attempts by outcome", ["outcome"],
                                registry=reg)
        self.asr_confidence = Histogram("tanfang_asr_confidence", "Vosk confidence of recognised answers",
                                        buckets=(0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0), registry=reg)
        self.trunk_failures = Counter("tanfang_trunk_failures_total", "Calls failed by our trunk", registry=reg)
        self.breaker_open = Gauge("tanfang_trunk_breaker_open", "1 while the trunk circuit breaker is open",
                                  registry=reg)
        self.media_overloaded = Gauge("tanfang_dialer_media_overloaded",
                                      "1 while new calls are held because the media loop falls behind",
                                      registry=reg)


@dataclass
class _Lease:
    claimed: q.Claimed
    version: int


@dataclass
class DialerStats:
    calls: int = 0
    trunk_failures: int = 0
    released: int = 0
    settled: list[Settled] = field(default_factory=list)


@dataclass(frozen=True)
class _Target:
    uri: str
    masked: str


class Dialer:
    """One worker. ``await run()`` until ``stop()``; safe to run many against one database."""

    def __init__(self, *, sessions: sessionmaker[Session], runner: CallPlacer, engine: DialogEngine,
                 dial_plan: DialPlan, vault: Vault, config: DialerConfig, policy: PolicySet,
                 escalations: EscalationConfig = DEFAULT_CONFIG, metrics: DialerMetrics | None = None,
                 now: Callable[[], datetime] = _utcnow, monotonic: Callable[[], float] = time.monotonic,
                 observer: Observer | None = None) -> None:
        self.observer = observer
        self.sessions = sessions
        self.runner = runner
        self.engine = engine
        self.dial_plan = dial_plan
        self.vault = vault
        self.config = config
        self.policy = policy
        self.escalations = escalations
        self.metrics = metrics or DialerMetrics()
        self.now = now
        self.monotonic = monotonic
        self.breaker = CircuitBreaker(config.breaker_threshold, config.breaker_cooldown_s)
        share = config.media_max_late_share
        self.media_guard = MediaGuard(max_late_share=share) if share > 0 else None
        self.stats = DialerStats()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._end_calls = asyncio.Event()
        self._wake = asyncio.Event()
        self._queue = q.Queue(sessions, policy)
        self.spool = OutcomeSpool(config.spool_dir) if config.spool_dir is not None else None
        self._replaying = False

    @property
    def active(self) -> int:
        return len(self._tasks)

    # ---- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        log.info("dialer started", extra={"action": "dialer_start", "worker": self.config.worker})
        while not self._stopping.is_set():
            if self.spool is not None and not self._replaying and len(self.spool):
                await self.replay_spool()
            free = self.config.line_capacity - self.active
            allowed = self.breaker.allowed(self.monotonic())
            self.metrics.breaker_open.set(0 if allowed else 1)
            want = free if allowed < 0 else min(free, allowed)
            if self._media_overloaded():
                want = 0
            if want > 0:
                try:
                    claimed = await asyncio.to_thread(self._queue.claim, self.config.worker, want,
                                                      self.config.lease, self.now())
                except Exception as exc:
                    if is_transient(exc):  # the database is away: try again next poll
                        log.warning("claim failed: database unavailable", extra={"action": "dialer_claim_retry"})
                    else:
                        log.exception("claim failed", extra={"action": "dialer_claim_error"})
                    claimed = []
                for c in claimed:
                    if self._stopping.is_set():
                        await self._release(_Lease(c, c.version))
                        continue
                    self.breaker.started()
                    task = asyncio.create_task(self._handle(_Lease(c, c.version)))
                    self._tasks[c.id] = task
                    task.add_done_callback(self._on_done)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_s)
        await self._drain()

    def _media_overloaded(self) -> bool:
        """Whether this loop's media clock falls behind (then no new call starts; see MediaGuard)."""
        guard = self.media_guard
        if guard is None:
            return False
        clock = MediaClock.for_loop()
        was = guard.overloaded
        held = guard.observe(clock.frames, clock.frames_later_than(guard.late_ms), clock.active)
        if held and not was:
            log.warning("media loop falling behind (%d calls): no new calls until it keeps time", self.active,
                        extra={"action": "dialer_media_overloaded", "worker": self.config.worker})
        elif was and not held:
            log.info("media loop keeps time again (%d calls): dialling resumes", self.active,
                     extra={"action": "dialer_media_recovered", "worker": self.config.worker})
        self.metrics.media_overloaded.set(1 if held else 0)
        return held

    def _on_done(self, task: asyncio.Task[None]) -> None:
        for cid, t in list(self._tasks.items()):
            if t is task:
                del self._tasks[cid]
        self._wake.set()

    async def stop(self) -> None:
        """Graceful: claim nothing more; calls in progress finish or end politely."""
        self._stopping.set()
        self._wake.set()

    async def _drain(self) -> None:
        if self._tasks:
            _done, pending = await asyncio.wait(list(self._tasks.values()), timeout=self.config.grace_s)
            if pending:
                self._end_calls.set()  # the runner says goodbye and the items are released
                await asyncio.wait(pending, timeout=30)
        log.info("dialer stopped", extra={"action": "dialer_stop", "worker": self.config.worker})

    # ---- one check-in ------------------------------------------------------------------------
    async def _handle(self, lease: _Lease) -> None:
        self.metrics.in_progress.inc()
        beat = asyncio.create_task(self._heartbeat(lease))
        try:
            await self._call(lease)
        except Exception:
            log.exception("check-in call failed", extra={"action": "dialer_call_error", "checkin": lease.claimed.id})
            try:  # the database may be away: keep trying for a while, else the lease expiry returns it
                await asyncio.to_thread(retry_transient, partial(self._release_sync, lease), attempts=12,
                                        cap_s=self.config.db_retry_cap_s * 2, what="release")
            except Exception:
                log.warning("could not release check-in", extra={"action": "dialer_release_error",
                                                                 "checkin": lease.claimed.id})
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            self.metrics.in_progress.dec()

    async def _heartbeat(self, lease: _Lease) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            try:
                lease.version = await asyncio.to_thread(
                    self._queue.heartbeat, lease.claimed.id, worker=self.config.worker, version=lease.version,
                    lease=self.config.lease, now=self.now())
            except q.LeaseLost:
                log.warning("lease lost during call", extra={"action": "lease_lost", "checkin": lease.claimed.id})
                return
            except Exception:
                log.exception("heartbeat failed", extra={"action": "heartbeat_error"})

    def _release_sync(self, lease: _Lease) -> None:
        with contextlib.suppress(q.LeaseLost):
            self._queue.release(lease.claimed.id, worker=self.config.worker, version=lease.version, now=self.now())
            self.stats.released += 1

    async def _release(self, lease: _Lease) -> None:
        with contextlib.suppress(q.LeaseLost):
            await asyncio.to_thread(self._queue.release, lease.claimed.id, worker=self.config.worker,
                                    version=lease.version, now=self.now())
            self.stats.released += 1

    def _prepare(self, c: q.Claimed) -> tuple[list[_Target], Conversation]:
        """Who to dial (decrypted only here, never logged) and what to say."""
        with self.sessions() as s:
            elder = s.get(Elder, c.elder_id)
            if elder is None:
                raise LookupError(f"老人 {c.elder_id} 不存在")
            flags = dict(c.dialog_flags or {})
            if c.kind == "emergency_contact" or flags.get("dialog") == "emergency_contact":
                contact = s.get(Contact, flags.get("contact_id"))
                if contact is None or contact.phone_enc is None:
                    return [], ContactConversation(str(flags.get("prompt") or ""))
                targets = [_Target(self.dial_plan.uri(self.vault.decrypt(contact.phone_enc)),
                                   contact.phone_masked or "")]
                conv: Conversation = ContactConversation(
                    str(flags.get("prompt") or "您好，这里是探访关爱服务，您的家人可能遇到紧急情况。按1表示您马上去处理，按2表示您无法前往。"),
                    accept_digit=str(flags.get("accept_digit", "1")),
                    decline_digit=str(flags.get("decline_digit", "2")))
                return targets, conv
            targets = [_Target(self.dial_plan.uri(self.vault.decrypt(p.number_enc)), p.number_masked)
                       for p in elder.phones]
            ctx = context_for(elder.locale, elder.name, elder.sex, flags, hotline=self.config.hotline,
                              service_name=self.config.service_name)
            return targets, CheckInConversation(self.engine, ctx)

    async def _call(self, lease: _Lease) -> None:
        c = lease.claimed
        targets, conv = await asyncio.to_thread(self._prepare, c)
        if self.now() >= c.lease_expires_at - self.config.lease_margin:
            # Claimed too long ago (a stalled process): another worker may take it over; do not dial.
            log.warning("lease nearly over before dialling", extra={"action": "dialer_lease_stale", "checkin": c.id})
            await self._release(lease)
            return
        report: CallReport | None = None
        headers = {"X-Tanfang-Checkin": f"{c.id}.{c.version}"}
        for target in targets:  # the elder's phones in order, until one is answered
            report = await self.runner.run(target.uri, conv, stop=self._end_calls, masked=target.masked,
                                          observer=self.observer, headers=headers)
            self.stats.calls += 1
            if report.trunk_failure or report.answered:
                break
        if report is None:
            log.error("no phone number to call", extra={"action": "dialer_no_number", "checkin": c.id})
            await self._release(lease)
            return
        await self._finish(lease, report)

    async def _finish(self, lease: _Lease, report: CallReport) -> None:
        c = lease.claimed
        entry = SpooledCall(c, lease.version, report, self.config.worker, self.now(),
                            bool((c.dialog_flags or {}).get("cold_wave")))
        path = await asyncio.to_thread(self.spool.put, entry) if self.spool is not None else None  # durable first
        if report.trunk_failure:
            self.stats.trunk_failures += 1
            self.metrics.trunk_failures.inc()
            opened = self.breaker.failure(self.monotonic())
            if opened:
                try:
                    await asyncio.to_thread(retry_transient, partial(self._alert_trunk_down, report),
                                            attempts=self.config.db_retry_attempts, cap_s=self.config.db_retry_cap_s,
                                            what="trunk alert")
                except Exception:
                    log.exception("trunk-down alert not written", extra={"action": "trunk_alert_error"})
        elif report.result != CallResult.TRUNK_ERROR.value:
            self.breaker.success()
        for conf in report.confidences:
            self.metrics.asr_confidence.observe(conf)
        try:
            settled = await asyncio.to_thread(self._store, entry)
        except Exception as exc:
            if path is not None and is_transient(exc):
                log.warning("database unavailable: call kept in the spool", extra={"action": "call_spooled",
                                                                                    "checkin": c.id})
                return
            raise
        if path is not None and self.spool is not None:
            self.spool.done(path)
        self._settled(settled, report)

    def _store(self, entry: SpooledCall) -> Settled:
        _call_id, settled = retry_transient(
            partial(record_call, self.sessions, entry.claimed, entry.version, entry.report, worker=entry.worker,
                    now=entry.now, policy=self.policy, escalations=self.escalations, cold_wave=entry.cold_wave),
            attempts=self.config.db_retry_attempts, cap_s=self.config.db_retry_cap_s, what="store call")
        return settled

    def _settled(self, settled: Settled, report: CallReport) -> None:
        if settled.status == "lease_lost":
            return
        self.stats.settled.append(settled)
        self.metrics.checkins.labels(outcome=(report.outcome.value if report.outcome and settled.status == "done"
                                              else settled.status)).inc()

    async def replay_spool(self) -> int:
        """Store calls left in the spool (database outage, or a crashed predecessor); oldest first."""
        assert self.spool is not None
        self._replaying = True
        n = 0
        try:
            for path, entry in list(self.spool.pending()):
                try:
                    settled = await asyncio.to_thread(self._store, entry)
                except Exception as exc:
                    if is_transient(exc):
                        return n  # still away: next poll
                    log.exception("spooled call could not be stored", extra={"action": "spool_replay_error"})
                    path.rename(path.with_suffix(".failed"))
                    continue
                self.spool.done(path)
                self._settled(settled, entry.report)
                n += 1
            if n:
                log.info("replayed %d spooled calls", n, extra={"action": "spool_replayed"})
            return n
        finally:
            self._replaying = False

    def _alert_trunk_down(self, report: CallReport) -> None:
        """Alert the duty staff once per outage, however many workers see the trunk fail."""
        now = self.now()
        with q.write_session(self.sessions) as s:
            if s.get_bind().dialect.name == "postgresql":  # serialise the check among workers
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": TRUNK_ALERT_LOCK})
            recent = s.scalar(select(Alert.id).where(
                Alert.kind == str(AlertKind.TRUNK_DOWN),
                Alert.created_at > now - timedelta(seconds=max(self.breaker.cooldown_s, 60.0) * 2)).limit(1))
            if recent is not None:
                log.warning("trunk circuit breaker opened (staff already alerted)",
                            extra={"action": "trunk_breaker_open", "worker": self.config.worker})
                return
            enqueue_alert(s, kind=AlertKind.TRUNK_DOWN, recipient_kind=RecipientKind.DUTY, recipient_id=None,
                          title="电话线路故障：已暂停自动拨号",
                          body=(f"线路连续 {self.breaker.threshold} 次失败（最近：{report.result}"
                                f"{'，SIP ' + str(report.sip_status) if report.sip_status else ''}），"
                                f"{int(self.breaker.cooldown_s)} 秒后自动试拨恢复。受影响的探访已重新排队，不计为老人未接。"),
                          now=now, channels=self.config.alert_channels)
        log.error("trunk circuit breaker opened", extra={"action": "trunk_breaker_open",
                                                         "worker": self.config.worker})

    def status(self) -> dict[str, Any]:
        return {"worker": self.config.worker, "active": self.active, "breaker": self.breaker.state.value,
                "calls": self.stats.calls, "trunk_failures": self.stats.trunk_failures,
                "media_overloaded": self.media_guard is not None and self.media_guard.overloaded}
