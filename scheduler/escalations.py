"""The escalation service: create from triage, assign by region, acknowledge, resolve, watch.

Every function takes the caller's ``Session`` and an aware ``now`` and never commits: the
caller's transaction makes the change and its alerts (outbox rows) atomic. Assignment follows
:class:`EscalationConfig.order` — the duty rota of the elder's village/township, then a visitor
(探访员) of the village, then the township officer; the village's grid worker (a Contact) is
notified as well. A late acknowledgement raises the case to the next region level's officer.
An emergency also calls the elder's contacts one by one through the dialer until one accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.notify import AlertKind, RecipientKind
from scheduler.outbox import CONSOLE_CHANNEL, enqueue_alert, write_session
from storage.enums import (
    CheckInStatus,
    ContactKind,
    EscalationStatus,
    Severity,
    StaffRole,
)
from storage.models.checkin import CallAttempt, CheckIn, CheckInTransition
from storage.models.elder import Contact, Elder
from storage.models.escalation import Escalation, EscalationEvent, ResolutionKind, RotaEntry, Visit
from storage.models.region import Region
from storage.models.staff import Staff

log = logging.getLogger(__name__)

SHANGHAI = ZoneInfo("Asia/Shanghai")
EMERGENCY_CONTACT_PROMPT = (
    "您好，这里是{service}。您的家人{elder}可能遇到紧急情况：{reason}。请尽快确认他的安全。按1表示您马上去处理，按2表示您无法前往。"
)


class EscalationError(Exception):
    """An operation that is not allowed in the escalation's state (message in Chinese)."""


class SpecLike(Protocol):
    """What triage hands over (dialogs.triage's spec fits): severity, reason, optional deadline."""

    @property
    def severity(self) -> Severity: ...
    @property
    def reason(self) -> str: ...


@dataclass(frozen=True)
class EscalationSpec:
    """An escalation request from any channel. ``deadline``: absolute, relative, or the default."""

    severity: Severity
    reason: str
    deadline: datetime | timedelta | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Source:
    """Where an escalation came from; ``key`` is unique, so creating twice returns the first."""

    key: str
    checkin_id: int | None = None
    call_id: int | None = None

    @classmethod
    def checkin(cls, checkin_id: int, call_id: int | None = None) -> Source:
        return cls(f"checkin:{checkin_id}", checkin_id, call_id)

    @classmethod
    def call(cls, call_id: int, checkin_id: int | None = None) -> Source:
        return cls(f"call:{call_id}", checkin_id, call_id)

    @classmethod
    def wechat(cls, message_id: str) -> Source:
        return cls(f"wechat:{message_id}"[:64])

    @classmethod
    def staff(cls, staff_id: int, now: datetime) -> Source:
        return cls(f"staff:{staff_id}:{now.timestamp():.6f}")


@dataclass(frozen=True)
class EscalationConfig:
    """Assignment order and deadlines. ``order`` items: rota, village_visitor, township_officer."""

    order: tuple[str, ...] = ("rota", "village_visitor", "township_officer")
    notify_grid_worker: bool = True
    action_hours: dict[str, float] = field(default_factory=lambda: {"P1": 2, "P2": 48, "P3": 7 * 24})
    alert_channels: tuple[str, ...] = (CONSOLE_CHANNEL,)
    family_channels: tuple[str, ...] = ()  # e.g. ("wechat",) once the WeChat notifier is registered
    service_name: str = "探访关爱服务"
    max_supervisor_levels: int = 3


DEFAULT_CONFIG = EscalationConfig()
ACTIVE = (EscalationStatus.OPEN, EscalationStatus.ACKNOWLEDGED)


def _event(esc: Escalation, now: datetime, kind: str, actor: str, note: str | None = None,  # noqa: PLR0917
           from_status: str | None = None, to_status: str | None = None, **data: object) -> None:
    esc.events.append(EscalationEvent(at=now, kind=kind, actor=actor, note=note, from_status=from_status,
                                      to_status=to_status, data=dict(data)))


