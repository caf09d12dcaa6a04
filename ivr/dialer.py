"""The dialer worker: claims due check-ins up to its line capacity and calls them.

Any number of workers (processes, machines) share one queue: claims are leases (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL), so two workers never call the same elder; call windows are the
queue's business. Per trunk a :class:`~ivr.breaker.CircuitBreaker` stops dialling after N
consecutive trunk failures (5xx/408/timeouts), alerts staff once through the outbox, sends those
items back as ``Failure.TRUNK`` (never "the elder did not answer") and probes again after the
cool-down. Leases are extended while a call lasts. ``stop()``: no new claims, calls in progress
finish (or end politely after ``grace_s``), claimed-but-unstarted items go back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.orm import Session, sessionmaker

from dialogs.engine import DialogEngine
from ivr.breaker import CircuitBreaker
from ivr.call import CallReport, CallRunner, Observer
from ivr.conversation import CheckInConversation, ContactConversation, Conversation, context_for
from ivr.dialplan import DialPlan
from ivr.persist import Settled, settle, store_attempt
from ivr.sip import CallResult
from scheduler import queue as q
from scheduler.config import PolicySet
from scheduler.escalations import DEFAULT_CONFIG, EscalationConfig
from scheduler.notify import AlertKind, RecipientKind
from scheduler.outbox import enqueue_alert
from storage.crypto import Vault
from storage.models.elder import Contact, Elder

log = logging.getLogger(__name__)


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

    def __init__(self, *, sessions: sessionmaker[Session], runner: CallRunner, engine: DialogEngine,
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
        self.stats = DialerStats()
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._end_calls = asyncio.Event()
        self._wake = asyncio.Event()
        self._queue = q.Queue(sessions, policy)

    @property
    def active(self) -> int:
        return len(self._tasks)

    # ---- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        log.info("dialer started", extra={"action": "dialer_start", "worker": self.config.worker})
        while not self._stopping.is_set():
            free = self.config.line_capacity - self.active
            allowed = self.breaker.allowed(self.monotonic())
            self.metrics.breaker_open.set(0 if allowed else 1)
            want = free if allowed < 0 else min(free, allowed)
            if want > 0:
                try:
                    claimed = await asyncio.to_thread(self._queue.claim, self.config.worker, want,
                                                      self.config.lease, self.now())
                except Exception:
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
            await self._release(lease)
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
        report: CallReport | None = None
        for target in targets:  # the elder's phones in order, until one is answered
            report = await self.runner.run(target.uri, conv, stop=self._end_calls, masked=target.masked,
                                          observer=self.observer)
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
        if report.trunk_failure:
            self.stats.trunk_failures += 1
            self.metrics.trunk_failures.inc()
            opened = self.breaker.failure(self.monotonic())
            if opened:
                await asyncio.to_thread(self._alert_trunk_down, report)
        elif report.result != CallResult.TRUNK_ERROR.value:
            self.breaker.success()
        for conf in report.confidences:
            self.metrics.asr_confidence.observe(conf)
        call_id = await asyncio.to_thread(store_attempt, self.sessions, report, checkin_id=c.id,
                                          elder_id=c.elder_id, worker=self.config.worker,
                                          target_masked=report.target)
        try:
            settled = await asyncio.to_thread(settle, self.sessions, c, lease.version, report, call_id=call_id,
                                              worker=self.config.worker, now=self.now(), policy=self.policy,
                                              escalations=self.escalations,
                                              cold_wave=bool((c.dialog_flags or {}).get("cold_wave")))
        except q.LeaseLost:
            log.warning("lease lost before the call was settled", extra={"action": "lease_lost", "checkin": c.id})
            return
        self.stats.settled.append(settled)
        self.metrics.checkins.labels(outcome=(report.outcome.value if report.outcome and settled.status == "done"
                                              else settled.status)).inc()

    def _alert_trunk_down(self, report: CallReport) -> None:
        with q.write_session(self.sessions) as s:
            enqueue_alert(s, kind=AlertKind.TRUNK_DOWN, recipient_kind=RecipientKind.DUTY, recipient_id=None,
                          title="电话线路故障：已暂停自动拨号",
                          body=(f"线路连续 {self.breaker.threshold} 次失败（最近：{report.result}"
                                f"{'，SIP ' + str(report.sip_status) if report.sip_status else ''}），"
                                f"{int(self.breaker.cooldown_s)} 秒后自动试拨恢复。受影响的探访已重新排队，不计为老人未接。"),
                          now=self.now(), channels=self.config.alert_channels)
        log.error("trunk circuit breaker opened", extra={"action": "trunk_breaker_open",
                                                         "worker": self.config.worker})

    def status(self) -> dict[str, Any]:
        return {"worker": self.config.worker, "active": self.active, "breaker": self.breaker.state.value,
                "calls": self.stats.calls, "trunk_failures": self.stats.trunk_failures}
