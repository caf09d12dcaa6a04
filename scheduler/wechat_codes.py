"""Issuing and withdrawing WeChat binding codes, and the console's view of bindings.

Lives below ``bot`` so the console (which may not import ``bot``) can issue codes; ``bot.bindings``
re-exports everything here and keeps the redeeming side (lookup, last four digits, bind).
A code is a 6-digit number typed into the chat, or a scene string inside a QR code; only a keyed
hash is stored.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.crypto import Vault
from storage.models.elder import Contact, Elder, ElderPhone
from storage.models.staff import Staff
from storage.models.wechat import WechatBinding, WechatBindingCode

log = logging.getLogger(__name__)

CODE_TTL = timedelta(days=3)
MAX_CODE_ATTEMPTS = 5  # wrong last-four answers per code


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
    role, phone_enc = binding_target(session, vault, elder_id, contact_id, staff_id)
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


def binding_target(
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
