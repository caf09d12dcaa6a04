"""Retention purge (recordings, transcripts), erasure after withdrawal, data export, and the
tamper-evident audit log — all through the ``tanfang`` command."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from storage.crypto import Vault
from storage.enums import ConsentStatus, ElderStatus, VisitKind
from storage.models.checkin import CallAttempt
from storage.models.elder import Contact, Elder, ElderPhone, Profile
from storage.models.escalation import AuditLog, Visit
from tanfang.cli import main


def _consented(sessions: sessionmaker[Session]) -> list[int]:
    with sessions() as s:
        return list(s.scalars(select(Elder.id).where(Elder.consent_status == ConsentStatus.GRANTED)
                              .order_by(Elder.id)))


def _call(s: Session, elder: int, started: datetime, rec: str | None) -> int:
    c = CallAttempt(elder_id=elder, started_at=started, recording_path=rec, digits="12",
                    transcript=[{"who": "elder", "text": "老寒腿又犯了"}], dialog_result={"said": "老寒腿"})
    s.add(c)
    s.flush()
    return c.id


def test_purge_dry_run_then_real(cli_sessions: sessionmaker[Session], settings_env: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    rec_dir = settings_env / "recordings"
    (rec_dir / "old").mkdir(parents=True)
    (rec_dir / "old" / "a.wav").write_bytes(b"RIFF")
    (rec_dir / "new.wav").write_bytes(b"RIFF")
    orphan = rec_dir / "orphan.wav"
    orphan.write_bytes(b"RIFF")
    old_time = (now - timedelta(days=200)).timestamp()
    os.utime(orphan, (old_time, old_time))
    outside = settings_env / "keep.wav"
    outside.write_bytes(b"RIFF")
    e = _consented(cli_sessions)[0]
    with cli_sessions() as s, s.begin():
        old_rec = _call(s, e, now - timedelta(days=91), "old/a.wav")
        new_rec = _call(s, e, now - timedelta(days=5), "new.wav")
        escape = _call(s, e, now - timedelta(days=120), "../keep.wav")  # never deletes outside the folder
        old_txt = _call(s, e, now - timedelta(days=400), None)
    capsys.readouterr()
    assert main(["purge", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"dry_run": True, "recordings": 2, "recording_files": 0,
                                                    "transcripts": 1, "erased_elders": [], "orphan_files": 0}
    assert (rec_dir / "old" / "a.wav").exists() and orphan.exists()
    with cli_sessions() as s:
        assert s.get(CallAttempt, old_txt).transcript  # type: ignore[union-attr]
    assert main(["purge"]) == 0
    out = capsys.readouterr().out
    assert "已删除录音 2 段（文件 1 个）" in out and "已清除通话文字记录 1 条" in out and "无记录的过期录音文件 1 个" in out
    assert not (rec_dir / "old" / "a.wav").exists() and (rec_dir / "new.wav").exists() and not orphan.exists()
    assert outside.exists()
    with cli_sessions() as s:
        assert s.get(CallAttempt, old_rec).recording_path is None  # type: ignore[union-attr]
        assert s.get(CallAttempt, escape).recording_path is None  # type: ignore[union-attr]
        assert s.get(CallAttempt, new_rec).recording_path == "new.wav"  # type: ignore[union-attr]
        gone = s.get(CallAttempt, old_txt)
        assert gone is not None and gone.transcript == [] and gone.dialog_result == {} and gone.digits is None
        assert s.get(CallAttempt, new_rec).transcript  # type: ignore[union-attr]
        assert s.scalar(select(AuditLog.action).order_by(AuditLog.seq.desc()).limit(1)) == "retention_purge"
    assert main(["purge", "--json"]) == 0  # idempotent
    assert json.loads(capsys.readouterr().out)["recordings"] == 0


def test_withdrawal_then_erasure_when_due(cli_sessions: sessionmaker[Session], cli_vault: Vault, settings_env: Path,
                                         capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    e = _consented(cli_sessions)[1]
    now = datetime.now(UTC)
    with cli_sessions() as s, s.begin():
        idn = cli_vault.decrypt(s.get(Elder, e).id_number_enc)  # type: ignore[union-attr]
        phones = [cli_vault.decrypt(p.number_enc) for p in s.scalars(select(ElderPhone).where(ElderPhone.elder_id == e))]
        _call(s, e, now - timedelta(days=1), None)
        s.add(Visit(elder_id=e, kind=VisitKind.HOME, visited_at=now, recorded_at=now, notes="说腰疼"))
    assert main(["elder", "consent", str(e), "--withdraw"]) == 0
    assert main(["purge", "--json"]) == 0  # not yet due
    capsys.readouterr()
    with cli_sessions() as s, s.begin():
        s.execute(update(Elder).where(Elder.id == e).values(deletion_due_at=now - timedelta(minutes=1)))
    assert main(["purge", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["erased_elders"] == [e]
    assert main(["purge", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["erased_elders"] == [e]
    with cli_sessions() as s:
        el = s.get(Elder, e)
        assert el is not None and el.erased_at is not None and el.name == "（已删除）"
        assert el.address is None and el.birth_date is None and el.status is ElderStatus.INACTIVE
        for model in (ElderPhone, Contact, Profile):
            assert s.scalar(select(func.count()).select_from(model).where(model.elder_id == e)) == 0  # type: ignore[attr-defined]
        assert all(c.transcript == [] for c in s.scalars(select(CallAttempt).where(CallAttempt.elder_id == e)))
        assert all(v.notes is None for v in s.scalars(select(Visit).where(Visit.elder_id == e)))
        actions = list(s.scalars(select(AuditLog.action).where(AuditLog.elder_id == e).order_by(AuditLog.seq)))
        assert actions == ["consent_withdrawn", "erase_personal_data"]
    # The export now holds nothing personal; no number of theirs is left anywhere in the database.
    out = tmp_path / "after.json"
    assert main(["elder", "export", str(e), "--out", str(out)]) == 0
    body = out.read_text(encoding="utf-8")
    for secret in (idn, *phones):
        assert secret not in body
    assert main(["elder", "consent", str(e), "--grant"]) == 2
    assert "已于撤回同意后删除" in capsys.readouterr().err


def test_export_has_everything_and_is_audited(cli_sessions: sessionmaker[Session], cli_vault: Vault,
                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    e = _consented(cli_sessions)[2]
    with cli_sessions() as s, s.begin():
        el = s.get(Elder, e)
        assert el is not None
        idn = cli_vault.decrypt(el.id_number_enc)
        contact_phones = [cli_vault.decrypt(c.phone_enc) for c in el.contacts if c.phone_enc]
        _call(s, e, datetime.now(UTC), None)
    out = tmp_path / "export" / "elder.json"
    assert main(["elder", "export", str(e), "--out", str(out)]) == 0
    assert "审计日志" in capsys.readouterr().out
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["elder"]["id_number"] == idn and data["elder"]["name"] == el.name
    assert [c["phone"] for c in data["contacts"] if c["phone"]] == contact_phones
    assert data["phones"] and all(p["number"] for p in data["phones"])
    assert data["calls"][0]["transcript"][0]["text"] == "老寒腿又犯了"
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert not any(k.endswith(("_enc", "_hash")) for k in data["elder"])
    with cli_sessions() as s:
        row = s.scalars(select(AuditLog).where(AuditLog.elder_id == e)).one()
        assert (row.actor, row.action) == ("cli", "export_personal_data")


def test_audit_verify_detects_update_and_delete(cli_sessions: sessionmaker[Session], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ids = _consented(cli_sessions)[:3]
    for e in ids:  # three audited actions → three chained rows
        assert main(["elder", "export", str(e), "--out", str(tmp_path / f"{e}.json")]) == 0
    capsys.readouterr()
    assert main(["audit", "verify"]) == 0
    assert "共 3 条" in capsys.readouterr().out
    # The ORM refuses changes outright ...
    with cli_sessions() as s, pytest.raises(PermissionError, match="只能追加"):
        row = s.scalars(select(AuditLog).where(AuditLog.seq == 2)).one()
        row.detail = "改过"
        s.flush()
    # ... a raw UPDATE gets past it, and verify names the row.
    with cli_sessions() as s, s.begin():
        s.execute(text("UPDATE audit_log SET actor = 'staff:99' WHERE seq = 2"))
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert "已被篡改" in out and "第 2 条内容被改动" in out
    with cli_sessions() as s, s.begin():
        s.execute(text("UPDATE audit_log SET actor = 'cli' WHERE seq = 2"))
    assert main(["audit", "verify"]) == 0
    capsys.readouterr()
    with cli_sessions() as s, s.begin():
        s.execute(delete(AuditLog).where(AuditLog.seq == 2))
    assert main(["audit", "verify"]) == 1
    assert "第 2 条缺失" in capsys.readouterr().out
