"""Personal-data duties (PIPL): consent and its withdrawal, retention purge, erasure, data export.

- :func:`set_consent` records consent. Withdrawal stops automated calls at once (open check-ins
  are cancelled; the planner and ``queue.request_call`` skip elders without granted consent) and
  schedules erasure ``deletion_after`` later. Granting again before then cancels the erasure.
- :func:`purge` (daily job, ``tanfang purge``) removes call recordings and transcripts past their
  retention periods and erases elders whose deletion date has come.
- :func:`export_elder` gathers everything held about one elder (an access request).

Every change writes an audit row (``storage.models.escalation.append_audit``) in the same
transaction. Erasure keeps the anonymous rows that monthly statistics count (check-ins, visits,
escalations) but removes names, numbers, addresses, the five knowns, free text and recordings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Text, cast, delete, select, update
from sqlalchemy.orm import Session

from scheduler.queue import CLAIMABLE, cancel
from storage.crypto import Vault
from storage.enums import ConsentStatus, ElderStatus
from storage.models.checkin import CallAttempt, CheckIn
from storage.models.elder import Contact, Elder, ElderPhone, Profile
from storage.models.escalation import Alert, AuditLog, Escalation, EscalationEvent, Visit, append_audit
from storage.models.schedule import DeviceSignal, DeviceToken
from storage.models.wechat import WechatBinding, WechatBindingCode

log = logging.getLogger(__name__)

ERASED_NAME = "（已删除）"


class PrivacyError(Exception):
    """An operator error; the message (Chinese) names what is wrong."""


@dataclass(frozen=True)
class ConsentChange:
    elder_id: int
    status: ConsentStatus
    cancelled_checkins: int
    deletion_due_at: datetime | None


def set_consent(
    session: Session, elder_id: int, status: ConsentStatus, now: datetime, *, actor: str,
    by: str | None = None, note: str | None = None, deletion_after: timedelta = timedelta(days=30),
    remote_addr: str | None = None,
) -> ConsentChange:
    """Record the elder's consent (``granted``) or its withdrawal (``withdrawn``), in one transaction."""
    if status is ConsentStatus.UNKNOWN:
        raise PrivacyError("只能登记“同意”或“撤回同意”")
    elder = session.get(Elder, elder_id)
    if elder is None:
        raise PrivacyError(f"没有编号为 {elder_id} 的老人")
    if elder.erased_at is not None:
        raise PrivacyError(f"老人 {elder_id} 的个人信息已于撤回同意后删除，需重新登记建档")
    elder.consent_status = status
    elder.consent_at = now
    elder.consent_by = (by or actor)[:100]
    elder.consent_note = (note or "")[:255] or None
    cancelled = 0
    if status is ConsentStatus.WITHDRAWN:
        elder.deletion_due_at = now + deletion_after
        open_ids = list(session.scalars(select(CheckIn.id).where(CheckIn.elder_id == elder_id,
                                                                 CheckIn.status.in_(CLAIMABLE))))
        cancelled = cancel(session, open_ids, now, actor[:64], "老人撤回同意，停止自动电话")
        action, detail = "consent_withdrawn", f"撤回同意；取消待拨 {cancelled} 个；{elder.deletion_due_at:%Y-%m-%d} 删除个人信息"
    else:
        elder.deletion_due_at = None
        action, detail = "consent_granted", "登记同意接受电话探访"
    append_audit(session, at=now, actor=actor[:64], action=action, subject_type="elder", subject_id=elder.id,
                 elder_id=elder.id, detail=detail[:255], remote_addr=remote_addr)
    log.info("consent recorded", extra={"action": action, "elder_id": elder.id, "cancelled": cancelled})
    return ConsentChange(elder.id, status, cancelled, elder.deletion_due_at)


# -- retention purge and erasure -----------------------------------------------------------

@dataclass(frozen=True)
class Retention:
    recordings_dir: Path | None
    recording_days: int = 90
    transcript_days: int = 365


@dataclass
class PurgeReport:
    dry_run: bool
    recordings: int = 0  # calls whose recording was (or would be) deleted
    recording_files: int = 0  # files actually removed
    transcripts: int = 0
    erased_elders: list[int] = field(default_factory=list)

    def summary(self) -> str:
        verb = "将" if self.dry_run else "已"
        return (f"{verb}删除录音 {self.recordings} 段（文件 {self.recording_files} 个）、"
                f"{verb}清除通话文字记录 {self.transcripts} 条、{verb}删除 {len(self.erased_elders)} 位撤回同意老人的个人信息")

    def as_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "recordings": self.recordings, "recording_files": self.recording_files,
                "transcripts": self.transcripts, "erased_elders": self.erased_elders}