def _ancestor_paths(path: str) -> list[str]:
    """'a/b/c' -> ['a/b/c', 'a/b', 'a'] (self first)."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def create_from_triage(
    session: Session,
    elder: Elder,
    spec: SpecLike,
    source: Source,
    now: datetime,
    *,
    config: EscalationConfig = DEFAULT_CONFIG,
) -> Escalation:
    """Create, assign and notify; idempotent per ``source.key`` (the existing row is returned)."""
    existing = session.scalar(select(Escalation).where(Escalation.source_key == source.key))
    if existing is not None:
        return existing
    severity = Severity(spec.severity)
    raw_deadline = getattr(spec, "deadline", None)
    if isinstance(raw_deadline, datetime):
        deadline = raw_deadline
    elif isinstance(raw_deadline, timedelta):
        deadline = now + raw_deadline
    else:
        deadline = now + timedelta(hours=config.action_hours[severity.value])
    ack_deadline = min(now + timedelta(minutes=severity.ack_minutes), deadline)
    region = elder.region if elder.region is not None else session.get(Region, elder.region_id)
    assert region is not None
    esc = Escalation(
        elder_id=elder.id,
        region_path=region.path,
        severity=severity,
        reason=spec.reason[:255],
        detail=getattr(spec, "detail", None),
        status=EscalationStatus.OPEN,
        source_key=source.key,
        source_checkin_id=source.checkin_id,
        source_call_id=source.call_id,
        created_at=now,
        ack_deadline_at=ack_deadline,
        deadline_at=deadline,
        due_at=ack_deadline,
        escalation_level=0,
    )
    session.add(esc)
    _event(esc, now, "created", "system", spec.reason, None, EscalationStatus.OPEN.value, source=source.key)
    session.flush()
    _assign(session, esc, elder, region, now, config=config)
    if severity is Severity.P1:
        _notify_family(session, esc, elder, now, config)
        start_emergency_contacts(session, esc, now, config)
    log.info("escalation %s created severity=%s", esc.id, severity.value, extra={"action": "escalation_created"})
    return esc


def _on_duty(entries: Sequence[RotaEntry], now: datetime) -> list[Staff]:
    weekday = now.astimezone(SHANGHAI).isoweekday()
    return [e.staff for e in entries if e.staff.active and (not e.weekdays or weekday in e.weekdays)]


def pick_assignee(
    session: Session, region: Region, now: datetime, config: EscalationConfig = DEFAULT_CONFIG
) -> Staff | None:
    """The first candidate by ``config.order`` for an elder living in ``region``."""
    paths = _ancestor_paths(region.path)
    for rule in config.order:
        if rule == "rota":
            for p in paths[:2]:  # the village, then its township
                entries = session.scalars(
                    select(RotaEntry).join(Region, Region.id == RotaEntry.region_id)
                    .where(Region.path == p).order_by(RotaEntry.position, RotaEntry.id)
                ).all()
                on_duty = _on_duty(entries, now)
                if on_duty:
                    return on_duty[0]
        elif rule == "village_visitor":
            staff = _least_loaded(session, select(Staff).where(
                Staff.region_id == region.id, Staff.role == StaffRole.VISITOR, Staff.active.is_(True)))
            if staff is not None:
                return staff
        elif rule == "township_officer":
            staff = _officer_at_or_above(session, paths)
            if staff is not None:
                return staff
    return None


def _least_loaded(session: Session, query: object) -> Staff | None:
    candidates = list(session.scalars(query))  # type: ignore[call-overload]
    if not candidates:
        return None
    loads = dict(session.execute(
        select(Escalation.assignee_staff_id, func.count()).where(
            Escalation.assignee_staff_id.in_([c.id for c in candidates]), Escalation.status.in_(ACTIVE)
        ).group_by(Escalation.assignee_staff_id)
    ).tuples().all())
    return min(candidates, key=lambda s: (loads.get(s.id, 0), s.id))


OFFICER_ROLES = (StaffRole.TOWNSHIP_OFFICER, StaffRole.COUNTY_OFFICER)


def _officer_at_or_above(session: Session, paths: Sequence[str]) -> Staff | None:
    """The nearest officer whose region is one of ``paths`` (ordered nearest first)."""
    for p in paths:
        staff = _least_loaded(session, select(Staff).join(Region, Region.id == Staff.region_id).where(
            Region.path == p, Staff.role.in_(OFFICER_ROLES), Staff.active.is_(True)))
        if staff is not None:
            return staff
    return _least_loaded(session, select(Staff).where(Staff.role == StaffRole.ADMIN, Staff.active.is_(True)))


def _assign(session: Session, esc: Escalation, elder: Elder, region: Region, now: datetime, *,
            config: EscalationConfig) -> None:
    staff = pick_assignee(session, region, now, config)
    grid = None
    if config.notify_grid_worker:
        grid = next((c for c in elder.contacts if c.kind is ContactKind.GRID_WORKER), None)
    esc.assignee_staff_id = staff.id if staff else None
    esc.assignee_contact_id = grid.id if grid else None
    _event(esc, now, "assigned", "system", staff.name if staff else "无可分派人员",
           staff_id=staff.id if staff else None, contact_id=grid.id if grid else None)
    title = f"【{esc.severity.label}】{elder.name}：{esc.reason}"[:100]
    body = f"请在 {esc.ack_deadline_at.astimezone(SHANGHAI):%m-%d %H:%M} 前认领并处理。"
    if staff is not None:
        enqueue_alert(session, kind=AlertKind.ESCALATION_ASSIGNED, recipient_kind=RecipientKind.STAFF,
                      recipient_id=staff.id, title=title, body=body, now=now, channels=config.alert_channels,
                      elder_id=elder.id, escalation_id=esc.id, region_path=esc.region_path,
                      url=f"/escalations/{esc.id}")
    else:
        enqueue_alert(session, kind=AlertKind.ESCALATION_ASSIGNED, recipient_kind=RecipientKind.DUTY,
                      recipient_id=region.id, title=title, body="没有可分派的人员，请值班人员处理。", now=now,
                      channels=config.alert_channels, elder_id=elder.id, escalation_id=esc.id,
                      region_path=esc.region_path, url=f"/escalations/{esc.id}")
    if grid is not None and config.family_channels:
        enqueue_alert(session, kind=AlertKind.ESCALATION_ASSIGNED, recipient_kind=RecipientKind.CONTACT,
                      recipient_id=grid.id, title=title, body=body, now=now, channels=config.family_channels,
                      elder_id=elder.id, escalation_id=esc.id, region_path=esc.region_path)


def _notify_family(session: Session, esc: Escalation, elder: Elder, now: datetime,
                   config: EscalationConfig) -> None:
    title = f"紧急：{elder.name}可能需要帮助"
    body = f"{esc.reason}。我们正在联系您和值班人员，请尽快确认老人安全。"
    enqueue_alert(session, kind=AlertKind.EMERGENCY, recipient_kind=RecipientKind.DUTY, recipient_id=elder.region_id,
                  title=title, body=body, now=now, channels=config.alert_channels, elder_id=elder.id,
                  escalation_id=esc.id, region_path=esc.region_path, url=f"/escalations/{esc.id}")
    if not config.family_channels:
        return
    for c in elder.contacts:
        if c.may_receive_alerts and c.kind is not ContactKind.GRID_WORKER:
            enqueue_alert(session, kind=AlertKind.EMERGENCY, recipient_kind=RecipientKind.CONTACT,
                          recipient_id=c.id, title=title, body=body, now=now, channels=config.family_channels,
                          elder_id=elder.id, escalation_id=esc.id, region_path=esc.region_path)


def acknowledge(session: Session, esc: Escalation, staff: Staff, now: datetime) -> Escalation:
    if esc.status is not EscalationStatus.OPEN:
        raise EscalationError(f"该事项当前状态为“{esc.status.label}”，不能认领")
    esc.status = EscalationStatus.ACKNOWLEDGED
    esc.acknowledged_at = now
    esc.acknowledged_by_id = staff.id
    if esc.assignee_staff_id is None or esc.assignee_staff_id != staff.id:
        esc.assignee_staff_id = staff.id
    esc.due_at = esc.deadline_at
    _event(esc, now, "acknowledged", f"staff:{staff.id}", staff.name,
           EscalationStatus.OPEN.value, EscalationStatus.ACKNOWLEDGED.value)
    return esc


def resolve(
    session: Session,
    esc: Escalation,
    staff: Staff,
    now: datetime,
    kind: ResolutionKind,
    *,
    visit: Visit | None = None,
    note: str | None = None,
) -> Escalation:
    """Close with a recorded action: a Visit (home or phone) linked to it, or a referral with a note."""
    if esc.status is EscalationStatus.RESOLVED:
        raise EscalationError("该事项已解决")
    if kind in (ResolutionKind.VISIT, ResolutionKind.CALL):
        if visit is None or visit.escalation_id != esc.id or visit.elder_id != esc.elder_id:
            raise EscalationError("以探访或电话回访结案时，必须先登记本次探访记录")
    elif not (note and note.strip()):
        raise EscalationError("以转介结案时，必须写明转介给谁、办理情况")
    before = esc.status
    if esc.acknowledged_at is None:  # acting on it is acknowledging it
        esc.acknowledged_at = now
        esc.acknowledged_by_id = staff.id
    esc.status = EscalationStatus.RESOLVED
    esc.resolved_at = now
    esc.resolved_by_id = staff.id
    esc.resolution_kind = kind.value
    esc.resolution_note = (note or "").strip() or None
    esc.due_at = esc.deadline_at
    _event(esc, now, "resolved", f"staff:{staff.id}", esc.resolution_note, before.value,
           EscalationStatus.RESOLVED.value, resolution=kind.value, visit_id=visit.id if visit else None)
    _cancel_contact_calls(session, esc, now)
    return esc


def _cancel_contact_calls(session: Session, esc: Escalation, now: datetime) -> None:
    """A resolved case needs no more calls to the family: cancel those not yet dialled."""
    pending = session.scalars(select(CheckIn).where(
        CheckIn.elder_id == esc.elder_id, CheckIn.kind == "emergency_contact",
        CheckIn.slot.like(f"esc{esc.id}-contact%"),
        CheckIn.status.in_([CheckInStatus.PLANNED, CheckInStatus.DUE, CheckInStatus.RETRY_WAIT]))).all()
    for ci in pending:
        ci.transitions.append(CheckInTransition(from_status=ci.status, to_status=CheckInStatus.CANCELLED, at=now,
                                                actor="escalations", note="事项已解决"))
        ci.status = CheckInStatus.CANCELLED
        ci.version += 1


def raise_to_supervisor(session: Session, esc: Escalation, now: datetime,
                        config: EscalationConfig = DEFAULT_CONFIG) -> Staff | None:
    """Give an unacknowledged case to the next region level's officer, with a fresh ack window."""
    elder_paths = _ancestor_paths(esc.region_path)
    current = session.get(Staff, esc.assignee_staff_id) if esc.assignee_staff_id else None
    if current is not None:
        cur_path = current.region.path
        # The supervisor sits strictly above the current assignee's region.
        above = [p for p in elder_paths if len(p) < len(cur_path) and cur_path.startswith(p)]
        if current.role is StaffRole.VISITOR:  # a visitor's supervisor is the officer of their township
            above = [p for p in elder_paths if len(p) < len(cur_path)]
    else:
        above = elder_paths[1:]
    supervisor = None
    for p in above:
        supervisor = _least_loaded(session, select(Staff).join(Region, Region.id == Staff.region_id).where(
            Region.path == p, Staff.role.in_(OFFICER_ROLES), Staff.active.is_(True)))
        if supervisor is not None:
            break
    if supervisor is None:
        supervisor = _least_loaded(session, select(Staff).where(
            Staff.role == StaffRole.ADMIN, Staff.active.is_(True)))
    esc.escalation_level += 1
    esc.ack_deadline_at = now + timedelta(minutes=esc.severity.ack_minutes)
    esc.due_at = esc.ack_deadline_at
    previous = esc.assignee_staff_id
    if supervisor is not None:
        esc.assignee_staff_id = supervisor.id
    _event(esc, now, "raised_to_supervisor", "system", "认领超时，已上报上级",
           from_staff_id=previous, to_staff_id=supervisor.id if supervisor else None, level=esc.escalation_level)
    elder = esc.elder
    enqueue_alert(session, kind=AlertKind.ESCALATION_OVERDUE,
                  recipient_kind=RecipientKind.STAFF if supervisor else RecipientKind.DUTY,
                  recipient_id=supervisor.id if supervisor else elder.region_id,
                  title=f"【超时未认领】{elder.name}：{esc.reason}"[:100],
                  body=f"原负责人未在时限内认领，已转给您。请在 {esc.ack_deadline_at.astimezone(SHANGHAI):%m-%d %H:%M} 前处理。",
                  now=now, channels=config.alert_channels, elder_id=elder.id, escalation_id=esc.id,
                  region_path=esc.region_path, url=f"/escalations/{esc.id}")
    return supervisor


