"""State-changing console operations shared by the pages and the API: record a visit (five-knowns
updates, the three assists, closing the escalation and the month's home-visit task), reveal a
personal number (audited), open a recording (audited)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from console.queries import scoped_call, scoped_escalation
from console.scope import Principal, scoped_elder
from scheduler.escalations import EscalationError, resolve
from scheduler.privacy import ConsentChange, PrivacyError, export_elder, set_consent
from storage.crypto import Vault
from storage.enums import ConsentStatus, EscalationStatus, VisitKind
from storage.models.elder import Contact, Elder, ElderPhone, Profile
from storage.models.escalation import ResolutionKind, Visit, append_audit
from storage.models.schedule import HomeVisitTask
from storage.models.staff import Staff

SHANGHAI = ZoneInfo("Asia/Shanghai")


class NotFound(Exception):
    """Not there, or not in the principal's scope (the two are indistinguishable on purpose)."""


class Forbidden(Exception):
    """The principal's role may not do this (in scope, but not their business)."""


class InvalidInput(ValueError):
    """Input that cannot be accepted; the message (Chinese) names what is wrong."""


# The five knowns that a visit may update: list fields take "、"/","-separated text.
PROFILE_LIST_FIELDS = ("health_conditions", "income_sources", "needs", "home_hazards")
PROFILE_TEXT_FIELDS = ("mobility", "health_note", "finances_note", "family_contact", "family_note",
                       "needs_note", "hazards_note")
PROFILE_LABELS = {
    "health_conditions": "健康状况", "mobility": "自理能力", "health_note": "健康备注",
    "income_sources": "收入来源", "finances_note": "经济备注", "family_contact": "家人联系情况",
    "family_note": "家庭备注", "needs": "需求", "needs_note": "需求备注", "home_hazards": "居家隐患",
    "hazards_note": "隐患备注",
}
MOBILITY_VALUES = ("自理", "半失能", "失能")


@dataclass
class VisitInput:
    kind: VisitKind
    visited_at: datetime
    elder_seen: bool = True
    profile_updates: dict[str, Any] = field(default_factory=dict)
    hazard_removed: bool = False
    service_connected: bool = False
    benefit_application_started: bool = False
    notes: str | None = None
    escalation_id: int | None = None
    close_escalation: bool = True


FIVE_KNOWNS = (
    ("一知健康", ("health_conditions", "mobility", "health_note")),
    ("二知经济", ("income_sources", "finances_note")),
    ("三知家庭", ("family_contact", "family_note")),
    ("四知需求", ("needs", "needs_note")),
    ("五知隐患", ("home_hazards", "hazards_note")),
)


def profile_rows(profile: Profile | None) -> list[tuple[str, list[tuple[str, str]]]]:
    """The five knowns as (heading, [(label, text)]) for display."""
    out = []
    for heading, keys in FIVE_KNOWNS:
        rows = []
        for key in keys:
            value = getattr(profile, key, None) if profile is not None else None
            text = "、".join(value) if isinstance(value, list) else ("" if value is None else str(value))
            rows.append((PROFILE_LABELS[key], text or "—"))
        out.append((heading, rows))
    return out


def parse_profile_updates(raw: dict[str, Any]) -> dict[str, Any]:
    """Keep only known fields that were filled in; lists from text; mobility from its closed set."""
    out: dict[str, Any] = {}
    for key in PROFILE_LIST_FIELDS:
        value = raw.get(key)
        if value is None or value == "":
            continue
        items = value if isinstance(value, list) else str(value).replace("，", "、").replace(",", "、").split("、")
        items = [str(i).strip() for i in items if str(i).strip()]
        out[key] = items
    for key in PROFILE_TEXT_FIELDS:
        value = raw.get(key)
        if value is None or str(value).strip() == "":
            continue
        text = str(value).strip()
        if key == "mobility" and text not in MOBILITY_VALUES:
            raise InvalidInput(f"自理能力只能是：{'、'.join(MOBILITY_VALUES)}（收到“{text}”）")
        if len(text) > 2000:
            raise InvalidInput(f"{PROFILE_LABELS[key]}太长（最多 2000 字）")
        out[key] = text
    return out


def record_visit(session: Session, principal: Principal, elder_id: int, data: VisitInput, now: datetime) -> Visit:
    """One transaction: the Visit, the profile changes, the escalation closed, the month's task closed."""
    elder = scoped_elder(session, principal, elder_id)
    if elder is None:
        raise NotFound("没有找到这位老人（或不在您的管辖范围）")
    if data.visited_at > now:
        raise InvalidInput("探访时间不能晚于现在")
    escalation = None
    if data.escalation_id is not None:
        escalation = scoped_escalation(session, principal, data.escalation_id)
        if escalation is None or escalation.elder_id != elder.id:
            raise NotFound("没有找到这条事项（或不属于这位老人）")
        if escalation.status is EscalationStatus.RESOLVED and data.close_escalation:
            raise InvalidInput("该事项已解决，不能重复结案")
    staff = session.get(Staff, principal.staff_id)
    assert staff is not None
    visit = Visit(
        elder_id=elder.id, staff_id=staff.id, kind=data.kind, visited_at=data.visited_at, recorded_at=now,
        elder_seen=data.elder_seen, profile_updates=data.profile_updates, hazard_removed=data.hazard_removed,
        service_connected=data.service_connected, benefit_application_started=data.benefit_application_started,
        notes=(data.notes or "").strip() or None, escalation_id=escalation.id if escalation else None,
    )
    session.add(visit)
    session.flush()
    if data.profile_updates:
        _apply_profile(session, elder, data.profile_updates, staff, now)
        append_audit(session, at=now, actor=principal.actor, action="update_profile", subject_type="elder",
                     subject_id=elder.id, elder_id=elder.id,
                     detail="更新五知：" + "、".join(PROFILE_LABELS[k] for k in data.profile_updates))
    if escalation is not None and data.close_escalation:
        kind = ResolutionKind.VISIT if data.kind is VisitKind.HOME else ResolutionKind.CALL
        try:
            resolve(session, escalation, staff, now, kind, visit=visit, note=visit.notes)
        except EscalationError as exc:
            raise InvalidInput(str(exc)) from exc
    if data.kind is VisitKind.HOME and data.elder_seen:
        month = data.visited_at.astimezone(SHANGHAI).strftime("%Y-%m")
        task = session.scalar(select(HomeVisitTask).where(
            HomeVisitTask.elder_id == elder.id, HomeVisitTask.month == month, HomeVisitTask.status == "open"))
        if task is not None:
            task.status = "closed"
            task.visit_id = visit.id
            task.closed_at = now
    return visit


