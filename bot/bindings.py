"""One-time binding codes (issued from the console) and the bindings they create.

A code is a 6-digit number typed into the chat, or a scene string inside a QR code; only a keyed
hash is stored. Redeeming needs the last four digits of the phone on record for the contact (or
elder, or staff member), is limited in attempts, and records consent.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

# Issuing/withdrawing codes and the console's views live in scheduler.wechat_codes (the console may
# not import bot); re-exported here so the bot's callers keep one import place.
from scheduler.wechat_codes import (
    CODE_TTL,
    MAX_CODE_ATTEMPTS,
    BindingError,
    BindingInfo,
    BindRole,
    CodeInfo,
    CodeKind,
    IssuedCode,
    binding_target,
    bindings_for_elder,
    code_hash,
    codes_for_elder,
    issue_binding_code,
    revoke_code,
    unbind,
)
from storage.crypto import Vault, VaultError
from storage.ledger.phones import PhoneError, normalise_phone
from storage.models.wechat import WechatBinding, WechatBindingCode, WechatFollower

log = logging.getLogger(__name__)

__all__ = [
    "CODE_TTL", "CONSENT_TEXT", "MAX_CODE_ATTEMPTS", "MAX_LOOKUPS_PER_HOUR", "BindRole", "BindingError", "BindingInfo",
    "BindingRow", "CodeInfo", "CodeKind", "IssuedCode", "active_bindings", "bind", "binding_rows", "bindings_for_elder",
    "code_hash", "codes_for_elder", "expected_last_four", "find_code", "issue_binding_code", "last_four",
    "lookups_blocked", "note_failed_lookup", "revoke_code", "unbind", "unbind_all",
]

MAX_LOOKUPS_PER_HOUR = 5  # unknown codes typed by one follower per hour
CONSENT_TEXT = "同意接收老人的探访结果与提醒，并同意本服务保存绑定记录（可随时回复“解除绑定”撤回）"
_target = binding_target


def find_code(session: Session, vault: Vault, kind: CodeKind, value: str, now: datetime) -> WechatBindingCode | None:
    """The live code with this value, or None (unknown, used, revoked, expired or locked)."""
    row = session.scalar(
        select(WechatBindingCode).where(
            WechatBindingCode.code_hash == code_hash(vault, kind, value),
            WechatBindingCode.kind == str(kind),
            WechatBindingCode.used_at.is_(None),
            WechatBindingCode.revoked_at.is_(None),
        )
    )
    if row is None or row.expires_at <= now or row.attempts >= row.max_attempts:
        return None
    return row


def note_failed_lookup(follower: WechatFollower, now: datetime) -> bool:
    """Count an unknown code typed by a follower; True while they may still try."""
    start = follower.failed_code_window_start
    if start is None or now - start > timedelta(hours=1):
        follower.failed_code_window_start = now
        follower.failed_code_attempts = 0
    follower.failed_code_attempts += 1
    return follower.failed_code_attempts < MAX_LOOKUPS_PER_HOUR


def lookups_blocked(follower: WechatFollower, now: datetime) -> bool:
    start = follower.failed_code_window_start
    return (
        start is not None
        and now - start <= timedelta(hours=1)
        and follower.failed_code_attempts >= MAX_LOOKUPS_PER_HOUR
    )


def last_four(phone: str) -> str:
    """Last four digits of a phone number, normalised as the ledger does (+86, dashes, spaces,
    full-width digits); numbers the ledger would refuse fall back to their ASCII digits."""
    try:
        return normalise_phone(phone).dial_string[-4:]
    except PhoneError:
        return "".join(ch for ch in phone if ch in "0123456789")[-4:]


def expected_last_four(session: Session, vault: Vault, code: WechatBindingCode) -> str | None:
    role, enc = _target(session, vault, code.elder_id, code.contact_id, code.staff_id)
    if enc is None:
        return None
    try:
        return last_four(vault.decrypt(enc))
    except VaultError:
        log.error("cannot decrypt phone for binding", extra={"action": "wechat_bind_decrypt_failed"})
        return None


class BindingRow(NamedTuple):
    id: int
    role: str
    elder_id: int | None
    contact_id: int | None
    staff_id: int | None


_ROWS = (
    select(WechatBinding.id, WechatBinding.role, WechatBinding.elder_id, WechatBinding.contact_id, WechatBinding.staff_id)
    .where(WechatBinding.openid == bindparam("openid"), WechatBinding.unbound_at.is_(None))
    .order_by(WechatBinding.id)
)


def binding_rows(session: Session, openid: str) -> list[BindingRow]:
    """The follower's live bindings as plain rows (the hot path: no ORM objects)."""
    return [BindingRow(*r) for r in session.connection().execute(_ROWS, {"openid": openid})]


def active_bindings(session: Session, openid: str) -> list[WechatBinding]:
    return list(
        session.scalars(
            select(WechatBinding)
            .where(WechatBinding.openid == openid, WechatBinding.unbound_at.is_(None))
            .order_by(WechatBinding.id)
        )
    )


def bind(session: Session, code: WechatBindingCode, openid: str, now: datetime) -> WechatBinding:
    """Redeem ``code`` for ``openid`` (idempotent for an identical live binding), recording consent."""
    code.used_at = now
    code.used_by_openid = openid
    for b in active_bindings(session, openid):
        if (b.role, b.elder_id, b.contact_id, b.staff_id) == (code.role, code.elder_id, code.contact_id, code.staff_id):
            b.consent_at = now
            b.code_id = code.id
            return b
    binding = WechatBinding(
        openid=openid,
        role=code.role,
        elder_id=code.elder_id,
        contact_id=code.contact_id,
        staff_id=code.staff_id,
        consent_at=now,
        consent_text=CONSENT_TEXT,
        bound_at=now,
        digest_opt_in=False,
        code_id=code.id,
    )
    session.add(binding)
    session.flush()
    log.info("wechat bound", extra={"action": "wechat_bound", "binding_id": binding.id, "role": code.role})
    return binding


def unbind_all(session: Session, openid: str, now: datetime, reason: str) -> list[WechatBinding]:
    rows = active_bindings(session, openid)
    for b in rows:
        b.unbound_at = now
        b.unbound_reason = reason
    return rows