# -- emergency: call the contacts in order -------------------------------------------------------


def _contact_slot(esc: Escalation, contact: Contact) -> str:
    return f"esc{esc.id}-contact{contact.id}"


def _callable_contacts(elder: Elder) -> list[Contact]:
    return [c for c in elder.contacts if c.phone_enc is not None]


def start_emergency_contacts(session: Session, esc: Escalation, now: datetime,
                             config: EscalationConfig = DEFAULT_CONFIG) -> CheckIn | None:
    """Queue the call to the first contact (see :func:`advance_emergency_contacts` for the rest)."""
    contacts = _callable_contacts(esc.elder)
    if not contacts:
        esc.contact_calls_exhausted = True
        _event(esc, now, "contacts_exhausted", "system", "老人没有可拨打的联系人")
        return None
    return _queue_contact_call(session, esc, contacts[0], now, config)


def _queue_contact_call(session: Session, esc: Escalation, contact: Contact, now: datetime,
                        config: EscalationConfig) -> CheckIn:
    elder = esc.elder
    prompt = EMERGENCY_CONTACT_PROMPT.format(service=config.service_name, elder=elder.name, reason=esc.reason)
    ci = CheckIn(
        elder_id=elder.id, slot=_contact_slot(esc, contact), kind="emergency_contact",
        status=CheckInStatus.DUE, priority=0, due_at=now, next_attempt_at=now, ignore_call_window=True,
        reasons=[f"紧急情况：联系{contact.relation or '联系人'}"],
        dialog_flags={"dialog": "emergency_contact", "escalation_id": esc.id, "contact_id": contact.id,
                      "contact_position": contact.position, "prompt": prompt, "accept_digit": "1",
                      "decline_digit": "2"},
    )
    session.add(ci)
    _event(esc, now, "contact_call_queued", "system", f"拨打{contact.relation}（{contact.phone_masked}）",
           contact_id=contact.id)
    session.flush()
    return ci


