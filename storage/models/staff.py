"""Staff: officers, grid workers, social workers and volunteers, scoped to a region."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.enums import StaffRole
from storage.models.base import Base, TimestampMixin, UTCDateTime, enum_column
from storage.models.region import Region


class Staff(TimestampMixin, Base):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    role: Mapped[StaffRole] = mapped_column(enum_column(StaffRole, 24))
    region_id: Mapped[int] = mapped_column(ForeignKey("regions.id"), index=True)
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_hash: Mapped[str | None] = mapped_column(String(32), index=True)
    phone_masked: Mapped[str | None] = mapped_column(String(24))
    username: Mapped[str | None] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    region: Mapped[Region] = relationship()
