"""WeChat Official Account: bindings, one-time binding codes, callback dedup, the shared access
token, followers (48-hour window) and per-follower conversation state.

A binding ties one openid to an elder as ``family`` (through a Contact), ``elder`` (the elder
themself) or to a Staff row as ``staff``; unbinding sets ``unbound_at`` (rows are never deleted,
so consent stays auditable).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.models.base import Base, UTCDateTime, utcnow


class WechatBinding(Base):
    __tablename__ = "wechat_bindings"
    __table_args__ = (Index("ix_wechat_bindings_openid_active", "openid", "unbound_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    openid: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))  # family / elder / staff
    elder_id: Mapped[int | None] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"), index=True)
    consent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    consent_text: Mapped[str] = mapped_column(String(255))
    bound_at: Mapped[datetime] = mapped_column(UTCDateTime())
    unbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    unbound_reason: Mapped[str | None] = mapped_column(String(64))
    digest_opt_in: Mapped[bool] = mapped_column(Boolean, default=False)
    code_id: Mapped[int | None] = mapped_column(Integer)


class WechatBindingCode(Base):
    """A one-time code (6 digits, typed) or QR scene string (scanned), stored only as a keyed hash."""

    __tablename__ = "wechat_binding_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # code / scene
    role: Mapped[str] = mapped_column(String(16))  # family / elder / staff
    elder_id: Mapped[int | None] = mapped_column(ForeignKey("elders.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id", ondelete="CASCADE"))
    issued_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    used_by_openid: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)


class WechatDedup(Base):
    """One row per inbound message/event key; the reply is stored so a retry gets the same one."""

    __tablename__ = "wechat_dedup"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reply: Mapped[str | None] = mapped_column(Text)  # the plain reply XML ("" = "success")


class WechatToken(Base):
    """The access token of one appid, shared by every process (read before fetching a new one)."""

    __tablename__ = "wechat_tokens"

    appid: Mapped[str] = mapped_column(String(64), primary_key=True)
    access_token: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refreshing_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refreshing_owner: Mapped[str | None] = mapped_column(String(64))


class WechatFollower(Base):
    """A follower of the account: subscription state and the last inbound message (48-hour window)."""

    __tablename__ = "wechat_followers"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    subscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_inbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    failed_code_attempts: Mapped[int] = mapped_column(Integer, default=0)
    failed_code_window_start: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WechatConversation(Base):
    """What a follower is in the middle of: a binding confirmation or a check-in dialog (JSON)."""

    __tablename__ = "wechat_conversations"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))  # bind_confirm / checkin
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