def record_contact_response(session: Session, checkin: CheckIn, accepted: bool, now: datetime,
                            config: EscalationConfig = DEFAULT_CONFIG) -> Escalation | None:
    """The dialer's answer for an ``emergency_contact`` call; declines move on to the next contact."""
    flags = checkin.dialog_flags or {}
    esc = session.get(Escalation, flags.get("escalation_id"))
    contact = session.get(Contact, flags.get("contact_id"))
    if esc is None or contact is None or esc.accepted_contact_id is not None:
        return esc
    if accepted:
        esc.accepted_contact_id = contact.id
        esc.accepted_at = now
        _event(esc, now, "contact_accepted", f"contact:{contact.id}", f"{contact.relation}{contact.name}表示马上去处理",
               contact_id=contact.id)
        return esc
    _event(esc, now, "contact_declined", f"contact:{contact.id}", f"{contact.relation}未能接受", contact_id=contact.id)
    _next_contact(session, esc, contact, now, config)
    return esc


def _next_contact(session: Session, esc: Escalation, after: Contact, now: datetime,
                  config: EscalationConfig) -> None:
    contacts = _callable_contacts(esc.elder)
    ids = [c.id for c in contacts]
    rest = contacts[ids.index(after.id) + 1:] if after.id in ids else []
    for c in rest:
        if session.scalar(select(CheckIn.id).where(CheckIn.elder_id == esc.elder_id,
                                                   CheckIn.slot == _contact_slot(esc, c))) is None:
            _queue_contact_call(session, esc, c, now, config)
            return
    esc.contact_calls_exhausted = True
    _event(esc, now, "contacts_exhausted", "system", "所有联系人均未接受，请值班人员立即上门")
    enqueue_alert(session, kind=AlertKind.EMERGENCY, recipient_kind=RecipientKind.DUTY,
                  recipient_id=esc.elder.region_id, title=f"紧急：{esc.elder.name}的联系人均未接受",
                  body="请值班人员立即安排上门。", now=now, channels=config.alert_channels,
                  elder_id=esc.elder_id, escalation_id=esc.id, region_path=esc.region_path,
                  url=f"/escalations/{esc.id}")


