"""The durable dispatch queue: check-ins claimed under a lease by dialer workers and the WeChat bot.

Every function takes a SQLAlchemy ``Session`` inside a transaction the caller commits (on SQLite
that must be a *write* transaction — ``storage.db.write_transaction`` — so the single writer is
taken up front), or use :class:`Queue`, which wraps each call in its own transaction.

API (``now`` is an aware datetime; ``worker`` names the claiming process, e.g. "dialer-2:1234")::

    claim(session, worker, n, lease, now, *, policy=PolicySet) -> list[Claimed]
        Up to ``n`` check-ins, lowest ``priority`` first, then oldest ``next_attempt_at``, that
        are due and inside the elder's call window (or ``ignore_call_window``). Each becomes
        ``dialing`` with ``lease_owner=worker`` until ``now + lease``. PostgreSQL: ``FOR UPDATE
        SKIP LOCKED``; SQLite: the single writer. Expired leases are returned to ``due`` first.
        Due items outside their window are pushed to the window's start, not claimed.
    complete(session, checkin_id, worker=, version=, outcome=, now=) -> Completed
        The call reached the elder: ``done`` with ``outcome`` (well, needs_followup, emergency,
        refused, wrong_number, deferred). Triage/escalation is the caller's business.
    fail(session, checkin_id, worker=, version=, failure=, now=, policy=, on_unreached=None) -> Failed
        No answer / busy / rejected → the retry ladder (``retry_wait``); ladder exhausted →
        ``unreached`` and ``Failed.unreached`` is an :class:`UnreachedNotice` for triage; if
        ``on_unreached(session, notice)`` is given it is called in the same transaction (the
        escalation service creates its escalation there). ``failure=Failure.TRUNK`` (our trunk
        failed) → back to ``due`` after a short back-off, no attempt counted.
    release(session, checkin_id, worker=, version=, now=, delay=None, note=) -> None
        Give an item back unattempted (worker shutting down, line capacity): ``due`` again.
    heartbeat(session, checkin_id, worker=, version=, lease=, now=) -> int
        Extend a lease during a long call; returns the new version.
    request_call(session, elder_id, kind, now, *, reason, source, due_at=None, priority=None,
                 ignore_call_window=None, dialog_flags=None, policy=None) -> Requested
        An out-of-plan call: ``RequestKind.SOS`` (top priority, any hour), ``EMERGENCY``,
        (these two also without consent; every other kind raises :class:`ConsentMissing` unless
        the elder's consent is ``granted``),
        ``CALLBACK`` (the elder asked to be called at ``due_at``: any hour), ``FAMILY_REQUEST``
        (WeChat "给我妈打个电话": next call window), ``SIGNAL`` (device alert), ``MANUAL``.
        If the elder already has an open request of that kind it is reused (and its priority and
        due time raised if needed), so pressing the button three times gives one call.

``complete``/``fail``/``release``/``heartbeat`` are optimistic: they match ``id``, ``version``,
``lease_owner`` and status ``dialing``; if another worker took the item over after the lease
expired, :class:`LeaseLost` is raised and nothing is written. Each status change is validated
against :data:`ALLOWED` and recorded as a ``CheckInTransition`` with its time and actor.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import PolicySet, load_policy
from scheduler.retry import Failure, RetryAction, retry_decision
from scheduler.windows import allowed_windows, in_window, next_window_start
from storage.enums import CheckInStatus as S
from storage.enums import ConsentStatus, Outcome
from storage.models import CheckIn, CheckInTransition, Elder, Region
from storage.models.base import UTCDateTime

log = logging.getLogger(__name__)

OPEN = (S.PLANNED, S.DUE, S.DIALING, S.RETRY_WAIT)
CLAIMABLE = (S.PLANNED, S.DUE, S.RETRY_WAIT)
ALLOWED: dict[S | None, frozenset[S]] = {
    None: frozenset({S.PLANNED, S.DUE}),
    S.PLANNED: frozenset({S.DUE, S.DIALING, S.CANCELLED}),
    S.DUE: frozenset({S.DIALING, S.CANCELLED}),
    S.DIALING: frozenset({S.DONE, S.RETRY_WAIT, S.UNREACHED, S.DUE, S.CANCELLED}),
    S.RETRY_WAIT: frozenset({S.DIALING, S.DUE, S.CANCELLED, S.UNREACHED}),
    S.DONE: frozenset(),
    S.UNREACHED: frozenset(),
    # Only the planner revives a check-in it cancelled itself (an event changed back).
    S.CANCELLED: frozenset({S.PLANNED, S.DUE}),
}


class QueueError(Exception):
    pass


class InvalidTransition(QueueError):
    def __init__(self, frm: S | None, to: S) -> None:
        super().__init__(f"不允许的状态变化：{frm.label if frm else '（新建）'} → {to.label}")


class LeaseLost(QueueError):
    """The item is no longer this worker's (lease expired and re-claimed, or already finished)."""


