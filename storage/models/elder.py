"""Elders, their phones and contacts, and the "five knowns" profile.

Personal numbers are stored three ways: encrypted (``*_enc``), as a keyed hash for look-ups
(``*_hash``) and masked for display (``*_masked``); plaintext never reaches the database.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.enums import (
    Category,
    ConsentStatus,
    ContactKind,
    ElderStatus,
    Locale,
    PhoneKind,
    RiskTier,
    Sex,
)
from storage.models.base import Base, CategorySet, TimestampMixin, UTCDateTime, enum_column
from storage.models.region import Region


class Elder(TimestampMixin, Base):
    __tablename__ = "elders"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    sex: Mapped[Sex | None] = mapped_column(enum_column(Sex, 8))
    birth_date: Mapped[date | None] = mapped_column(Date)
    id_number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    id_number_hash: Mapped[str] = mapped_column(String(32), unique=True)
    id_number_masked: Mapped[str] = mapped_column(String(24))
    address: Mapped[str | None] = mapped_column(String(255))
    region_id: Mapped[int] = mapped_column(ForeignKey("regions.id"), index=True)
    categories: Mapped[frozenset[Category]] = mapped_column(CategorySet(), default=frozenset)
    risk_tier: Mapped[RiskTier] = mapped_column(enum_column(RiskTier, 16), default=RiskTier.GENERAL)
    locale: Mapped[Locale] = mapped_column(enum_column(Locale, 8), default=Locale.ZH)
    # Preferred call windows, "HH:MM-HH:MM" local time (Asia/Shanghai); empty = policy default.
    call_windows: Mapped[list[str]] = mapped_column(JSON, default=list)
    pause_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pause_reason: Mapped[str | None] = mapped_column(String(255))
    consent_status: Mapped[ConsentStatus] = mapped_column(
        enum_column(ConsentStatus, 16), default=ConsentStatus.UNKNOWN
    )
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    consent_by: Mapped[str | None] = mapped_column(String(100))
    consent_note: Mapped[str | None] = mapped_column(String(255))
    # Consent withdrawn: personal data is erased (anonymised) by the purge job on this date.
    deletion_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[ElderStatus] = mapped_column(
        enum_column(ElderStatus, 16), default=ElderStatus.ACTIVE, index=True
    )
    note: Mapped[str | None] = mapped_column(Text)

    region: Mapped[Region] = relationship()
    phones: Mapped[list[ElderPhone]] = relationship(
        back_populates="elder", cascade="all, delete-orphan", order_by="ElderPhone.position"
    )
    contacts: Mapped[list[Contact]] = relationship(
        back_populates="elder", cascade="all, delete-orphan", order_by="Contact.position"
    )
    profile: Mapped[Profile | None] = relationship(
        back_populates="elder", cascade="all, delete-orphan", uselist=False
    )


class ElderPhone(Base):
    __tablename__ = "elder_phones"

    id: Mapped[int] = mapped_column(primary_key=True)
    elder_id: Mapped[int] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    kind: Mapped[PhoneKind] = mapped_column(enum_column(PhoneKind, 16))
    number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    number_hash: Mapped[str] = mapped_column(String(32), index=True)
    number_masked: Mapped[str] = mapped_column(String(24))
    position: Mapped[int] = mapped_column(Integer, default=0)

    elder: Mapped[Elder] = relationship(back_populates="phones")


class Contact(Base):
    """Family member, neighbour or grid worker to reach about an elder, in ``position`` order."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    elder_id: Mapped[int] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(50))
    relation: Mapped[str] = mapped_column(String(20))
    kind: Mapped[ContactKind] = mapped_column(enum_column(ContactKind, 16), default=ContactKind.FAMILY)
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_hash: Mapped[str | None] = mapped_column(String(32), index=True)
    phone_masked: Mapped[str | None] = mapped_column(String(24))
    position: Mapped[int] = mapped_column(Integer, default=0)
    may_receive_alerts: Mapped[bool] = mapped_column(Boolean, default=True)

    elder: Mapped[Elder] = relationship(back_populates="contacts")


class Profile(Base):
    """The "five knowns" (五知): health, finances, family support, needs, home hazards."""

    __tablename__ = "profiles"

    elder_id: Mapped[int] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"), primary_key=True)
    # 1. health
    health_conditions: Mapped[list[str]] = mapped_column(JSON, default=list)
    mobility: Mapped[str | None] = mapped_column(String(20))  # 自理 / 半失能 / 失能
    health_note: Mapped[str | None] = mapped_column(Text)
    # 2. finances
    income_sources: Mapped[list[str]] = mapped_column(JSON, default=list)
    receives_dibao: Mapped[bool | None] = mapped_column(Boolean)
    finances_note: Mapped[str | None] = mapped_column(Text)
    # 3. family support
    children_count: Mapped[int | None] = mapped_column(Integer)
    family_contact: Mapped[str | None] = mapped_column(String(50))  # e.g. 每周电话 / 很少联系
    family_note: Mapped[str | None] = mapped_column(Text)
    # 4. needs
    needs: Mapped[list[str]] = mapped_column(JSON, default=list)
    needs_note: Mapped[str | None] = mapped_column(Text)
    # 5. home hazards
    home_hazards: Mapped[list[str]] = mapped_column(JSON, default=list)
    hazards_note: Mapped[str | None] = mapped_column(Text)
    # provenance
    health_details_shared_with_family: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_by: Mapped[str | None] = mapped_column(String(100))
    updated_source: Mapped[str | None] = mapped_column(String(20))  # ledger / visit / call / wechat
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    elder: Mapped[Elder] = relationship(back_populates="profile")

    def as_dict(self) -> dict[str, Any]:
        return {c.key: getattr(self, c.key) for c in self.__table__.columns}