def _call_accepted(session: Session, checkin: CheckIn) -> bool:
    for call in session.scalars(select(CallAttempt).where(CallAttempt.checkin_id == checkin.id)):
        if (call.dialog_result or {}).get("accepted") is True:
            return True
        if call.digits and call.digits[:1] == str((checkin.dialog_flags or {}).get("accept_digit", "1")):
            return True
    return False


def advance_emergency_contacts(session: Session, esc: Escalation, now: datetime,
                               config: EscalationConfig = DEFAULT_CONFIG) -> None:
    """Look at the last contact call: accepted → record; finished without accepting → next contact."""
    if esc.accepted_contact_id is not None or esc.contact_calls_exhausted:
        return
    last = session.scalar(select(CheckIn).where(
        CheckIn.elder_id == esc.elder_id, CheckIn.kind == "emergency_contact",
        CheckIn.slot.like(f"esc{esc.id}-contact%")).order_by(CheckIn.id.desc()).limit(1))
    if last is None:
        start_emergency_contacts(session, esc, now, config)
        return
    if last.status not in (CheckInStatus.DONE, CheckInStatus.UNREACHED, CheckInStatus.CANCELLED):
        return
    record_contact_response(session, last, _call_accepted(session, last), now, config)


@dataclass
class WatchdogReport:
    raised: list[int] = field(default_factory=list)
    contact_steps: int = 0


