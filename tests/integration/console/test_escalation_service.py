"""The escalation service on a real database: idempotent creation, assignment by rota/region,
supervisor watchdog, emergency contact calls in order, resolution only with a recorded action."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.escalations import (
    EscalationError,
    EscalationSpec,
    Source,
    acknowledge,
    create_from_triage,
    record_contact_response,
    resolve,
    run_watchdog,
)
from scheduler.notify import AlertKind
from storage.crypto import Vault
from storage.enums import CheckInStatus, ContactKind, EscalationStatus, Severity, StaffRole
from storage.models.checkin import CallAttempt, CheckIn
from storage.models.elder import Contact, Elder
from storage.models.escalation import Alert, Escalation, ResolutionKind, RotaEntry
from storage.models.staff import Staff
from tests.integration.console.conftest import Clock
from tests.integration.console.world import World


def create(s: Session, world: World, clock: Clock, key: str, severity: Severity, source: str,
           reason: str = "需要上门看看") -> Escalation:
    elder = s.get(Elder, world.elders[key])
    assert elder is not None
    return create_from_triage(s, elder, EscalationSpec(severity, reason), Source(source), clock())


def test_creation_is_idempotent_per_source(sessions: sessionmaker[Session], world: World, clock: Clock) -> None:
    with sessions() as s, s.begin():
        a = create(s, world, clock, "li", Severity.P2, "checkin:7")
    with sessions() as s, s.begin():
        b = create(s, world, clock, "li", Severity.P2, "checkin:7")
    assert a.id == b.id
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Escalation)) == 1
        assert s.scalar(select(func.count()).select_from(Alert)) == 1


def test_assignment_follows_region_and_rota(sessions: sessionmaker[Session], world: World, clock: Clock) -> None:
    with sessions() as s, s.begin():
        zhang = create(s, world, clock, "zhang", Severity.P3, "a")  # 一村 has a visitor
        li = create(s, world, clock, "li", Severity.P3, "b")  # 二村 has none: 甲镇's officer
        wang = create(s, world, clock, "wang", Severity.P3, "c")  # 乙镇
        assert zhang.assignee_staff_id == world.staff["visitor1"]
        assert li.assignee_staff_id == world.staff["jia"]
        assert wang.assignee_staff_id == world.staff["yi"]
        # a rota for 二村 (the county officer on duty) wins over the fallback
        s.add(RotaEntry(region_id=world.regions["230125001002"], staff_id=world.staff["county"], position=0))
        grid = Contact(elder_id=world.elders["li"], name="网格员刘", relation="网格员", kind=ContactKind.GRID_WORKER,
                       position=5)
        s.add(grid)
        s.flush()
        s.expire_all()
        li2 = create(s, world, clock, "li", Severity.P3, "d")
        assert li2.assignee_staff_id == world.staff["county"]
        assert li2.assignee_contact_id == grid.id
        assert [e.kind for e in li2.events] == ["created", "assigned"]
        alert = s.scalar(select(Alert).where(Alert.escalation_id == li2.id))
        assert alert is not None and alert.kind == AlertKind.ESCALATION_ASSIGNED
        assert alert.recipient_id == world.staff["county"] and "李秀英" in alert.title


def test_watchdog_raises_late_acknowledgement_to_the_supervisor(sessions: sessionmaker[Session], world: World,
                                                                clock: Clock) -> None:
    with sessions() as s, s.begin():
        esc_id = create(s, world, clock, "zhang", Severity.P2, "x").id
    assert run_watchdog(sessions, clock).raised == []
    clock.advance(hours=24, minutes=1)
    assert run_watchdog(sessions, clock).raised == [esc_id]
    with sessions() as s:
        esc = s.get(Escalation, esc_id)
        assert esc is not None and esc.assignee_staff_id == world.staff["jia"] and esc.escalation_level == 1
        assert esc.ack_deadline_at == clock() + timedelta(minutes=Severity.P2.ack_minutes)
        overdue = s.scalars(select(Alert).where(Alert.kind == AlertKind.ESCALATION_OVERDUE)).all()
        assert [a.recipient_id for a in overdue] == [world.staff["jia"]]
    assert run_watchdog(sessions, clock).raised == []  # fresh window for the supervisor
    clock.advance(hours=24, minutes=1)
    run_watchdog(sessions, clock)
    with sessions() as s:
        esc = s.get(Escalation, esc_id)
        assert esc is not None and esc.assignee_staff_id == world.staff["county"] and esc.escalation_level == 2
        # acknowledged cases are not raised
        staff = s.get(Staff, world.staff["county"])
        assert staff is not None and staff.role is StaffRole.COUNTY_OFFICER
    with sessions() as s, s.begin():
        esc = s.get(Escalation, esc_id)
        staff = s.get(Staff, world.staff["county"])
        assert esc is not None and staff is not None
        acknowledge(s, esc, staff, clock())
    clock.advance(days=3)
    assert run_watchdog(sessions, clock).raised == []


def _finish_contact_call(sessions: sessionmaker[Session], clock: Clock, digits: str | None) -> CheckIn:
    with sessions() as s, s.begin():
        ci = s.scalar(select(CheckIn).where(CheckIn.kind == "emergency_contact", CheckIn.status == CheckInStatus.DUE))
        assert ci is not None
        ci.status = CheckInStatus.DONE if digits is not None else CheckInStatus.UNREACHED
        ci.completed_at = clock()
        s.add(CallAttempt(checkin_id=ci.id, elder_id=ci.elder_id, started_at=clock(), digits=digits))
        return ci


def test_emergency_calls_contacts_in_order_until_one_accepts(sessions: sessionmaker[Session], world: World,
                                                             clock: Clock) -> None:
    with sessions() as s, s.begin():
        esc_id = create(s, world, clock, "zhang", Severity.P1, "checkin:99", reason="摔倒了起不来").id
    with sessions() as s:
        calls = s.scalars(select(CheckIn).where(CheckIn.kind == "emergency_contact")).all()
        assert len(calls) == 1
        first = calls[0]
        assert first.dialog_flags["contact_id"] == world.contacts["zhang"][0]
        assert "按1表示您马上去处理" in first.dialog_flags["prompt"] and "张桂兰" in first.dialog_flags["prompt"]
        assert first.ignore_call_window and first.priority == 0 and first.status is CheckInStatus.DUE
        kinds = {a.kind for a in s.scalars(select(Alert).where(Alert.escalation_id == esc_id))}
        assert AlertKind.EMERGENCY in kinds
    _finish_contact_call(sessions, clock, "2")  # the son cannot go
    run_watchdog(sessions, clock)
    with sessions() as s:
        due = s.scalars(select(CheckIn).where(CheckIn.kind == "emergency_contact",
                                              CheckIn.status == CheckInStatus.DUE)).all()
        assert [c.dialog_flags["contact_id"] for c in due] == [world.contacts["zhang"][1]]
    _finish_contact_call(sessions, clock, "1")  # the daughter accepts
    run_watchdog(sessions, clock)
    with sessions() as s:
        esc = s.get(Escalation, esc_id)
        assert esc is not None and esc.accepted_contact_id == world.contacts["zhang"][1]
        assert [e.kind for e in esc.events if e.kind.startswith("contact")] == [
            "contact_call_queued", "contact_declined", "contact_call_queued", "contact_accepted"]
        assert s.scalar(select(func.count()).select_from(CheckIn).where(CheckIn.kind == "emergency_contact")) == 2


def test_emergency_contacts_exhausted_alerts_duty(sessions: sessionmaker[Session], world: World, clock: Clock) -> None:
    with sessions() as s, s.begin():
        esc_id = create(s, world, clock, "wang", Severity.P1, "sos:1", reason="喘不上气").id
    _finish_contact_call(sessions, clock, None)
    run_watchdog(sessions, clock)
    with sessions() as s, s.begin():
        ci = s.scalar(select(CheckIn).where(CheckIn.kind == "emergency_contact", CheckIn.status == CheckInStatus.DUE))
        assert ci is not None
        record_contact_response(s, ci, False, clock())  # the dialer reports directly
    with sessions() as s:
        esc = s.get(Escalation, esc_id)
        assert esc is not None and esc.contact_calls_exhausted and esc.accepted_contact_id is None
        duty = s.scalars(select(Alert).where(Alert.escalation_id == esc_id, Alert.kind == AlertKind.EMERGENCY)).all()
        assert any("均未接受" in a.title for a in duty)


def test_resolution_requires_a_recorded_action(sessions: sessionmaker[Session], world: World, clock: Clock,
                                               vault: Vault) -> None:
    with sessions() as s, s.begin():
        esc = create(s, world, clock, "li", Severity.P3, "r")
        staff = s.get(Staff, world.staff["jia"])
        assert staff is not None
        with pytest.raises(EscalationError, match="必须先登记"):
            resolve(s, esc, staff, clock(), ResolutionKind.VISIT)
        with pytest.raises(EscalationError, match="转介"):
            resolve(s, esc, staff, clock(), ResolutionKind.REFERRAL, note="  ")
        acknowledge(s, esc, staff, clock())
        with pytest.raises(EscalationError, match="不能认领"):
            acknowledge(s, esc, staff, clock())
        resolve(s, esc, staff, clock(), ResolutionKind.REFERRAL, note="已转镇卫生院上门")
        assert esc.status is EscalationStatus.RESOLVED and esc.resolution_note == "已转镇卫生院上门"
        with pytest.raises(EscalationError, match="已解决"):
            resolve(s, esc, staff, clock(), ResolutionKind.REFERRAL, note="again")


def test_resolving_an_emergency_cancels_pending_contact_calls(sessions: sessionmaker[Session], world: World,
                                                              clock: Clock) -> None:
    with sessions() as s, s.begin():
        esc = create(s, world, clock, "li", Severity.P1, "sos:2", reason="着火了")
        staff = s.get(Staff, world.staff["jia"])
        assert staff is not None
        resolve(s, esc, staff, clock(), ResolutionKind.REFERRAL, note="119 已到场，老人安全")
    with sessions() as s:
        ci = s.scalar(select(CheckIn).where(CheckIn.kind == "emergency_contact"))
        assert ci is not None and ci.status is CheckInStatus.CANCELLED
        assert [t.to_status for t in ci.transitions] == [CheckInStatus.CANCELLED]