def _recording_file(base: Path | None, raw: str) -> Path | None:
    """The recording's file if it lies inside the recordings dir (never delete anything else)."""
    if base is None:
        return None
    root = base.resolve()
    p = Path(raw)
    p = (p if p.is_absolute() else root / p).resolve()
    return p if p.is_relative_to(root) else None


def _drop_recordings(session: Session, base: Path | None, where: Any, dry_run: bool) -> tuple[int, int]:
    if base is None:  # without the folder a file cannot be found, so its reference is kept
        return 0, 0
    rows = session.execute(select(CallAttempt.id, CallAttempt.recording_path)
                           .where(CallAttempt.recording_path.is_not(None), where)).all()
    files = 0
    if dry_run or not rows:
        return len(rows), 0
    for _id, raw in rows:
        path = _recording_file(base, raw)
        if path is not None and path.is_file():
            path.unlink()
            files += 1
    session.execute(update(CallAttempt).where(CallAttempt.id.in_([r[0] for r in rows]))
                    .values(recording_path=None))
    return len(rows), files


def _clear_transcripts(session: Session, where: Any, dry_run: bool) -> int:
    has_text = cast(CallAttempt.transcript, Text).not_in(("[]", "null"))
    ids = list(session.scalars(select(CallAttempt.id).where(where, has_text)))
    if ids and not dry_run:
        session.execute(update(CallAttempt).where(CallAttempt.id.in_(ids))
                        .values(transcript=[], dialog_result={}, digits=None))
    return len(ids)


def erase_elder(session: Session, elder_id: int, now: datetime, *, retention: Retention, actor: str = "system",
                reason: str = "撤回同意后到期删除") -> None:
    """Anonymise one elder: names, numbers, address, profile, contacts, bindings, free text, recordings."""
    elder = session.get(Elder, elder_id)
    if elder is None or elder.erased_at is not None:
        return
    _drop_recordings(session, retention.recordings_dir, CallAttempt.elder_id == elder_id, dry_run=False)
    session.execute(update(CallAttempt).where(CallAttempt.elder_id == elder_id)
                    .values(transcript=[], dialog_result={}, digits=None, target_masked=None))
    session.execute(update(Visit).where(Visit.elder_id == elder_id).values(notes=None, profile_updates={}))
    esc_ids = list(session.scalars(select(Escalation.id).where(Escalation.elder_id == elder_id)))
    if esc_ids:
        session.execute(update(Escalation).where(Escalation.id.in_(esc_ids))
                        .values(reason=ERASED_NAME, detail=None, resolution_note=None, assignee_contact_id=None,
                                accepted_contact_id=None))
        session.execute(update(EscalationEvent).where(EscalationEvent.escalation_id.in_(esc_ids))
                        .values(note=None, data={}))
    session.execute(update(Alert).where(Alert.elder_id == elder_id).values(title=ERASED_NAME, body=ERASED_NAME))
    for model in (WechatBinding, WechatBindingCode, DeviceSignal, DeviceToken):
        session.execute(delete(model).where(model.elder_id == elder_id))
    session.execute(delete(Contact).where(Contact.elder_id == elder_id))
    session.execute(delete(ElderPhone).where(ElderPhone.elder_id == elder_id))
    session.execute(delete(Profile).where(Profile.elder_id == elder_id))
    open_ids = list(session.scalars(select(CheckIn.id).where(CheckIn.elder_id == elder_id,
                                                             CheckIn.status.in_(CLAIMABLE))))
    cancel(session, open_ids, now, actor[:64], "个人信息已删除")
    session.expire(elder)
    elder = session.get(Elder, elder_id)
    assert elder is not None
    elder.name = ERASED_NAME
    elder.sex = None
    elder.birth_date = None
    elder.id_number_enc = b""
    elder.id_number_hash = f"erased:{elder_id}"[:32]
    elder.id_number_masked = "已删除"
    elder.address = None
    elder.note = None
    elder.call_windows = []
    elder.consent_note = None
    elder.pause_reason = None
    elder.status = ElderStatus.INACTIVE
    elder.erased_at = now
    elder.deletion_due_at = None
    append_audit(session, at=now, actor=actor[:64], action="erase_personal_data", subject_type="elder",
                 subject_id=elder_id, elder_id=elder_id, detail=reason[:255])
    log.info("elder erased", extra={"action": "erase_personal_data", "elder_id": elder_id})