def watchdog(session: Session, now: datetime, config: EscalationConfig = DEFAULT_CONFIG) -> WatchdogReport:
    """The APScheduler job body: raise late acknowledgements, move emergency contact calls on."""
    report = WatchdogReport()
    late = session.scalars(select(Escalation).where(
        Escalation.status == EscalationStatus.OPEN, Escalation.ack_deadline_at <= now,
        Escalation.escalation_level < config.max_supervisor_levels).order_by(Escalation.ack_deadline_at)
        .with_for_update(skip_locked=True)).all()
    for esc in late:
        raise_to_supervisor(session, esc, now, config)
        report.raised.append(esc.id)
    emergencies = session.scalars(select(Escalation).where(
        Escalation.status != EscalationStatus.RESOLVED, Escalation.severity == Severity.P1,
        Escalation.accepted_contact_id.is_(None), Escalation.contact_calls_exhausted.is_(False))).all()
    for esc in emergencies:
        before = len(esc.events)
        advance_emergency_contacts(session, esc, now, config)
        report.contact_steps += int(len(esc.events) != before)
    return report


def run_watchdog(sessions: sessionmaker[Session], now: Callable[[], datetime],
                 config: EscalationConfig = DEFAULT_CONFIG) -> WatchdogReport:
    """One watchdog pass in its own transaction (the APScheduler job target)."""
    with write_session(sessions) as session:
        report = watchdog(session, now(), config)
    if report.raised or report.contact_steps:
        log.info("watchdog raised %d, contact steps %d", len(report.raised), report.contact_steps,
                 extra={"action": "escalation_watchdog"})
    return report
