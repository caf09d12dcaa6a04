"""One-time binding codes (issued from the console) and the bindings they create.

A code is a 6-digit number typed into the chat, or a scene string inside a QR code; only a keyed
hash is stored. Redeeming needs the last four digits of the phone on record for the contact (or
elder, or staff member), is limited in attempts, and records consent.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from storage.crypto import Vault, VaultError
from storage.ledger.phones import PhoneError, normalise_phone
from storage.models.elder import Contact, Elder, ElderPhone
from storage.models.staff import Staff
from storage.models.wechat import WechatBinding, WechatBindingCode, WechatFollower

log = logging.getLogger(__name__)

CODE_TTL = timedelta(days=3)
MAX_CODE_ATTEMPTS = 5  # wrong last-four answers per code
MAX_LOOKUPS_PER_HOUR = 5  # unknown codes typed by one follower per hour
CONSENT_TEXT = "同意接收老人的探访结果与提醒，并同意本服务保存绑定记录（可随时回复“解除绑定”撤回）"


class BindRole(StrEnum):
    FAMILY = "family"
    ELDER = "elder"
    STAFF = "staff"


class CodeKind(StrEnum):
    CODE = "code"  # 6 digits, typed
    SCENE = "scene"  # QR scene string, scanned


class BindingError(Exception):
    """A code cannot be issued (unknown elder/contact, no phone on record ...). Message in Chinese."""


@dataclass(frozen=True)
class IssuedCode:
    code_id: int
    kind: CodeKind
    value: str  # show once: the 6 digits, or the scene string to put into a QR code
    expires_at: datetime


def code_hash(vault: Vault, kind: CodeKind, value: str) -> str:
    return vault.blind_index(f"wechat-bind:{kind}:{value}")


def issue_binding_code(
    session: Session,
    vault: Vault,
    *,
    now: datetime,
    elder_id: int | None = None,
    contact_id: int | None = None,
    staff_id: int | None = None,
    kind: CodeKind = CodeKind.CODE,
    issued_by: str | None = None,
    ttl: timedelta = CODE_TTL,
) -> IssuedCode:
    """Issue a one-time code for a contact of an elder (family), the elder themself or a staff member.

    The role follows from the ids: ``contact_id`` → family, ``staff_id`` → staff, else elder.
    Earlier unused codes for the same target are revoked. Adds rows to ``session`` (no commit).
    """
    role, phone_enc = _target(session, vault, elder_id, contact_id, staff_id)
    if phone_enc is None:
        raise BindingError("该联系人没有登记手机号，无法用手机号后四位确认绑定：请先补录手机号")
    stmt = select(WechatBindingCode).where(
        WechatBindingCode.used_at.is_(None),
        WechatBindingCode.revoked_at.is_(None),
        WechatBindingCode.role == role,
        WechatBindingCode.elder_id.is_(None) if elder_id is None else WechatBindingCode.elder_id == elder_id,
        WechatBindingCode.contact_id.is_(None) if contact_id is None else WechatBindingCode.contact_id == contact_id,
        WechatBindingCode.staff_id.is_(None) if staff_id is None else WechatBindingCode.staff_id == staff_id,
    )
    for old in session.scalars(stmt):
        old.revoked_at = now
    for _ in range(20):
        value = f"{secrets.randbelow(10**6):06d}" if kind is CodeKind.CODE else "b" + secrets.token_urlsafe(18)
        digest = code_hash(vault, kind, value)
        clash = session.scalar(
            select(WechatBindingCode.id).where(
                WechatBindingCode.code_hash == digest,
                WechatBindingCode.used_at.is_(None),
                WechatBindingCode.revoked_at.is_(None),
                WechatBindingCode.expires_at > now,
            )
        )
        if clash is None:
            break
    else:  # pragma: no cover - a million codes live at once
        raise BindingError("可用的绑定码已用尽，请稍后再试")
    row = WechatBindingCode(
        code_hash=digest,
        kind=str(kind),
        role=str(role),
        elder_id=elder_id,
        contact_id=contact_id,
        staff_id=staff_id,
        issued_by=issued_by,
        created_at=now,
        expires_at=now + ttl,
        attempts=0,
        max_attempts=MAX_CODE_ATTEMPTS,
    )
    session.add(row)
    session.flush()
    log.info("binding code issued", extra={"action": "wechat_code_issued", "code_id": row.id, "role": str(role)})
    return IssuedCode(code_id=row.id, kind=kind, value=value, expires_at=row.expires_at)


def _target(
    session: Session, vault: Vault, elder_id: int | None, contact_id: int | None, staff_id: int | None
) -> tuple[BindRole, bytes | None]:
    if staff_id is not None:
        staff = session.get(Staff, staff_id)
        if staff is None:
            raise BindingError(f"找不到工作人员（编号 {staff_id}）")
        return BindRole.STAFF, staff.phone_enc
    if elder_id is None or session.get(Elder, elder_id) is None:
        raise BindingError(f"找不到老人（编号 {elder_id}）")
    if contact_id is not None:
        contact = session.get(Contact, contact_id)
        if contact is None or contact.elder_id != elder_id:
            raise BindingError(f"联系人（编号 {contact_id}）不属于该老人")
        return BindRole.FAMILY, contact.phone_enc
    phone = session.scalar(
        select(ElderPhone).where(ElderPhone.elder_id == elder_id).order_by(ElderPhone.position).limit(1)
    )
    return BindRole.ELDER, phone.number_enc if phone else None


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


@dataclass(frozen=True)
class BindingInfo:
    """One binding as the console shows it (never the openid in full)."""

    binding_id: int
    role: str
    contact_id: int | None
    staff_id: int | None
    openid_masked: str
    bound_at: datetime
    consent_at: datetime
    digest_opt_in: bool
    unbound_at: datetime | None


@dataclass(frozen=True)
class CodeInfo:
    code_id: int
    kind: str
    role: str
    contact_id: int | None
    issued_by: str | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None
    attempts: int

    def state(self, now: datetime) -> str:
        """In Chinese, for the console: 已使用 / 已作废 / 已过期 / 有效."""
        if self.used_at is not None:
            return "已使用"
        if self.revoked_at is not None or self.attempts >= MAX_CODE_ATTEMPTS:
            return "已作废"
        return "已过期" if self.expires_at <= now else "有效"


def _mask_openid(openid: str) -> str:
    return openid[:4] + "****" + openid[-4:] if len(openid) > 8 else "****"


def bindings_for_elder(session: Session, elder_id: int, *, include_unbound: bool = False) -> list[BindingInfo]:
    """The elder's WeChat bindings (family and the elder themself), for the console."""
    q = select(WechatBinding).where(WechatBinding.elder_id == elder_id).order_by(WechatBinding.id)
    if not include_unbound:
        q = q.where(WechatBinding.unbound_at.is_(None))
    return [
        BindingInfo(b.id, b.role, b.contact_id, b.staff_id, _mask_openid(b.openid), b.bound_at, b.consent_at,
                    b.digest_opt_in, b.unbound_at)
        for b in session.scalars(q)
    ]


def codes_for_elder(session: Session, elder_id: int) -> list[CodeInfo]:
    """Codes issued for the elder and their contacts, newest first (the code itself is never stored)."""
    q = select(WechatBindingCode).where(WechatBindingCode.elder_id == elder_id).order_by(WechatBindingCode.id.desc())
    return [
        CodeInfo(c.id, c.kind, c.role, c.contact_id, c.issued_by, c.created_at, c.expires_at, c.used_at,
                 c.revoked_at, c.attempts)
        for c in session.scalars(q)
    ]


def revoke_code(session: Session, code_id: int, now: datetime) -> bool:
    """Withdraw an unused code (False if it was already used or withdrawn)."""
    code = session.get(WechatBindingCode, code_id)
    if code is None or code.used_at is not None or code.revoked_at is not None:
        return False
    code.revoked_at = now
    return True


def unbind(session: Session, binding_id: int, now: datetime, reason: str = "staff") -> bool:
    """End one binding from the console (e.g. the family member asked by phone)."""
    b = session.get(WechatBinding, binding_id)
    if b is None or b.unbound_at is not None:
        return False
    b.unbound_at, b.unbound_reason = now, reason
    return True