def purge(session: Session, now: datetime, retention: Retention, *, dry_run: bool = False,
          actor: str = "system") -> PurgeReport:
    """Recordings and transcripts past retention, and erasures now due. One transaction (the caller's)."""
    rep = PurgeReport(dry_run=dry_run)
    rec_cut = now - timedelta(days=retention.recording_days)
    txt_cut = now - timedelta(days=retention.transcript_days)
    rep.recordings, rep.recording_files = _drop_recordings(session, retention.recordings_dir,
                                                           CallAttempt.started_at < rec_cut, dry_run)
    rep.transcripts = _clear_transcripts(session, CallAttempt.started_at < txt_cut, dry_run)
    due = list(session.scalars(select(Elder.id).where(Elder.deletion_due_at.is_not(None),
                                                      Elder.deletion_due_at <= now, Elder.erased_at.is_(None),
                                                      Elder.consent_status == ConsentStatus.WITHDRAWN)
                               .order_by(Elder.id)))
    rep.erased_elders = due
    if not dry_run:
        for eid in due:
            erase_elder(session, eid, now, retention=retention, actor=actor)
        if rep.recordings or rep.transcripts:
            append_audit(session, at=now, actor=actor[:64], action="retention_purge", subject_type="call",
                         subject_id=None, detail=rep.summary()[:255])
    log.info("privacy purge", extra={"action": "privacy_purge", "dry_run": dry_run, "recordings": rep.recordings,
                                     "transcripts": rep.transcripts, "erased": len(due)})
    return rep


# -- access request ------------------------------------------------------------------------

def _iso(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, (frozenset, set)):
        return sorted(str(x) for x in v)
    if hasattr(v, "value") and not isinstance(v, (int, str)):
        return v.value
    return v


def _row(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {c.key: _iso(getattr(obj, c.key)) for c in obj.__table__.columns
            if c.key not in skip and not c.key.endswith(("_enc", "_hash"))}


def export_elder(session: Session, vault: Vault, elder_id: int, now: datetime, *, actor: str,
                 remote_addr: str | None = None) -> dict[str, Any]:
    """Everything held about one elder, decrypted, as JSON-ready data; writes an audit row."""
    elder = session.get(Elder, elder_id)
    if elder is None:
        raise PrivacyError(f"没有编号为 {elder_id} 的老人")
    base = _row(elder)
    base["id_number"] = vault.decrypt(elder.id_number_enc) if elder.id_number_enc else None
    base["region"] = {"code": elder.region.code, "name": elder.region.name, "path": elder.region.path}
    phones = [_row(p) | {"number": vault.decrypt(p.number_enc)} for p in elder.phones]
    contacts = [_row(c) | {"phone": vault.decrypt(c.phone_enc) if c.phone_enc else None} for c in elder.contacts]
    checkins = session.scalars(select(CheckIn).where(CheckIn.elder_id == elder_id).order_by(CheckIn.id))
    calls = session.scalars(select(CallAttempt).where(CallAttempt.elder_id == elder_id).order_by(CallAttempt.id))
    visits = session.scalars(select(Visit).where(Visit.elder_id == elder_id).order_by(Visit.id))
    escs = list(session.scalars(select(Escalation).where(Escalation.elder_id == elder_id).order_by(Escalation.id)))
    bindings = session.scalars(select(WechatBinding).where(WechatBinding.elder_id == elder_id)
                               .order_by(WechatBinding.id))
    audit = session.scalars(select(AuditLog).where(AuditLog.elder_id == elder_id).order_by(AuditLog.seq))
    data = {
        "exported_at": now.isoformat(),
        "note": "依据《个人信息保护法》第四十五条，本文件列出本系统保存的该老人全部个人信息。",
        "elder": base,
        "phones": phones,
        "contacts": contacts,
        "profile": _row(elder.profile) if elder.profile else None,
        "checkins": [_row(c) for c in checkins],
        "calls": [_row(c) for c in calls],
        "visits": [_row(v) for v in visits],
        "escalations": [_row(e) | {"events": [_row(ev) for ev in e.events]} for e in escs],
        "wechat_bindings": [_row(b) for b in bindings],
        "access_log": [{"at": _iso(a.at), "actor": a.actor, "action": a.action, "detail": a.detail} for a in audit],
    }
    append_audit(session, at=now, actor=actor[:64], action="export_personal_data", subject_type="elder",
                 subject_id=elder_id, elder_id=elder_id, detail="导出个人信息副本（查阅复制请求）",
                 remote_addr=remote_addr)
    return data


__all__ = ["ConsentChange", "PrivacyError", "PurgeReport", "Retention", "erase_elder", "export_elder", "purge",
           "set_consent"]
