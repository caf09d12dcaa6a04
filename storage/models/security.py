"""Failed console logins, counted per username and address for rate limiting and lockout."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from storage.models.base import Base, UTCDateTime


class LoginFailure(Base):
    """One failed login. ``username`` is as typed (lower-cased, trimmed, at most 64 characters)."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key", "username", "remote_addr", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    remote_addr: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
