"""Escalation lifecycle through the pages: created from triage, queued, acknowledged, resolved by a home visit."""

from __future__ import annotations

from datetime import timedelta

from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.escalations import EscalationSpec, Source, create_from_triage
from storage.enums import EscalationStatus, Severity, VisitKind
from storage.models.checkin import CallAttempt, CheckIn
from storage.models.elder import Elder, Profile
from storage.models.escalation import AuditLog, Escalation, Visit, verify_audit_chain
from storage.models.schedule import HomeVisitTask
from tests.integration.console.conftest import Clock, login
from tests.integration.console.world import World


def make_escalation(sessions: sessionmaker[Session], world: World, clock: Clock, key: str = "zhang",
                    severity: Severity = Severity.P2, reason: str = "说有点头晕", source: str | None = None) -> int:
    with sessions() as s, s.begin():
        elder = s.get(Elder, world.elders[key])
        assert elder is not None
        esc = create_from_triage(s, elder, EscalationSpec(severity, reason), Source(source or f"test:{key}:{reason}"),
                                 clock())
        return esc.id


async def test_queue_ack_visit_resolve(client: TestClient, sessions: sessionmaker[Session], world: World,
                                       clock: Clock) -> None:
    with sessions() as s, s.begin():
        ci = CheckIn(elder_id=world.elders["zhang"], slot="2026-11-w3", kind="routine", due_at=clock(),
                     next_attempt_at=clock())
        s.add(ci)
        s.flush()
        s.add(CallAttempt(checkin_id=ci.id, elder_id=world.elders["zhang"], started_at=clock(),
                          transcript=[{"who": "system", "text": "您好，最近身体怎么样？"},
                                      {"who": "elder", "text": "有点头晕", "intent": "unwell"}]))
        s.add(HomeVisitTask(elder_id=world.elders["zhang"], month="2026-11", due_at=clock() + timedelta(days=10)))
    eid = make_escalation(sessions, world, clock)
    late = make_escalation(sessions, world, clock, key="li", severity=Severity.P1, reason="摔倒了")
    csrf = await login(client, "jia")
    page = await (await client.get("/escalations")).text()
    assert "张桂兰" in page and "李秀英" in page
    assert page.index("李秀英") < page.index("张桂兰")  # P1's deadline comes first
    clock.advance(minutes=20)  # the P1 is now past its 15-minute acknowledgement deadline
    page = await (await client.get("/escalations")).text()
    assert f'class="sev-P1 overdue" data-id="{late}"' in page
    detail = await (await client.get(f"/escalations/{eid}")).text()
    assert "有点头晕" in detail and "230125" not in detail.split("身份证号")[1][:40].replace("2301", "")
    r = await client.post(f"/escalations/{eid}/ack", data={"_csrf": csrf}, allow_redirects=False)
    assert r.status == 303
    with sessions() as s:
        esc = s.get(Escalation, eid)
        assert esc is not None and esc.status is EscalationStatus.ACKNOWLEDGED
        assert esc.acknowledged_by_id == world.staff["jia"]
    # resolving by referral needs a note
    r = await client.post(f"/escalations/{eid}/resolve", data={"_csrf": csrf, "note": " "})
    assert r.status == 400 and "转介" in await r.text()
    r = await client.post(f"/elders/{world.elders['zhang']}/visit", data={
        "_csrf": csrf, "kind": "home", "escalation_id": str(eid), "elder_seen": "1", "hazard_removed": "1",
        "home_hazards": "火炕裂缝、电线老化", "mobility": "半失能", "notes": "已请村里修炕"}, allow_redirects=False)
    assert r.status == 303, await r.text()
    with sessions() as s:
        esc = s.get(Escalation, eid)
        assert esc is not None and esc.status is EscalationStatus.RESOLVED and esc.resolution_kind == "visit"
        visit = s.scalar(select(Visit).where(Visit.escalation_id == eid))
        assert visit is not None and visit.kind is VisitKind.HOME and visit.hazard_removed
        prof = s.get(Profile, world.elders["zhang"])
        assert prof is not None and prof.home_hazards == ["火炕裂缝", "电线老化"] and prof.mobility == "半失能"
        task = s.scalar(select(HomeVisitTask).where(HomeVisitTask.elder_id == world.elders["zhang"]))
        assert task is not None and task.status == "closed" and task.visit_id == visit.id
        assert [e.kind for e in esc.events][-1] == "resolved"
        assert s.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == "update_profile")) == 1
        assert verify_audit_chain(s)[0]
    page = await (await client.get("/escalations?show=resolved")).text()
    assert "张桂兰" in page


async def test_bad_visit_input_writes_nothing(client: TestClient, sessions: sessionmaker[Session], world: World,
                                              clock: Clock) -> None:
    eid = make_escalation(sessions, world, clock)
    csrf = await login(client, "jia")
    r = await client.post(f"/elders/{world.elders['zhang']}/visit", data={
        "_csrf": csrf, "kind": "home", "escalation_id": str(eid), "mobility": "能跑能跳"})
    assert r.status == 400 and "自理能力只能是" in await r.text()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Visit)) == 0
        esc = s.get(Escalation, eid)
        assert esc is not None and esc.status is EscalationStatus.OPEN