class ConsentMissing(QueueError):
    """The elder has not agreed to (or withdrew from) automated calls: the service is voluntary."""


class RequestKind(enum.StrEnum):
    SOS = "sos"
    EMERGENCY = "emergency"
    CALLBACK = "callback"
    FAMILY_REQUEST = "family_request"
    SIGNAL = "signal"
    MANUAL = "manual"


def check_transition(frm: S | None, to: S) -> None:
    if to not in ALLOWED[frm]:
        raise InvalidTransition(frm, to)


@dataclass(frozen=True)
class Claimed:
    id: int
    elder_id: int
    version: int
    kind: str
    slot: str
    priority: int
    attempts: int
    due_at: datetime
    lease_expires_at: datetime
    ignore_call_window: bool
    reasons: list[str]
    dialog_flags: dict[str, Any]


@dataclass(frozen=True)
class Completed:
    id: int
    elder_id: int
    outcome: Outcome
    version: int


@dataclass(frozen=True)
class UnreachedNotice:
    """Handed to triage when the retry ladder is exhausted (the escalation service acts on it)."""

    checkin_id: int
    elder_id: int
    attempts: int
    kind: str
    at: datetime
    reason: str


@dataclass(frozen=True)
class Failed:
    id: int
    status: S
    attempts: int
    next_attempt_at: datetime | None
    version: int
    unreached: UnreachedNotice | None = None


@dataclass(frozen=True)
class Requested:
    id: int
    created: bool  # False: an open request of that kind existed and was reused
    due_at: datetime
    priority: int


def _record(session: Session, checkin_id: int, frm: S | None, to: S, *, at: datetime, actor: str,
            note: str | None = None) -> None:
    check_transition(frm, to)
    session.add(CheckInTransition(checkin_id=checkin_id, from_status=frm, to_status=to, at=at, actor=actor[:64],
                                  note=(note or None) and note[:255]))


