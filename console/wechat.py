"""The elder profile's 微信绑定 section: binding state, issuing/withdrawing codes, unbinding.

Scope first (out of scope → NotFound, i.e. 404), then role: officers and admins issue, withdraw
and unbind; visitors see the state only. Every change writes an audit row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from console.actions import Forbidden, InvalidInput, NotFound
from console.scope import Principal, scoped_elder
from scheduler.wechat_codes import (
    BindingError,
    BindingInfo,
    CodeInfo,
    CodeKind,
    IssuedCode,
    bindings_for_elder,
    codes_for_elder,
    issue_binding_code,
    revoke_code,
    unbind,
)
from storage.crypto import Vault
from storage.models.elder import Contact
from storage.models.escalation import append_audit
from storage.models.wechat import WechatBinding, WechatBindingCode

INSTRUCTIONS = "关注公众号后发送绑定码，再回复联系人手机号后四位"
KIND_LABELS = {"code": "6位绑定码", "scene": "二维码场景"}


@dataclass(frozen=True)
class Target:
    key: str  # "elder" or "contact:<id>"
    label: str
    contact_id: int | None
    bindings: list[BindingInfo]
    codes: list[CodeInfo]


def _elder_or_404(session: Session, principal: Principal, elder_id: int) -> None:
    if scoped_elder(session, principal, elder_id) is None:
        raise NotFound("没有找到这位老人（或不在您的管辖范围）")


def _may_change(principal: Principal) -> None:
    if not principal.can_manage:
        raise Forbidden("探访员只能查看微信绑定情况；发绑定码、作废和解绑须由民政干部或管理员办理")


def wechat_targets(session: Session, principal: Principal, elder_id: int) -> list[Target]:
    """The elder themself and each contact, with their live bindings and codes (newest first)."""
    _elder_or_404(session, principal, elder_id)
    binds = bindings_for_elder(session, elder_id)
    codes = codes_for_elder(session, elder_id)
    contacts = session.scalars(select(Contact).where(Contact.elder_id == elder_id).order_by(Contact.id)).all()
    out = [Target("elder", "老人本人", None, [b for b in binds if b.role == "elder"],
                  [c for c in codes if c.role == "elder"])]
    for c in contacts:
        out.append(Target(f"contact:{c.id}", f"{c.relation}{c.name}", c.id,
                          [b for b in binds if b.contact_id == c.id], [k for k in codes if k.contact_id == c.id]))
    return out


def parse_target(raw: str) -> int | None:
    """"elder" → None; "contact:<id>" → the id."""
    if raw == "elder":
        return None
    kind, _, ident = raw.partition(":")
    if kind == "contact" and ident.isdigit():
        return int(ident)
    raise InvalidInput("绑定对象不正确（应为老人本人或某位联系人）")


def issue(session: Session, principal: Principal, vault: Vault, elder_id: int, target: str, kind: str,  # noqa: PLR0917
          now: datetime, remote_addr: str | None = None) -> IssuedCode:
    _elder_or_404(session, principal, elder_id)
    _may_change(principal)
    contact_id = parse_target(target)
    try:
        code_kind = CodeKind(kind)
    except ValueError as exc:
        raise InvalidInput("绑定方式只能是 code（6位绑定码）或 scene（二维码）") from exc
    try:
        issued = issue_binding_code(session, vault, now=now, elder_id=elder_id, contact_id=contact_id,
                                    kind=code_kind, issued_by=principal.actor)
    except BindingError as exc:
        raise InvalidInput(str(exc)) from exc
    who = "老人本人" if contact_id is None else f"联系人#{contact_id}"
    append_audit(session, at=now, actor=principal.actor, action="wechat_code_issue", subject_type="wechat_code",
                 subject_id=issued.code_id, elder_id=elder_id, detail=f"发放微信{KIND_LABELS[code_kind]}（{who}）",
                 remote_addr=remote_addr)
    return issued


def revoke(session: Session, principal: Principal, elder_id: int, code_id: int, now: datetime,  # noqa: PLR0917
           remote_addr: str | None = None) -> bool:
    """Withdraw a code of this elder; False if it was already used or withdrawn."""
    _elder_or_404(session, principal, elder_id)
    code = session.get(WechatBindingCode, code_id)
    if code is None or code.elder_id != elder_id:
        raise NotFound("没有这个绑定码")
    _may_change(principal)
    if not revoke_code(session, code_id, now):
        return False
    append_audit(session, at=now, actor=principal.actor, action="wechat_code_revoke", subject_type="wechat_code",
                 subject_id=code_id, elder_id=elder_id, detail="作废微信绑定码", remote_addr=remote_addr)
    return True


def unbind_binding(session: Session, principal: Principal, elder_id: int, binding_id: int, now: datetime,  # noqa: PLR0917
                   remote_addr: str | None = None) -> bool:
    _elder_or_404(session, principal, elder_id)
    b = session.get(WechatBinding, binding_id)
    if b is None or b.elder_id != elder_id:
        raise NotFound("没有这个微信绑定")
    _may_change(principal)
    if not unbind(session, binding_id, now, reason="staff"):
        return False
    append_audit(session, at=now, actor=principal.actor, action="wechat_unbind", subject_type="wechat_binding",
                 subject_id=binding_id, elder_id=elder_id, detail="解除微信绑定", remote_addr=remote_addr)
    return True


def targets_json(targets: list[Target], now: datetime) -> list[dict[str, Any]]:
    return [{"target": t.key, "label": t.label, "contact_id": t.contact_id,
             "bindings": [{"id": b.binding_id, "role": b.role, "openid_masked": b.openid_masked,
                           "bound_at": b.bound_at.isoformat(), "digest_opt_in": b.digest_opt_in} for b in t.bindings],
             "codes": [{"id": c.code_id, "kind": c.kind, "state": c.state(now), "created_at": c.created_at.isoformat(),
                        "expires_at": c.expires_at.isoformat()} for c in t.codes]}
            for t in targets]
