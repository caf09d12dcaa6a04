"""Escalations and what staff did about them: events, visits, the audit log, the alert outbox,
the duty rota and console sessions.

An :class:`Escalation` is created from triage (or by staff / WeChat), assigned by region,
watched against its deadline and closed only with a recorded action. Every change is an
:class:`EscalationEvent`. :class:`AuditLog` rows form a hash chain (``prev_hash`` → ``hash``)
and are append-only (updates and deletes are refused by the ORM; ``verify_audit_chain`` checks it).
"""

from __future__ import annotations

import enum
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from storage.enums import EscalationStatus, Severity, VisitKind
from storage.models.base import Base, UTCDateTime, enum_column, utcnow
from storage.models.elder import Contact, Elder
from storage.models.staff import Staff


class ResolutionKind(enum.StrEnum):
    """The recorded action an escalation is closed with."""

    VISIT = "visit"  # a home visit (Visit row, kind home)
    CALL = "call"  # a staff phone call (Visit row, kind phone)
    REFERRAL = "referral"  # handed to another service (hospital, 120, repair, 社工)

    @property
    def label(self) -> str:
        return {"visit": "上门探访", "call": "电话回访", "referral": "转介"}[self.value]


class AlertStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # permanent; shown in the console
    SKIPPED = "skipped"  # the channel cannot reach that recipient

    @property
    def label(self) -> str:
        return {"pending": "待发送", "sent": "已发送", "failed": "发送失败", "skipped": "不适用"}[self.value]