def _apply_profile(session: Session, elder: Elder, updates: dict[str, Any], staff: Staff, now: datetime) -> None:
    profile = session.get(Profile, elder.id)
    if profile is None:
        profile = Profile(elder_id=elder.id)
        session.add(profile)
    for key, value in updates.items():
        setattr(profile, key, value)
    profile.updated_by = staff.name
    profile.updated_source = "visit"
    profile.updated_at = now


@dataclass(frozen=True)
class Revealed:
    label: str
    value: str


def reveal(session: Session, principal: Principal, vault: Vault, elder_id: int, what: str, now: datetime,  # noqa: PLR0917
           remote_addr: str | None = None) -> Revealed:
    """Decrypt one number and write the audit row in the same transaction.

    ``what``: ``id_number``, ``phone:<ElderPhone id>`` or ``contact:<Contact id>``.
    """
    elder = scoped_elder(session, principal, elder_id)
    if elder is None:
        raise NotFound("没有找到这位老人（或不在您的管辖范围）")
    if elder.erased_at is not None:
        raise NotFound("该老人的个人信息已按撤回同意删除")
    kind, _, raw_id = what.partition(":")
    token: bytes | None
    if kind == "id_number":
        label, token, subject_type, subject_id = "身份证号", elder.id_number_enc, "elder", elder.id
    elif kind in ("phone", "contact") and raw_id.isdigit():
        if kind == "phone":
            row: ElderPhone | Contact | None = session.scalar(
                select(ElderPhone).where(ElderPhone.id == int(raw_id), ElderPhone.elder_id == elder.id))
            token = row.number_enc if isinstance(row, ElderPhone) else None
            label, subject_type = "电话", "elder_phone"
        else:
            row = session.scalar(select(Contact).where(Contact.id == int(raw_id), Contact.elder_id == elder.id))
            token = row.phone_enc if isinstance(row, Contact) else None
            label = f"{row.relation}{row.name}的电话" if isinstance(row, Contact) else "联系人电话"
            subject_type = "contact"
        if row is None or token is None:
            raise NotFound("没有这个号码")
        subject_id = row.id
    else:
        raise InvalidInput("要查看的内容不正确（应为身份证号或某个电话）")
    assert token is not None
    value = vault.decrypt(token)
    append_audit(session, at=now, actor=principal.actor, action=f"reveal_{kind}", subject_type=subject_type,
                 subject_id=subject_id, elder_id=elder.id, detail=f"查看{label}", remote_addr=remote_addr)
    return Revealed(label, value)


def open_recording(session: Session, principal: Principal, recordings_dir: Path, call_id: int, now: datetime,  # noqa: PLR0917
                   remote_addr: str | None = None) -> Path:
    """The recording's file, if the call is in scope and the file lies inside the recordings dir."""
    call = scoped_call(session, principal, call_id)
    if call is None or not call.recording_path:
        raise NotFound("没有这段录音（或不在您的管辖范围）")
    base = recordings_dir.resolve()
    path = Path(call.recording_path)
    path = (path if path.is_absolute() else base / path).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        raise NotFound("录音文件不存在或已按保留期限删除")
    append_audit(session, at=now, actor=principal.actor, action="play_recording", subject_type="call",
                 subject_id=call.id, elder_id=call.elder_id, detail="收听通话录音", remote_addr=remote_addr)
    return path


def change_consent(session: Session, principal: Principal, elder_id: int, status: ConsentStatus, now: datetime,  # noqa: PLR0917
                   note: str | None, deletion_after: timedelta, remote_addr: str | None = None) -> ConsentChange:
    """Record consent or its withdrawal for an elder in scope. Anyone in scope may record a
    withdrawal (it only stops processing); recording consent is for officers and admins."""
    if scoped_elder(session, principal, elder_id) is None:
        raise NotFound("没有找到这位老人（或不在您的管辖范围）")
    if status is ConsentStatus.GRANTED and not principal.can_manage:
        raise Forbidden("登记同意须由民政干部或管理员办理")
    try:
        return set_consent(session, elder_id, status, now, actor=principal.actor, by=principal.name, note=note,
                           deletion_after=deletion_after, remote_addr=remote_addr)
    except PrivacyError as exc:
        raise InvalidInput(str(exc)) from exc


def export_personal_data(session: Session, principal: Principal, vault: Vault, elder_id: int, now: datetime,  # noqa: PLR0917
                         remote_addr: str | None = None) -> dict[str, Any]:
    """An access request's copy of everything held about the elder (admins only; audited)."""
    if scoped_elder(session, principal, elder_id) is None:
        raise NotFound("没有找到这位老人（或不在您的管辖范围）")
    if not principal.is_admin:
        raise Forbidden("只有管理员可以导出老人的个人信息")
    return export_elder(session, vault, elder_id, now, actor=principal.actor, remote_addr=remote_addr)
