"""Calls only with recorded consent; withdrawal stops calls at once and schedules erasure.

The service is voluntary: an elder whose consent is unknown or withdrawn is never planned or
dialled automatically (only the SOS call-back and emergency calls are exempt), but staff still
owe disabled elders their monthly home visit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import load_policy
from scheduler.planner import plan_range
from scheduler.queue import ConsentMissing, Queue, RequestKind
from storage.enums import CheckInStatus, ConsentStatus
from storage.models.checkin import CheckIn, CheckInTransition
from storage.models.elder import Elder
from storage.models.escalation import AuditLog
from storage.models.schedule import HomeVisitTask
from tanfang.cli import main

POL = load_policy()
NOW = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # 09:00 Beijing


def _consents(sessions: sessionmaker[Session]) -> dict[int, ConsentStatus]:
    with sessions() as s:
        return dict(s.execute(select(Elder.id, Elder.consent_status)).tuples().all())


def _planned_elders(sessions: sessionmaker[Session]) -> set[int]:
    with sessions() as s:
        return set(s.scalars(select(CheckIn.elder_id).distinct()))


def test_sample_is_mostly_consented_and_only_consented_elders_are_planned(cli_sessions: sessionmaker[Session]) -> None:
    consents = _consents(cli_sessions)
    granted = {e for e, c in consents.items() if c is ConsentStatus.GRANTED}
    assert len(consents) == 50 and len(granted) >= 40 and len(granted) < 50  # some unknown: the real case
    plan_range(cli_sessions, NOW, NOW + timedelta(days=31), NOW, POL)
    planned = _planned_elders(cli_sessions)
    assert planned and planned <= granted
    # Disabled elders without consent are still owed their home visit (staff, not robots).
    with cli_sessions() as s:
        tasks = set(s.scalars(select(HomeVisitTask.elder_id)))
    assert tasks - granted or not (set(consents) - granted), "home-visit tasks ignore consent to calls"


def test_request_call_needs_consent_except_sos(cli_sessions: sessionmaker[Session]) -> None:
    consents = _consents(cli_sessions)
    unknown = next(e for e, c in consents.items() if c is ConsentStatus.UNKNOWN)
    q = Queue(cli_sessions, POL)
    with pytest.raises(ConsentMissing, match="未同意"):
        q.request_call(unknown, RequestKind.FAMILY_REQUEST, NOW, reason="家属请求", source="wechat:x")
    with pytest.raises(ConsentMissing):
        q.request_call(unknown, RequestKind.MANUAL, NOW, reason="手动", source="test")
    sos = q.request_call(unknown, RequestKind.SOS, NOW, reason="紧急按钮", source="device:1")
    assert sos.created


def test_claim_cancels_items_of_elders_without_consent(cli_sessions: sessionmaker[Session]) -> None:
    """Items planned before consent was withdrawn (or before this rule) are never dialled."""
    consents = _consents(cli_sessions)
    granted = [e for e, c in consents.items() if c is ConsentStatus.GRANTED]
    plan_range(cli_sessions, NOW, NOW + timedelta(days=31), NOW, POL)
    victim = granted[0]
    with cli_sessions() as s, s.begin():  # a raw change, as if consent changed behind the planner's back
        s.execute(update(Elder).where(Elder.id == victim).values(consent_status=ConsentStatus.UNKNOWN))
        s.execute(update(CheckIn).where(CheckIn.elder_id == victim)
                  .values(status=CheckInStatus.DUE, next_attempt_at=NOW - timedelta(minutes=1), priority=0))
    q = Queue(cli_sessions, POL)
    claimed = q.claim("w1", 50, timedelta(minutes=5), NOW + timedelta(hours=6))
    assert claimed and victim not in {c.elder_id for c in claimed}
    with cli_sessions() as s:
        statuses = set(s.scalars(select(CheckIn.status).where(CheckIn.elder_id == victim)))
    assert statuses == {CheckInStatus.CANCELLED}


def test_cli_withdraw_cancels_open_checkins_and_schedules_deletion(
        cli_sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]) -> None:
    consents = _consents(cli_sessions)
    elder = next(e for e, c in consents.items() if c is ConsentStatus.GRANTED)
    plan_range(cli_sessions, datetime.now(UTC), datetime.now(UTC) + timedelta(days=31), datetime.now(UTC), POL)
    with cli_sessions() as s:
        open_before = s.scalar(select(func.count()).select_from(CheckIn).where(
            CheckIn.elder_id == elder, CheckIn.status.in_([CheckInStatus.PLANNED, CheckInStatus.DUE])))
    assert open_before
    capsys.readouterr()
    assert main(["elder", "consent", str(elder), "--withdraw", "--by", "本人电话告知"]) == 0
    out = capsys.readouterr().out
    assert f"取消待拨 {open_before} 个" in out and "删除" in out
    with cli_sessions() as s:
        e = s.get(Elder, elder)
        assert e is not None and e.consent_status is ConsentStatus.WITHDRAWN and e.consent_by == "本人电话告知"
        assert e.deletion_due_at is not None
        assert timedelta(days=29) < e.deletion_due_at - datetime.now(UTC) <= timedelta(days=30)
        left = set(s.scalars(select(CheckIn.status).where(CheckIn.elder_id == elder)))
        assert left == {CheckInStatus.CANCELLED}
        notes = set(s.scalars(select(CheckInTransition.note).join(CheckIn).where(CheckIn.elder_id == elder,
                                                                                 CheckInTransition.to_status == CheckInStatus.CANCELLED)))
        assert notes == {"老人撤回同意，停止自动电话"}
        audit = s.scalars(select(AuditLog).where(AuditLog.elder_id == elder)).all()
        assert [a.action for a in audit] == ["consent_withdrawn"]
    # the next planner run plans nothing for them
    plan_range(cli_sessions, datetime.now(UTC), datetime.now(UTC) + timedelta(days=31), datetime.now(UTC), POL)
    with cli_sessions() as s:
        assert set(s.scalars(select(CheckIn.status).where(CheckIn.elder_id == elder))) == {CheckInStatus.CANCELLED}
    # granting again cancels the erasure
    assert main(["elder", "consent", str(elder), "--grant"]) == 0
    with cli_sessions() as s:
        e = s.get(Elder, elder)
        assert e is not None and e.consent_status is ConsentStatus.GRANTED and e.deletion_due_at is None


def test_cli_consent_errors(cli_db: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["elder", "consent", "99999", "--withdraw"]) == 2
    assert "没有编号为 99999 的老人" in capsys.readouterr().err
    assert main(["elder", "export", "1", "--out", str(tmp_path / "x.txt")]) == 2
    assert ".json" in capsys.readouterr().err