def _record_many(session: Session, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        check_transition(r["from_status"], r["to_status"])
    if rows:
        session.connection().execute(insert(CheckInTransition.__table__), rows)  # type: ignore[arg-type]


# -- claiming ------------------------------------------------------------------------------

def reap_expired(session: Session, now: datetime, actor: str = "lease-reaper") -> int:
    """Return items whose lease ran out (the worker died) to ``due``; counts the returned."""
    rows = session.execute(
        update(CheckIn)
        .where(CheckIn.status == S.DIALING, CheckIn.lease_expires_at < now)
        .values(status=S.DUE, lease_owner=None, lease_expires_at=None, next_attempt_at=now,
                version=CheckIn.version + 1, updated_at=now)
        .returning(CheckIn.id, CheckIn.lease_owner)
    ).all()
    _record_many(session, [
        {"checkin_id": r.id, "from_status": S.DIALING, "to_status": S.DUE, "at": now, "actor": actor,
         "note": "租约过期，重新排队"} for r in rows
    ])
    if rows:
        log.warning("returned %d expired leases", len(rows), extra={"action": "lease_expired"})
    return len(rows)


HOUSEKEEPING_EVERY = timedelta(seconds=2)
_HOUSEKEPT: dict[tuple[int, str], datetime] = {}
_READY = text("checkins.status IN ('due', 'retry_wait')")  # literally the partial index's predicate


def promote_ready(session: Session, now: datetime, limit: int = 1000, actor: str = "queue") -> int:
    """``planned`` → ``due`` for up to ``limit`` items whose time has come (the planner's tick does
    this in bulk; claim() does it too, so a planned item never waits for the next tick)."""
    pick = select(CheckIn.id).where(CheckIn.status == S.PLANNED, CheckIn.next_attempt_at <= now)
    pick = pick.order_by(CheckIn.next_attempt_at).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    ids = [r[0] for r in session.execute(
        update(CheckIn).where(CheckIn.id.in_(pick.scalar_subquery()), CheckIn.status == S.PLANNED)
        .values(status=S.DUE, version=CheckIn.version + 1, updated_at=now).returning(CheckIn.id)
    ).all()]
    _record_many(session, [{"checkin_id": i, "from_status": S.PLANNED, "to_status": S.DUE, "at": now,
                            "actor": actor, "note": None} for i in ids])
    return len(ids)


def claim(
    session: Session, worker: str, n: int, lease: timedelta, now: datetime, *, policy: PolicySet | None = None,
) -> list[Claimed]:
    """Claim up to ``n`` due check-ins for ``worker`` (see the module docstring).

    The head of the queue is read through the partial index ``ix_checkins_ready`` (due and
    retry_wait rows, in priority then time order), so a claim costs the same with 10 or 10⁶ items
    waiting; planned items whose time has come are promoted to due first.
    """
    policies = policy or _default_policy()
    bind = session.get_bind()
    key = (id(bind), str(getattr(bind, "url", "")))
    last = _HOUSEKEPT.get(key)
    if last is None or not (last <= now < last + HOUSEKEEPING_EVERY):
        # Expired leases back to due, planned items whose time came to due: at most once per
        # HOUSEKEEPING_EVERY of ``now`` per process (leases are minutes long; the tick promotes too).
        reap_expired(session, now)
        promote_ready(session, now, max(4 * n, 100))
        _HOUSEKEPT[key] = now
    pg = bind.dialect.name == "postgresql"
    claimed: list[Claimed] = []
    for _round in range(5):
        want = n - len(claimed)
        if want <= 0:
            break
        limit = want + min(want, 8) + 2
        q = (
            select(CheckIn.id, CheckIn.status, CheckIn.ignore_call_window, Elder.call_windows, Region.path,
                   CheckIn.kind, Elder.consent_status)
            .join(Elder, Elder.id == CheckIn.elder_id)
            .join(Region, Region.id == Elder.region_id)
            .where(_READY, CheckIn.next_attempt_at <= now)
            .order_by(CheckIn.priority, CheckIn.next_attempt_at, CheckIn.id)
            .limit(limit)
        )
        if pg:
            q = q.with_for_update(skip_locked=True, of=CheckIn)
        rows = session.execute(q).all()
        if not rows:
            break
        take: list[tuple[int, S]] = []
        later: dict[datetime, list[int]] = {}
        no_consent: list[int] = []
        for r in rows:
            if len(take) >= want:
                break
            if r.consent_status is not ConsentStatus.GRANTED and r.kind not in CONSENT_EXEMPT_KINDS:
                no_consent.append(r.id)  # planned before consent was withdrawn (or never given)
                continue
            if r.ignore_call_window:
                take.append((r.id, r.status))
                continue
            windows = allowed_windows(r.call_windows, policies.for_path(r.path))
            if in_window(now, windows):
                take.append((r.id, r.status))
            else:  # not callable now: move it to its window so it stops blocking the head
                later.setdefault(next_window_start(now, windows), []).append(r.id)
        for at, ids in later.items():
            session.execute(update(CheckIn).where(CheckIn.id.in_(ids)).values(next_attempt_at=at))
        if no_consent:
            cancel(session, no_consent, now, worker[:64], "老人未同意或已撤回同意，不拨打")
        if take:
            claimed.extend(_take(session, worker, take, lease, now))
        if len(rows) < limit:
            break
    return claimed


def _take(session: Session, worker: str, take: list[tuple[int, S]], lease: timedelta, now: datetime) -> list[Claimed]:
    ids = [i for i, _ in take]
    expires = now + lease
    for _i, frm in take:
        check_transition(frm, S.DIALING)
    if session.get_bind().dialect.name == "postgresql":
        # One round trip: the status change and its transition rows together.
        res = session.execute(_PG_TAKE, {
            "ids": ids, "olds": [str(f.value) for _i, f in take], "worker": worker, "expires": expires, "now": now,
            "actor": worker[:64]}).all()
    else:
        res = _take_generic(session, worker, take, expires, now)
    out = [Claimed(r.id, r.elder_id, r.version, r.kind, r.slot, r.priority, r.attempts, r.due_at, expires,
                   r.ignore_call_window, list(r.reasons or []), dict(r.dialog_flags or {})) for r in res]
    out.sort(key=lambda c: (c.priority, c.due_at, c.id))
    return out


_PG_TAKE = text("""
WITH b AS (SELECT * FROM unnest(CAST(:ids AS integer[]), CAST(:olds AS varchar[])) AS b(id, old)),
u AS (
    UPDATE checkins SET status = 'dialing', lease_owner = :worker, lease_expires_at = :expires,
           version = checkins.version + 1, updated_at = :now
    FROM b WHERE checkins.id = b.id AND checkins.status IN ('planned', 'due', 'retry_wait')
    RETURNING checkins.id, checkins.elder_id, checkins.version, checkins.kind, checkins.slot, checkins.priority,
              checkins.attempts, checkins.due_at, checkins.ignore_call_window, checkins.reasons,
              checkins.dialog_flags, b.old
),
t AS (
    INSERT INTO checkin_transitions (checkin_id, from_status, to_status, at, actor, note)
    SELECT u.id, u.old, 'dialing', :now, :actor, NULL FROM u
)
SELECT id, elder_id, version, kind, slot, priority, attempts, due_at, ignore_call_window, reasons, dialog_flags
FROM u
""").columns(due_at=UTCDateTime())


def _take_generic(session: Session, worker: str, take: list[tuple[int, S]], expires: datetime,
                  now: datetime) -> list[Any]:
    ids = [i for i, _ in take]
    res = session.execute(
        update(CheckIn)
        .where(CheckIn.id.in_(ids), CheckIn.status.in_(CLAIMABLE))
        .values(status=S.DIALING, lease_owner=worker, lease_expires_at=expires, version=CheckIn.version + 1,
                updated_at=now)
        .returning(CheckIn.id, CheckIn.elder_id, CheckIn.version, CheckIn.kind, CheckIn.slot, CheckIn.priority,
                   CheckIn.attempts, CheckIn.due_at, CheckIn.ignore_call_window, CheckIn.reasons,
                   CheckIn.dialog_flags)
    ).all()
    before = dict(take)
    _record_many(session, [
        {"checkin_id": r.id, "from_status": before[r.id], "to_status": S.DIALING, "at": now, "actor": worker,
         "note": None} for r in res
    ])
    return list(res)


# -- finishing -----------------------------------------------------------------------------

def _owned(checkin_id: int, worker: str, version: int) -> Any:
    return and_(CheckIn.id == checkin_id, CheckIn.version == version, CheckIn.lease_owner == worker,
                CheckIn.status == S.DIALING)


def _lost(session: Session, checkin_id: int, worker: str) -> LeaseLost:
    row = session.get(CheckIn, checkin_id)
    if row is None:
        return LeaseLost(f"探访任务 {checkin_id} 不存在")
    return LeaseLost(f"探访任务 {checkin_id} 已不属于 {worker}（当前状态：{row.status.label}，持有者：{row.lease_owner or '无'}）")


def complete(session: Session, checkin_id: int, *, worker: str, version: int, outcome: Outcome, now: datetime,
             note: str | None = None) -> Completed:
    if outcome is Outcome.UNREACHED:
        raise QueueError("未联系上请用 fail()，由重拨阶梯决定")
    row = session.execute(
        update(CheckIn).where(_owned(checkin_id, worker, version))
        .values(status=S.DONE, outcome=outcome, completed_at=now, lease_owner=None, lease_expires_at=None,
                version=CheckIn.version + 1, updated_at=now)
        .returning(CheckIn.id, CheckIn.elder_id, CheckIn.version)
    ).first()
    if row is None:
        raise _lost(session, checkin_id, worker)
    _record(session, checkin_id, S.DIALING, S.DONE, at=now, actor=worker, note=note or outcome.label)
    return Completed(row.id, row.elder_id, outcome, row.version)


def fail(
    session: Session, checkin_id: int, *, worker: str, version: int, failure: Failure, now: datetime,
    policy: PolicySet | None = None, on_unreached: Callable[[Session, UnreachedNotice], None] | None = None,
) -> Failed:
    policies = policy or _default_policy()
    item = session.execute(
        select(CheckIn.attempts, CheckIn.ignore_call_window, CheckIn.kind, CheckIn.elder_id, Elder.call_windows,
               Region.path)
        .join(Elder, Elder.id == CheckIn.elder_id).join(Region, Region.id == Elder.region_id)
        .where(_owned(checkin_id, worker, version))
    ).first()
    if item is None:
        raise _lost(session, checkin_id, worker)
    pol = policies.for_path(item.path)
    decision = retry_decision(item.attempts, failure, now, pol, allowed_windows(item.call_windows, pol),
                              ignore_call_window=item.ignore_call_window)
    to = {RetryAction.RETRY: S.RETRY_WAIT, RetryAction.REQUEUE: S.DUE, RetryAction.UNREACHED: S.UNREACHED}[decision.action]
    values: dict[str, Any] = {"status": to, "attempts": decision.attempts, "lease_owner": None,
                              "lease_expires_at": None, "version": CheckIn.version + 1, "updated_at": now}
    if decision.next_attempt_at is not None:
        values["next_attempt_at"] = decision.next_attempt_at
    if to is S.UNREACHED:
        values.update(outcome=Outcome.UNREACHED, completed_at=now)
    row = session.execute(update(CheckIn).where(_owned(checkin_id, worker, version)).values(**values)
                          .returning(CheckIn.version)).first()
    if row is None:
        raise _lost(session, checkin_id, worker)
    _record(session, checkin_id, S.DIALING, to, at=now, actor=worker, note=decision.reason)
    notice = None
    if to is S.UNREACHED:
        notice = UnreachedNotice(checkin_id, item.elder_id, decision.attempts, item.kind, now, decision.reason)
        log.info("check-in unreached after ladder", extra={"action": "checkin_unreached", "checkin": checkin_id})
        if on_unreached is not None:
            on_unreached(session, notice)
    return Failed(checkin_id, to, decision.attempts, decision.next_attempt_at, row.version, notice)


def release(session: Session, checkin_id: int, *, worker: str, version: int, now: datetime,
            delay: timedelta | None = None, note: str = "未拨打，交回队列") -> None:
    row = session.execute(
        update(CheckIn).where(_owned(checkin_id, worker, version))
        .values(status=S.DUE, lease_owner=None, lease_expires_at=None, next_attempt_at=now + (delay or timedelta()),
                version=CheckIn.version + 1, updated_at=now)
        .returning(CheckIn.id)
    ).first()
    if row is None:
        raise _lost(session, checkin_id, worker)
    _record(session, checkin_id, S.DIALING, S.DUE, at=now, actor=worker, note=note)


def adopt(session: Session, checkin_id: int, *, worker: str, now: datetime, lease: timedelta = timedelta(minutes=1),
          note: str) -> int | None:
    """Take an item that is waiting (``due``/``retry_wait``, e.g. returned by the lease reaper) as
    ``dialing`` for ``worker`` to settle a call that already happened; ``None`` when it is not waiting
    (someone is dialling it, or it is finished). Returns the version to settle with."""
    row = session.execute(
        update(CheckIn).where(CheckIn.id == checkin_id, CheckIn.status.in_((S.DUE, S.RETRY_WAIT)))
        .values(status=S.DIALING, lease_owner=worker, lease_expires_at=now + lease, version=CheckIn.version + 1,
                updated_at=now)
        .returning(CheckIn.version, CheckIn.attempts)
    ).first()
    if row is None:
        return None
    prev = session.execute(select(CheckInTransition.to_status).where(CheckInTransition.checkin_id == checkin_id)
                           .order_by(CheckInTransition.id.desc()).limit(1)).scalar()
    _record(session, checkin_id, prev if prev in (S.DUE, S.RETRY_WAIT) else S.DUE, S.DIALING, at=now, actor=worker,
            note=note)
    return int(row.version)


def heartbeat(session: Session, checkin_id: int, *, worker: str, version: int, lease: timedelta, now: datetime) -> int:
    row = session.execute(
        update(CheckIn).where(_owned(checkin_id, worker, version))
        .values(lease_expires_at=now + lease, version=CheckIn.version + 1)
        .returning(CheckIn.version)
    ).first()
    if row is None:
        raise _lost(session, checkin_id, worker)
    return int(row.version)


def cancel(session: Session, checkin_ids: list[int], now: datetime, actor: str, note: str) -> int:
    """Cancel items not yet being dialled (planned/due/retry_wait)."""
    if not checkin_ids:
        return 0
    q = select(CheckIn.id, CheckIn.status).where(CheckIn.id.in_(checkin_ids), CheckIn.status.in_(CLAIMABLE))
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    before = {r.id: r.status for r in session.execute(q)}
    if not before:
        return 0
    session.execute(update(CheckIn).where(CheckIn.id.in_(list(before)))
                    .values(status=S.CANCELLED, version=CheckIn.version + 1, updated_at=now))
    _record_many(session, [{"checkin_id": i, "from_status": st, "to_status": S.CANCELLED, "at": now,
                            "actor": actor, "note": note[:255]} for i, st in before.items()])
    return len(before)


# -- requests ------------------------------------------------------------------------------

# Calls placed without recorded consent: only when the elder's life or health may be at stake
# (PIPL art. 13(4)): the elder pressed the SOS button, or an emergency escalation asks for a call.
CONSENT_EXEMPT = frozenset({RequestKind.SOS, RequestKind.EMERGENCY})

# Check-in kinds dialled whatever the consent: the SOS call-back, emergencies, and the emergency
# calls to family contacts (vital interests); every other kind needs the elder's consent at claim.
CONSENT_EXEMPT_KINDS = frozenset({"sos", "emergency", "emergency_contact"})

_REQUEST_PRIORITY = {
    RequestKind.SOS: "sos", RequestKind.EMERGENCY: "emergency", RequestKind.CALLBACK: "callback",
    RequestKind.FAMILY_REQUEST: "family_request", RequestKind.SIGNAL: "signal", RequestKind.MANUAL: "family_request",
}


def request_call(
    session: Session, elder_id: int, kind: RequestKind, now: datetime, *, reason: str, source: str,
    due_at: datetime | None = None, priority: int | None = None, ignore_call_window: bool | None = None,
    dialog_flags: dict[str, Any] | None = None, policy: PolicySet | None = None,
) -> Requested:
    """Queue an out-of-plan call (see the module docstring). Returns the check-in id."""
    policies = policy or _default_policy()
    elder = session.execute(
        select(Elder.id, Elder.call_windows, Region.path, Elder.consent_status).join(Region, Region.id == Elder.region_id)
        .where(Elder.id == elder_id)
    ).first()
    if elder is None:
        raise QueueError(f"老人 {elder_id} 不存在")
    if elder.consent_status is not ConsentStatus.GRANTED and kind not in CONSENT_EXEMPT:
        raise ConsentMissing(f"老人 {elder_id} 未同意接受电话探访（{elder.consent_status.label}），不安排自动电话；"
                             "可由工作人员上门或人工联系")
    pol = policies.for_path(elder.path)
    prio = priority if priority is not None else getattr(pol.priority, _REQUEST_PRIORITY[kind])
    ignore = ignore_call_window if ignore_call_window is not None else kind in (
        RequestKind.SOS, RequestKind.EMERGENCY, RequestKind.CALLBACK)
    due = max(due_at or now, now) if kind is not RequestKind.CALLBACK else (due_at or now)
    if not ignore:
        due = next_window_start(due, allowed_windows(elder.call_windows, pol))
    reasons = [reason]
    existing = session.execute(
        select(CheckIn).where(CheckIn.elder_id == elder_id, CheckIn.kind == kind.value,
                              CheckIn.status.in_(CLAIMABLE)).with_for_update()
    ).scalars().first()
    if existing is not None:
        if prio < existing.priority or due < existing.next_attempt_at:
            existing.priority = min(prio, existing.priority)
            existing.next_attempt_at = min(due, existing.next_attempt_at)
            existing.due_at = min(due, existing.due_at)
            existing.ignore_call_window = existing.ignore_call_window or ignore
        if reason not in existing.reasons:
            existing.reasons = [*existing.reasons, reason]
        existing.version += 1
        return Requested(existing.id, False, existing.next_attempt_at, existing.priority)
    slot = f"Q:{kind.value}:{now.strftime('%Y%m%d%H%M%S%f')}"
    status = S.DUE if due <= now else S.PLANNED
    item = CheckIn(elder_id=elder_id, slot=slot, kind=kind.value, status=status, priority=prio, due_at=due,
                   next_attempt_at=due, ignore_call_window=ignore, reasons=reasons,
                   dialog_flags={**(dialog_flags or {}), "source": source}, created_at=now, updated_at=now)
    session.add(item)
    session.flush()
    _record(session, item.id, None, status, at=now, actor=source[:64], note=reason)
    log.info("call requested", extra={"action": "call_requested", "kind": kind.value, "checkin": item.id})
    return Requested(item.id, True, due, prio)


_POLICY: PolicySet | None = None


def _default_policy() -> PolicySet:
    global _POLICY
    if _POLICY is None:
        _POLICY = load_policy()
    return _POLICY


# -- convenience: one transaction per call -------------------------------------------------

@contextmanager
def write_session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction that takes SQLite's write lock up front (BEGIN IMMEDIATE); plain on PostgreSQL."""
    with sessions() as session, session.begin():
        session.connection(execution_options={"sqlite_write": True})
        yield session


@dataclass
class Queue:
    """The queue bound to a session factory and policy; each method is one committed transaction."""

    sessions: sessionmaker[Session]
    policy: PolicySet = field(default_factory=_default_policy)
    on_unreached: Callable[[Session, UnreachedNotice], None] | None = None

    def claim(self, worker: str, n: int, lease: timedelta, now: datetime) -> list[Claimed]:
        with write_session(self.sessions) as s:
            return claim(s, worker, n, lease, now, policy=self.policy)

    def complete(self, checkin_id: int, *, worker: str, version: int, outcome: Outcome, now: datetime,
                 note: str | None = None) -> Completed:
        with write_session(self.sessions) as s:
            return complete(s, checkin_id, worker=worker, version=version, outcome=outcome, now=now, note=note)

    def fail(self, checkin_id: int, *, worker: str, version: int, failure: Failure, now: datetime) -> Failed:
        with write_session(self.sessions) as s:
            return fail(s, checkin_id, worker=worker, version=version, failure=failure, now=now,
                        policy=self.policy, on_unreached=self.on_unreached)

    def release(self, checkin_id: int, *, worker: str, version: int, now: datetime,
                delay: timedelta | None = None) -> None:
        with write_session(self.sessions) as s:
            release(s, checkin_id, worker=worker, version=version, now=now, delay=delay)

    def heartbeat(self, checkin_id: int, *, worker: str, version: int, lease: timedelta, now: datetime) -> int:
        with write_session(self.sessions) as s:
            return heartbeat(s, checkin_id, worker=worker, version=version, lease=lease, now=now)

    def request_call(self, elder_id: int, kind: RequestKind, now: datetime, **kw: Any) -> Requested:
        with write_session(self.sessions) as s:
            return request_call(s, elder_id, kind, now, policy=self.policy, **kw)


__all__ = [
    "ALLOWED", "CONSENT_EXEMPT", "Claimed", "Completed", "ConsentMissing", "Failed", "Failure", "InvalidTransition", "LeaseLost", "Queue",
    "QueueError", "RequestKind", "Requested", "UnreachedNotice", "adopt", "cancel", "check_transition", "claim",
    "complete", "fail", "heartbeat", "promote_ready", "reap_expired", "release", "request_call", "write_session",
]
