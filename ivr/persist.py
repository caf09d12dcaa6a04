"""Storing a call and acknowledging its queue item.

``record_call`` writes the ``CallAttempt`` row, the queue transition and the escalation triage asks
for in ONE transaction, so a worker killed at any point leaves either nothing (the lease expires
and the item is dialled again) or everything (never an answered call whose check-in is dialled
again, never an escalation without its check-in done). When the item is no longer ours
(``LeaseLost``) the attempt is still stored on its own — the call happened. Replaying the same call
(from the spool, ``ivr.spool``) never stores it twice. Trunk failures go back to the queue as
``Failure.TRUNK`` and never count against the elder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dialogs.result import DialogResult
from dialogs.triage import ElderProfile, triage, triage_unreached
from ivr.amd import Answerer
from ivr.call import CallReport
from ivr.sip import CallResult
from scheduler import queue as q
from scheduler.config import PolicySet
from scheduler.escalations import DEFAULT_CONFIG, EscalationConfig, EscalationSpec, Source, create_from_triage
from scheduler.escalations import record_contact_response as contact_response
from scheduler.retry import Failure
from storage.enums import Outcome, Severity
from storage.models.checkin import CallAttempt, CheckIn
from storage.models.elder import Elder

log = logging.getLogger(__name__)

TRANSFER_FAILED_REASON = "老人要求转人工但转接失败，需立即回电"


@dataclass(frozen=True)
class Settled:
    status: str  # done | retry_wait | due | unreached | released | lease_lost
    escalation_id: int | None = None
    attempts: int = 0


def store_attempt(sessions: sessionmaker[Session], report: CallReport, *, checkin_id: int | None,
                  elder_id: int | None, worker: str, target_masked: str | None = None) -> int:
    """Write the ``CallAttempt`` row and commit; returns its id."""
    with q.write_session(sessions) as s:
        return add_attempt(s, report, checkin_id=checkin_id, elder_id=elder_id, worker=worker,
                           target_masked=target_masked)


def add_attempt(s: Session, report: CallReport, *, checkin_id: int | None, elder_id: int | None, worker: str,
                target_masked: str | None = None, claim: int | None = None) -> int:
    """Add the ``CallAttempt`` row to ``s`` (no commit); ``claim`` is the lease version it was made under."""
    row = CallAttempt(
        checkin_id=checkin_id, elder_id=elder_id, channel="phone", target_masked=target_masked,
        worker=worker[:64], started_at=report.started_at, answered_at=report.answered_at,
        ended_at=report.ended_at, sip_status=report.sip_status, result=report.result[:24],
        ring_seconds=report.ring_seconds, talk_seconds=report.talk_seconds, transcript=report.transcript,
        intents=report.intents, digits=report.digits[:64] or None,
        recording_path=str(report.recording) if report.recording else None,
        outcome=report.outcome, trunk_failure=report.trunk_failure,
        dialog_result={**report.dialog_result, "answerer": report.answerer.value,
                       **({"transfer": report.transfer} if report.transfer else {}),
                       **({"claim": claim} if claim is not None else {})},
    )
    s.add(row)
    s.flush()
    return int(row.id)


def find_attempt(s: Session, checkin_id: int, worker: str, started_at: object) -> int | None:
    """The attempt already stored for this call (same check-in, worker and start), if any."""
    return s.scalar(select(CallAttempt.id).where(CallAttempt.checkin_id == checkin_id,
                                                 CallAttempt.worker == worker[:64],
                                                 CallAttempt.started_at == started_at).limit(1))


def record_call(sessions: sessionmaker[Session], claimed: q.Claimed, version: int, report: CallReport, *,
                worker: str, now: datetime, policy: PolicySet, escalations: EscalationConfig = DEFAULT_CONFIG,
                cold_wave: bool = False) -> tuple[int, Settled]:
    """Store the attempt and settle the queue item in one transaction (see the module docstring).

    Returns ``(call_attempt_id, settled)``; ``settled.status == "lease_lost"`` when the item had been
    taken over (only the attempt was stored, once). Transient database errors propagate: the
    caller retries (``storage.db.retry_transient``) and keeps the call in its spool meanwhile.
    """
    try:
        with q.write_session(sessions) as s:
            if find_attempt(s, claimed.id, worker, report.started_at) is not None:
                raise q.LeaseLost("already stored")  # a replay of a call that was committed
            call_id = add_attempt(s, report, checkin_id=claimed.id, elder_id=claimed.elder_id, worker=worker,
                                  target_masked=report.target, claim=claimed.version)
            settled = _settle(s, claimed, version, report, call_id=call_id, worker=worker, now=now,
                              policy=policy, escalations=escalations, cold_wave=cold_wave)
            return call_id, settled
    except q.LeaseLost:
        with q.write_session(sessions) as s:
            existing = find_attempt(s, claimed.id, worker, report.started_at)
            if existing is not None:
                return existing, Settled("lease_lost")
            call_id = add_attempt(s, report, checkin_id=claimed.id, elder_id=claimed.elder_id, worker=worker,
                                  target_masked=report.target, claim=claimed.version)
            # The lease ran out before the outcome was written (database outage, crash before the spool
            # was replayed). If nobody is dialling the item now, this call still counts: adopt and settle.
            adopted = q.adopt(s, claimed.id, worker=worker, now=now, note="补记：租约过期后写入的通话结果")
            if adopted is not None:
                settled = _settle(s, claimed, adopted, report, call_id=call_id, worker=worker, now=now,
                                  policy=policy, escalations=escalations, cold_wave=cold_wave)
                log.info("late call outcome settled", extra={"action": "call_adopted", "checkin": claimed.id})
                return call_id, settled
        log.warning("call stored, queue item no longer ours", extra={"action": "lease_lost", "checkin": claimed.id})
        return call_id, Settled("lease_lost")


def elder_failure(report: CallReport) -> Failure:
    if report.result == CallResult.BUSY.value:
        return Failure.BUSY
    if report.result == CallResult.REJECTED.value:
        return Failure.REJECTED
    return Failure.NO_ANSWER


def _profile(elder: Elder) -> ElderProfile:
    return ElderProfile(categories=frozenset(elder.categories or ()), risk_tier=elder.risk_tier)


def unreached_hook(config: EscalationConfig = DEFAULT_CONFIG) -> Callable[[Session, q.UnreachedNotice], None]:
    """``Queue.on_unreached``: the ladder is exhausted → triage → a home-visit escalation."""

    def hook(session: Session, notice: q.UnreachedNotice) -> None:
        elder = session.get(Elder, notice.elder_id)
        if elder is None or notice.kind == "emergency_contact":
            return
        decision = triage_unreached(_profile(elder), notice.at)
        if decision.escalation is not None:
            spec = EscalationSpec(decision.escalation.severity, decision.escalation.reason)
            create_from_triage(session, elder, spec, Source.checkin(notice.checkin_id), notice.at, config=config)

    return hook


def settle(sessions: sessionmaker[Session], claimed: q.Claimed, version: int, report: CallReport, *,
           call_id: int, worker: str, now: datetime, policy: PolicySet,
           escalations: EscalationConfig = DEFAULT_CONFIG, cold_wave: bool = False) -> Settled:
    """Acknowledge the queue item for this call in its own transaction (prefer :func:`record_call`)."""
    with q.write_session(sessions) as s:
        return _settle(s, claimed, version, report, call_id=call_id, worker=worker, now=now, policy=policy,
                       escalations=escalations, cold_wave=cold_wave)


def _settle(s: Session, claimed: q.Claimed, version: int, report: CallReport, *,
            call_id: int, worker: str, now: datetime, policy: PolicySet,
            escalations: EscalationConfig = DEFAULT_CONFIG, cold_wave: bool = False) -> Settled:
    hook = unreached_hook(escalations)
    if report.trunk_failure:
        f = q.fail(s, claimed.id, worker=worker, version=version, failure=Failure.TRUNK, now=now, policy=policy)
        return Settled(f.status.value, attempts=f.attempts)
    if report.stopped_early and report.outcome in (None, Outcome.UNREACHED):
        q.release(s, claimed.id, worker=worker, version=version, now=now, note="拨号进程停止，通话未完成")
        return Settled("released")
    answered = report.result == CallResult.ANSWERED.value and report.answerer is Answerer.HUMAN
    contact_call = claimed.kind == "emergency_contact"
    if report.result == CallResult.NOT_FOUND.value and not contact_call:
        done = q.complete(s, claimed.id, worker=worker, version=version, outcome=Outcome.WRONG_NUMBER, now=now,
                          note="号码不存在")
        esc = _escalate(s, done.elder_id, EscalationSpec(Severity.P3, "号码不存在，需核实联系方式"),
                        claimed.id, call_id, now, escalations)
        return Settled("done", esc)
    if not answered or report.outcome in (None, Outcome.UNREACHED):
        f = q.fail(s, claimed.id, worker=worker, version=version, failure=elder_failure(report), now=now,
                   policy=policy, on_unreached=hook)
        if contact_call:  # an emergency cannot wait for this contact's retry ladder: ask the next one now
            row = s.get(CheckIn, claimed.id)
            if row is not None:
                contact_response(s, row, False, now, escalations)
        return Settled(f.status.value, attempts=f.attempts)
    outcome: Outcome = report.outcome or Outcome.WELL
    if contact_call:
        done = q.complete(s, claimed.id, worker=worker, version=version, outcome=Outcome.WELL, now=now,
                          note="紧急联系人已接听")
        row = s.get(CheckIn, claimed.id)
        if row is not None:
            contact_response(s, row, bool(report.dialog_result.get("accepted")), now, escalations)
        return Settled("done")
    elder = s.get(Elder, claimed.elder_id)
    spec: EscalationSpec | None = None
    if isinstance(report.dialog, DialogResult) and elder is not None:
        decision = triage(report.dialog, _profile(elder), now, cold_wave=cold_wave)
        outcome = decision.outcome
        if decision.escalation is not None:
            e = decision.escalation
            spec = EscalationSpec(e.severity, e.reason, detail="；".join(e.reasons) or None)
    if report.transfer == "refused":
        spec = EscalationSpec(Severity.P1, TRANSFER_FAILED_REASON,
                              detail=spec.reason if spec is not None else None)
    if outcome is Outcome.UNREACHED:
        outcome = Outcome.NEEDS_FOLLOWUP if spec is not None else Outcome.WELL
    done = q.complete(s, claimed.id, worker=worker, version=version, outcome=outcome, now=now)
    esc = _escalate(s, done.elder_id, spec, claimed.id, call_id, now, escalations) if spec else None
    return Settled("done", esc)


def _escalate(s: Session, elder_id: int, spec: EscalationSpec | None, checkin_id: int, call_id: int,  # noqa: PLR0917
              now: datetime, config: EscalationConfig) -> int | None:
    if spec is None:
        return None
    elder = s.get(Elder, elder_id)
    if elder is None:
        return None
    esc = create_from_triage(s, elder, spec, Source.checkin(checkin_id, call_id), now, config=config)
    log.info("escalation from call", extra={"action": "call_escalation", "checkin": checkin_id,
                                            "severity": spec.severity.value})
    return int(esc.id)