class Escalation(Base):
    """One case that needs a human. ``source_key`` makes creation idempotent per source
    ("checkin:12", "call:40", "wechat:<msgid>")."""

    __tablename__ = "escalations"
    __table_args__ = (
        UniqueConstraint("source_key", name="uq_escalations_source_key"),
        Index("ix_escalations_queue", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    elder_id: Mapped[int] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    # The elder's region, copied so the queue can be scoped without a join through elders.
    region_path: Mapped[str] = mapped_column(String(255), index=True)
    severity: Mapped[Severity] = mapped_column(enum_column(Severity, 4))
    reason: Mapped[str] = mapped_column(String(255))
    detail: Mapped[str | None] = mapped_column(Text)
    status: Mapped[EscalationStatus] = mapped_column(
        enum_column(EscalationStatus, 16), default=EscalationStatus.OPEN
    )
    source_key: Mapped[str] = mapped_column(String(64))
    source_checkin_id: Mapped[int | None] = mapped_column(ForeignKey("checkins.id", ondelete="SET NULL"))
    source_call_id: Mapped[int | None] = mapped_column(ForeignKey("call_attempts.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ack_deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())  # action (visit/call) due by
    # The next deadline that matters: acknowledgement while open, the action deadline afterwards.
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    assignee_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"), index=True)
    assignee_contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)  # times raised to a supervisor
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    resolution_kind: Mapped[str | None] = mapped_column(String(16))
    resolution_note: Mapped[str | None] = mapped_column(Text)
    # Emergency: family contacts called in order until one accepts.
    accepted_contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    contact_calls_exhausted: Mapped[bool] = mapped_column(Boolean, default=False)

    elder: Mapped[Elder] = relationship()
    assignee: Mapped[Staff | None] = relationship(foreign_keys=[assignee_staff_id])
    assignee_contact: Mapped[Contact | None] = relationship(foreign_keys=[assignee_contact_id])
    accepted_contact: Mapped[Contact | None] = relationship(foreign_keys=[accepted_contact_id])
    events: Mapped[list[EscalationEvent]] = relationship(
        back_populates="escalation", cascade="all, delete-orphan", order_by="EscalationEvent.id"
    )


class EscalationEvent(Base):
    """One step in an escalation's history (created, assigned, notified, acknowledged, ...)."""

    __tablename__ = "escalation_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    escalation_id: Mapped[int] = mapped_column(ForeignKey("escalations.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))  # "staff:3", "system", "contact:9"
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    escalation: Mapped[Escalation] = relationship(back_populates="events")


class Visit(Base):
    """A home visit or a staff phone call, with the five-knowns updates and the three assists."""

    __tablename__ = "visits"
    __table_args__ = (Index("ix_visits_elder_time", "elder_id", "visited_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    elder_id: Mapped[int] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"), index=True)
    kind: Mapped[VisitKind] = mapped_column(enum_column(VisitKind, 16))
    visited_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    elder_seen: Mapped[bool] = mapped_column(Boolean, default=True)
    profile_updates: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    hazard_removed: Mapped[bool] = mapped_column(Boolean, default=False)
    service_connected: Mapped[bool] = mapped_column(Boolean, default=False)
    benefit_application_started: Mapped[bool] = mapped_column(Boolean, default=False)
    notes: Mapped[str | None] = mapped_column(Text)
    escalation_id: Mapped[int | None] = mapped_column(
        ForeignKey("escalations.id", ondelete="SET NULL"), index=True
    )

    elder: Mapped[Elder] = relationship()
    staff: Mapped[Staff | None] = relationship()


class AuditLog(Base):
    """Who saw or changed which personal data, when. Append-only, hash-chained."""

    __tablename__ = "audit_log"
    __table_args__ = (
        UniqueConstraint("seq", name="uq_audit_log_seq"),
        Index("ix_audit_log_subject", "subject_type", "subject_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, 3 ... (a fork in the chain violates uniqueness)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(64))  # "staff:3" or "system"
    action: Mapped[str] = mapped_column(String(32))  # reveal_id_number, reveal_phone, play_recording, ...
    subject_type: Mapped[str] = mapped_column(String(32))  # elder, contact, call, visit
    subject_id: Mapped[int | None] = mapped_column(Integer)
    elder_id: Mapped[int | None] = mapped_column(Integer, index=True)
    detail: Mapped[str | None] = mapped_column(String(255))  # never the personal value itself
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    def content(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.astimezone(UTC).isoformat() if self.at else None,
            "actor": self.actor,
            "action": self.action,
            "subject_type": self.subject_type,
            "subject_id": self.subject_id,
            "elder_id": self.elder_id,
            "detail": self.detail,
            "remote_addr": self.remote_addr,
        }

    def compute_hash(self) -> str:
        body = json.dumps(self.content(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256((self.prev_hash + "\n" + body).encode("utf-8")).hexdigest()


AUDIT_GENESIS = "0" * 64


@event.listens_for(Session, "before_flush")
def _refuse_audit_changes(session: Session, _ctx: Any, _instances: Any) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, AuditLog) and (obj in session.deleted or session.is_modified(obj)):
            raise PermissionError("审计日志只能追加，不能修改或删除")


class Alert(Base):
    """The durable outbox: one row per message and channel, written in the caller's transaction."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_dispatch", "status", "channel", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    recipient_kind: Mapped[str] = mapped_column(String(16))
    recipient_id: Mapped[int | None] = mapped_column(Integer)
    elder_id: Mapped[int | None] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    escalation_id: Mapped[int | None] = mapped_column(
        ForeignKey("escalations.id", ondelete="CASCADE"), index=True
    )
    region_path: Mapped[str | None] = mapped_column(String(255), index=True)
    title: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[AlertStatus] = mapped_column(enum_column(AlertStatus, 16), default=AlertStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RotaEntry(Base):
    """Who is on duty for escalations of a region (a village or township), in ``position`` order.

    Optional: without entries, assignment falls back to the village's visitors / grid worker,
    then the township officers (see ``scheduler.escalations``).
    """

    __tablename__ = "rota_entries"
    __table_args__ = (UniqueConstraint("region_id", "staff_id", name="uq_rota_entries_region_staff"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    region_id: Mapped[int] = mapped_column(ForeignKey("regions.id", ondelete="CASCADE"), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, default=0)
    # ISO weekdays 1..7 on which this person is on duty; empty = every day.
    weekdays: Mapped[list[int]] = mapped_column(JSON, default=list)

    staff: Mapped[Staff] = relationship()


class ConsoleSession(Base):
    """A server-side console login. ``id_hash`` is the SHA-256 of the cookie value."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    remote_addr: Mapped[str | None] = mapped_column(String(64))


def append_audit(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: int | None,
    elder_id: int | None = None,
    detail: str | None = None,
    remote_addr: str | None = None,
) -> AuditLog:
    """Append one audit row at the end of the chain (serialised on PostgreSQL by an advisory lock)."""
    from sqlalchemy import select, text

    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(727274)"))
    last = session.execute(
        select(AuditLog.seq, AuditLog.hash).order_by(AuditLog.seq.desc()).limit(1)
    ).first()
    seq, prev = (last[0] + 1, last[1]) if last else (1, AUDIT_GENESIS)
    row = AuditLog(
        seq=seq,
        at=at.astimezone(UTC),
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        elder_id=elder_id,
        detail=detail,
        remote_addr=remote_addr,
        prev_hash=prev,
    )
    row.hash = row.compute_hash()
    session.add(row)
    session.flush()
    return row


def verify_audit_chain(session: Session) -> tuple[bool, int, str]:
    """Walk the chain in order: (ok, rows checked, Chinese detail of the first break)."""
    from sqlalchemy import select

    prev = AUDIT_GENESIS
    n = 0
    for row in session.scalars(select(AuditLog).order_by(AuditLog.seq)):
        n += 1
        if row.seq != n:
            return False, n, f"第 {n} 条缺失（序号 {row.seq}）"
        if row.prev_hash != prev:
            return False, n, f"第 {n} 条的前序哈希不符"
        if row.compute_hash() != row.hash:
            return False, n, f"第 {n} 条内容被改动"
        prev = row.hash
    return True, n, "完整"
