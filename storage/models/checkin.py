"""Check-ins (one elder, one slot) moving through the dispatch queue, and the calls placed for them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.enums import CheckInStatus, Outcome
from storage.models.base import Base, TimestampMixin, UTCDateTime, enum_column
from storage.models.elder import Elder


class CheckIn(TimestampMixin, Base):
    """One planned contact. ``slot`` makes planning idempotent: (elder, slot) is unique, so a
    re-run tick or two racing planners can never create a second call for the same slot.

    ``kind`` says why it exists (routine, surge, festival, callback, sos, signal, family_request,
    emergency_contact, manual); ``reasons`` lists the policy's reasons in words.
    """

    __tablename__ = "checkins"
    __table_args__ = (
        UniqueConstraint("elder_id", "slot", name="uq_checkins_elder_slot"),
        Index("ix_checkins_claim", "status", "next_attempt_at", "priority"),
        # The dispatch queue's head: claim() walks this in order (partial, so planned and
        # finished rows cost nothing here; planned rows reach it when promoted to due).
        Index("ix_checkins_ready", "priority", "next_attempt_at", "id",
              postgresql_where=text("status IN ('due', 'retry_wait')"),
              sqlite_where=text("status IN ('due', 'retry_wait')")),
        # Partial: only rows that have a lease / are finished (planned rows skip both indexes).
        Index("ix_checkins_lease_expires_at", "lease_expires_at",
              postgresql_where=text("lease_expires_at IS NOT NULL"),
              sqlite_where=text("lease_expires_at IS NOT NULL")),
        Index("ix_checkins_completed_at", "completed_at",
              postgresql_where=text("completed_at IS NOT NULL"),
              sqlite_where=text("completed_at IS NOT NULL")),
        # (elder_id has no index of its own: uq_checkins_elder_slot starts with it.)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    elder_id: Mapped[int] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"))
    slot: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(24), default="routine")
    status: Mapped[CheckInStatus] = mapped_column(
        enum_column(CheckInStatus, 16), default=CheckInStatus.PLANNED
    )
    priority: Mapped[int] = mapped_column(Integer, default=50)  # lower = sooner
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Calls outside the normal windows are allowed for emergencies and requested callbacks.
    ignore_call_window: Mapped[bool] = mapped_column(Boolean, default=False)
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Extra dialog context from the scheduler (winter safety questions, festival greeting ...).
    dialog_flags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[Outcome | None] = mapped_column(enum_column(Outcome, 24))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer, default=0)

    elder: Mapped[Elder] = relationship()
    transitions: Mapped[list[CheckInTransition]] = relationship(
        back_populates="checkin", cascade="all, delete-orphan", order_by="CheckInTransition.id"
    )
    calls: Mapped[list[CallAttempt]] = relationship(back_populates="checkin", order_by="CallAttempt.id")


class CheckInTransition(Base):
    """Every status change of a check-in, with its time and who made it (audit of the queue)."""

    __tablename__ = "checkin_transitions"

    id: Mapped[int] = mapped_column(primary_key=True)
    checkin_id: Mapped[int] = mapped_column(ForeignKey("checkins.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[CheckInStatus | None] = mapped_column(enum_column(CheckInStatus, 16))
    to_status: Mapped[CheckInStatus] = mapped_column(enum_column(CheckInStatus, 16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(String(255))

    checkin: Mapped[CheckIn] = relationship(back_populates="transitions")


class CallAttempt(Base):
    """One phone call (or WeChat conversation) made for a check-in, and what came of it.

    ``transcript`` is a list of turns ``{"who": "system"|"elder", "text", "confidence", "intent",
    "at"}``; ``trunk_failure`` marks failures of our own trunk, which never count as the elder
    not answering.
    """

    __tablename__ = "call_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    checkin_id: Mapped[int | None] = mapped_column(ForeignKey("checkins.id", ondelete="SET NULL"), index=True)
    elder_id: Mapped[int | None] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16), default="phone")  # phone / wechat
    target_masked: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sip_status: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[str | None] = mapped_column(String(24))  # answered, busy, no_answer, ...
    ring_seconds: Mapped[float | None] = mapped_column()
    talk_seconds: Mapped[float | None] = mapped_column()
    transcript: Mapped[list[Any]] = mapped_column(JSON, default=list)
    intents: Mapped[list[str]] = mapped_column(JSON, default=list)
    digits: Mapped[str | None] = mapped_column(String(64))
    recording_path: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[Outcome | None] = mapped_column(enum_column(Outcome, 24))
    trunk_failure: Mapped[bool] = mapped_column(Boolean, default=False)
    dialog_result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    checkin: Mapped[CheckIn | None] = relationship(back_populates="calls")
