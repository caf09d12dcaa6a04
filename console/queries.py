"""Read models of the console and the API. Every query is scoped through :mod:`console.scope`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from console.scope import Principal, elder_scope, scope_clause
from storage.crypto import Vault
from storage.enums import EscalationStatus, Severity
from storage.ledger.idcard import normalise_id
from storage.ledger.phones import PhoneError, normalise_phone
from storage.models.checkin import CallAttempt, CheckIn
from storage.models.elder import Contact, Elder, ElderPhone
from storage.models.escalation import Alert, AlertStatus, Escalation, Visit
from storage.models.region import Region
from storage.models.staff import Staff

ACTIVE = (EscalationStatus.OPEN, EscalationStatus.ACKNOWLEDGED)


@dataclass(frozen=True)
class QueueItem:
    id: int
    elder_id: int
    elder_name: str
    village: str
    severity: Severity
    reason: str
    status: EscalationStatus
    due_at: datetime
    created_at: datetime
    assignee: str | None
    overdue: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "elder_id": self.elder_id, "elder_name": self.elder_name, "village": self.village,
            "severity": self.severity.value, "severity_label": self.severity.label, "reason": self.reason,
            "status": self.status.value, "status_label": self.status.label, "due_at": self.due_at.isoformat(),
            "created_at": self.created_at.isoformat(), "assignee": self.assignee, "overdue": self.overdue,
        }


@dataclass(frozen=True)
class QueuePage:
    items: list[QueueItem]
    total: int
    overdue_total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def queue(
    session: Session,
    principal: Principal,
    now: datetime,
    *,
    statuses: tuple[EscalationStatus, ...] = ACTIVE,
    severity: Severity | None = None,
    mine: bool = False,
    page: int = 1,
    page_size: int = 50,
) -> QueuePage:
    """Active escalations in scope, most pressing deadline first."""
    conds = [scope_clause(principal, Escalation.region_path), Escalation.status.in_(statuses)]
    if severity is not None:
        conds.append(Escalation.severity == severity)
    if mine:
        conds.append(Escalation.assignee_staff_id == principal.staff_id)
    total, overdue = session.execute(
        select(func.count(), func.count().filter(Escalation.due_at < now)).select_from(Escalation).where(*conds)
    ).one()
    page = max(1, page)
    rows = session.execute(
        select(Escalation.id, Escalation.elder_id, Elder.name, Region.name, Escalation.severity,
               Escalation.reason, Escalation.status, Escalation.due_at, Escalation.created_at, Staff.name)
        .join(Elder, Elder.id == Escalation.elder_id)
        .join(Region, Region.id == Elder.region_id)
        .outerjoin(Staff, Staff.id == Escalation.assignee_staff_id)
        .where(*conds)
        .order_by(Escalation.due_at, Escalation.id)
        .limit(page_size).offset((page - 1) * page_size)
    ).all()
    items = [
        QueueItem(id=r[0], elder_id=r[1], elder_name=r[2], village=r[3], severity=r[4], reason=r[5], status=r[6],
                  due_at=r[7], created_at=r[8], assignee=r[9],
                  overdue=r[6] is not EscalationStatus.RESOLVED and r[7] < now)
        for r in rows
    ]
    return QueuePage(items, int(total), int(overdue), page, page_size)


def scoped_escalation(session: Session, principal: Principal, escalation_id: int) -> Escalation | None:
    return session.scalar(select(Escalation).where(
        Escalation.id == escalation_id, scope_clause(principal, Escalation.region_path)))


def scoped_call(session: Session, principal: Principal, call_id: int) -> CallAttempt | None:
    return session.scalar(select(CallAttempt).where(CallAttempt.id == call_id, CallAttempt.elder_id.in_(
        select(Elder.id).where(elder_scope(principal)))))


def recent_calls(session: Session, elder_id: int, limit: int = 10) -> list[CallAttempt]:
    return list(session.scalars(select(CallAttempt).where(CallAttempt.elder_id == elder_id)
                                .order_by(CallAttempt.started_at.desc(), CallAttempt.id.desc()).limit(limit)))


def escalation_visits(session: Session, escalation_id: int) -> list[Visit]:
    return list(session.scalars(select(Visit).where(Visit.escalation_id == escalation_id).order_by(Visit.id)))


_ID_LIKE = re.compile(r"^\d{17}[\dXx]$")
_PHONE_LIKE = re.compile(r"^\+?[\d\- ]{7,16}$")


def search_elders(session: Session, principal: Principal, vault: Vault, q: str, limit: int = 50) -> list[Elder]:
    """By name (substring), full ID number or full phone number (keyed-hash look-ups, nothing decrypted)."""
    q = q.strip()
    conds: list[Any] = [elder_scope(principal)]
    if not q:
        stmt = select(Elder).where(*conds).order_by(Elder.name, Elder.id).limit(limit)
        return list(session.scalars(stmt))
    alts: list[Any] = [Elder.name.contains(q, autoescape=True)]
    if _ID_LIKE.match(q):
        alts.append(Elder.id_number_hash == vault.blind_index(normalise_id(q)))
    if _PHONE_LIKE.match(q):
        try:
            phone = normalise_phone(q)
        except PhoneError:
            phone = None
        if phone is not None:
            h = vault.blind_index(phone.number)
            alts.append(Elder.id.in_(select(ElderPhone.elder_id).where(ElderPhone.number_hash == h)))
    stmt = select(Elder).where(*conds, or_(*alts)).order_by(Elder.name, Elder.id).limit(limit)
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # call / visit / escalation / checkin
    title: str
    detail: str = ""
    link: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "kind": self.kind, "title": self.title, "detail": self.detail,
                "link": self.link}


def timeline(session: Session, elder_id: int, limit: int = 40) -> list[TimelineEntry]:
    """Calls, visits and escalations of one elder, newest first (only the columns shown are read:
    no transcripts or dialog results are loaded for a list)."""
    out: list[TimelineEntry] = []
    for started_at, outcome, result, channel, target_masked in session.execute(
            select(CallAttempt.started_at, CallAttempt.outcome, CallAttempt.result, CallAttempt.channel,
                   CallAttempt.target_masked)
            .where(CallAttempt.elder_id == elder_id).order_by(CallAttempt.started_at.desc()).limit(limit)):
        label = outcome.label if outcome else (result or "进行中")
        out.append(TimelineEntry(started_at, "call", f"{'电话' if channel == 'phone' else '微信'}探访：{label}",
                                 f"对方 {target_masked or ''}".strip(), None))
    staff_alias = aliased(Staff)
    for visited_at, kind, notes, who in session.execute(
            select(Visit.visited_at, Visit.kind, Visit.notes, staff_alias.name)
            .outerjoin(staff_alias, staff_alias.id == Visit.staff_id)
            .where(Visit.elder_id == elder_id).order_by(Visit.visited_at.desc()).limit(limit)):
        out.append(TimelineEntry(visited_at, "visit", f"{kind.label}（{who or '未知'}）", notes or "", None))
    for eid, created_at, severity, reason, status in session.execute(
            select(Escalation.id, Escalation.created_at, Escalation.severity, Escalation.reason, Escalation.status)
            .where(Escalation.elder_id == elder_id).order_by(Escalation.created_at.desc()).limit(limit)):
        out.append(TimelineEntry(created_at, "escalation", f"{severity.label}事项：{reason}",
                                 status.label, f"/escalations/{eid}"))
    for completed_at, ci_outcome, reasons in session.execute(
            select(CheckIn.completed_at, CheckIn.outcome, CheckIn.reasons)
            .where(CheckIn.elder_id == elder_id, CheckIn.completed_at.is_not(None), CheckIn.kind != "emergency_contact")
            .order_by(CheckIn.completed_at.desc()).limit(limit)):
        if completed_at is not None:
            out.append(TimelineEntry(completed_at, "checkin", f"远程探访完成：{ci_outcome.label if ci_outcome else ''}",
                                     "、".join(reasons or []), None))
    out.sort(key=lambda t: t.at, reverse=True)
    return out[:limit]


def contacts_of(session: Session, elder_id: int) -> list[Contact]:
    return list(session.scalars(select(Contact).where(Contact.elder_id == elder_id).order_by(Contact.position)))


def failed_alerts(session: Session, principal: Principal, limit: int = 100) -> list[Alert]:
    """Permanently failed deliveries in scope (an alert nobody received must be seen by someone)."""
    return list(session.scalars(select(Alert).where(
        Alert.status == AlertStatus.FAILED, scope_clause(principal, Alert.region_path),
    ).order_by(Alert.created_at.desc()).limit(limit)))


def my_alerts(session: Session, principal: Principal, limit: int = 50) -> list[Alert]:
    return list(session.scalars(select(Alert).where(
        Alert.channel == "console", Alert.recipient_kind == "staff", Alert.recipient_id == principal.staff_id,
    ).order_by(Alert.created_at.desc()).limit(limit)))


@dataclass
class EscalationView:
    escalation: Escalation
    elder: Elder
    calls: list[CallAttempt] = field(default_factory=list)
    visits: list[Visit] = field(default_factory=list)
    assignee: str | None = None
