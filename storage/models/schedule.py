"""Scheduler tables: surge events and the regions they cover, device tokens and signals,
monthly home-visit tasks for disabled elders, and the planner's heartbeat/lease row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.enums import EventKind
from storage.models.base import Base, TimestampMixin, UTCDateTime, enum_column
from storage.models.region import Region


class SurgeEvent(TimestampMixin, Base):
    """A period of raised contact frequency over some regions: extreme weather (from a CAP
    alert), a lockdown declared by staff. Festivals are computed from the calendar, not stored.

    ``external_id`` is the CAP ``identifier`` (unique), so importing the same alert twice is a
    no-op; an Update or Cancel message refers to it. ``status`` is ``active`` until the event is
    cancelled or ended early; natural expiry is ``ends_at`` passing.
    """

    __tablename__ = "surge_events"
    __table_args__ = (Index("ix_surge_events_window", "status", "starts_at", "ends_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[EventKind] = mapped_column(enum_column(EventKind, 16))
    hazard: Mapped[str | None] = mapped_column(String(32))  # cold_wave, blizzard, ...
    level: Mapped[str | None] = mapped_column(String(16))  # red / orange / yellow / blue
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))  # cap / staff
    external_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    sender: Mapped[str | None] = mapped_column(String(255))
    cap_severity: Mapped[str | None] = mapped_column(String(16))
    cap_urgency: Mapped[str | None] = mapped_column(String(16))
    cap_certainty: Mapped[str | None] = mapped_column(String(16))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="active")  # active / cancelled / ended
    status_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status_note: Mapped[str | None] = mapped_column(String(255))
    created_by: Mapped[str | None] = mapped_column(String(100))
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)  # CAP messages applied, in order

    regions: Mapped[list[SurgeEventRegion]] = relationship(
        back_populates="event", cascade="all, delete-orphan"
    )


class SurgeEventRegion(Base):
    __tablename__ = "surge_event_regions"

    event_id: Mapped[int] = mapped_column(
        ForeignKey("surge_events.id", ondelete="CASCADE"), primary_key=True
    )
    region_id: Mapped[int] = mapped_column(ForeignKey("regions.id", ondelete="CASCADE"), primary_key=True)

    event: Mapped[SurgeEvent] = relationship(back_populates="regions")
    region: Mapped[Region] = relationship()


class DeviceToken(TimestampMixin, Base):
    """A home device (SOS button, water meter) bound to an elder; only the token's hash is kept."""

    __tablename__ = "device_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), unique=True)
    elder_id: Mapped[int] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # sos_button / water_meter
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DeviceSignal(Base):
    """One reading or button press, with where it came from; replays are ignored by the unique key."""

    __tablename__ = "device_signals"
    __table_args__ = (
        UniqueConstraint("device_id", "kind", "observed_at", name="uq_device_signals_device_kind_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    elder_id: Mapped[int] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # sos / water
    value: Mapped[float | None] = mapped_column(Float)
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(100))  # api:<device> / cli:<file>
    action: Mapped[str] = mapped_column(String(32))  # call_now / call_within_2h / none
    checkin_id: Mapped[int | None] = mapped_column(ForeignKey("checkins.id", ondelete="SET NULL"))


class HomeVisitTask(TimestampMixin, Base):
    """The monthly home visit a disabled (失能) elder is owed; staff close it with a visit."""

    __tablename__ = "home_visit_tasks"
    __table_args__ = (UniqueConstraint("elder_id", "month", name="uq_home_visit_tasks_elder_month"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    elder_id: Mapped[int] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    month: Mapped[str] = mapped_column(String(7), index=True)  # YYYY-MM (Asia/Shanghai)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="open")  # open / closed
    visit_id: Mapped[int | None] = mapped_column(Integer)  # the console's visit that closed it
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PlannerLease(Base):
    """Which planner instance is active and when it last ticked (a lease on SQLite, where there
    is no advisory lock; on PostgreSQL a heartbeat next to the advisory lock, for the console)."""

    __tablename__ = "planner_leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_tick_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_tick_note: Mapped[str | None] = mapped_column(String(255))
