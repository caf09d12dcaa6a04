"""The monthly report on a constructed month: every number checked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from console.report import monthly_report
from storage.crypto import Vault
from storage.enums import CheckInStatus, ElderStatus, EscalationStatus, Outcome, Severity, VisitKind
from storage.models.checkin import CheckIn
from storage.models.elder import Elder
from storage.models.escalation import Escalation, Visit
from storage.models.region import Region
from tests.integration.console.conftest import Clock, api_login, login
from tests.integration.console.world import World

NOV = datetime(2026, 11, 1, tzinfo=UTC)


def checkin(s: Session, elder_id: int, slot: str, at: datetime, outcome: Outcome, kind: str = "routine") -> None:
    status = CheckInStatus.UNREACHED if outcome is Outcome.UNREACHED else CheckInStatus.DONE
    s.add(CheckIn(elder_id=elder_id, slot=slot, kind=kind, status=status, due_at=at, next_attempt_at=at,
                  outcome=outcome, completed_at=at))


def escalation(s: Session, world: World, key: str, severity: Severity, created: datetime, acked_after: timedelta | None,
               resolved_after: timedelta | None = None) -> None:
    elder = s.get(Elder, world.elders[key])
    assert elder is not None
    status = EscalationStatus.OPEN
    if acked_after is not None:
        status = EscalationStatus.ACKNOWLEDGED
    if resolved_after is not None:
        status = EscalationStatus.RESOLVED
    ack_deadline = created + timedelta(minutes=severity.ack_minutes)
    deadline = created + timedelta(hours={"P1": 2, "P2": 48, "P3": 168}[severity.value])
    s.add(Escalation(elder_id=elder.id, region_path=elder.region.path, severity=severity, reason="测试",
                     status=status, source_key=f"t:{key}:{created.isoformat()}", created_at=created,
                     ack_deadline_at=ack_deadline, deadline_at=deadline, due_at=ack_deadline,
                     acknowledged_at=created + acked_after if acked_after is not None else None,
                     resolved_at=created + resolved_after if resolved_after is not None else None))


@pytest.fixture
def month(sessions: sessionmaker[Session], world: World, vault: Vault) -> None:
    z, li, w = world.elders["zhang"], world.elders["li"], world.elders["wang"]
    with sessions() as s, s.begin():
        s.add(Visit(elder_id=z, staff_id=world.staff["visitor1"], kind=VisitKind.HOME, visited_at=NOV + timedelta(days=4)))
        checkin(s, li, "a", NOV + timedelta(days=9), Outcome.WELL)
        checkin(s, li, "b", NOV + timedelta(days=10), Outcome.UNREACHED)
        checkin(s, w, "c", NOV + timedelta(days=9), Outcome.UNREACHED)
        checkin(s, w, "d", NOV - timedelta(hours=9), Outcome.WELL)  # Oct 31 23:00 in Harbin: October
        checkin(s, w, "e", NOV + timedelta(days=3), Outcome.WELL, kind="emergency_contact")  # a call to his son
        # an inactive elder and one who joined the ledger in December are not target elders this month
        other = s.get(Elder, li)
        assert other is not None
        for i, (status, created) in enumerate([(ElderStatus.INACTIVE, NOV - timedelta(days=90)),
                                               (ElderStatus.ACTIVE, NOV + timedelta(days=31))]):
            e = Elder(name=f"外{i}", region_id=other.region_id, id_number_enc=b"x", id_number_hash=f"h{i}",
                      id_number_masked="****", status=status, created_at=created)
            s.add(e)
        escalation(s, world, "zhang", Severity.P1, NOV + timedelta(days=2), timedelta(minutes=10), timedelta(hours=1))
        escalation(s, world, "li", Severity.P2, NOV + timedelta(days=9), timedelta(hours=30))
        escalation(s, world, "wang", Severity.P3, NOV, None)
        escalation(s, world, "wang", Severity.P1, NOV - timedelta(days=3), timedelta(minutes=1), timedelta(hours=1))


def test_monthly_numbers(sessions: sessionmaker[Session], world: World, month: None) -> None:
    now = datetime(2026, 11, 20, tzinfo=UTC)
    with sessions() as s:
        county = s.scalar(select(Region).where(Region.code == "230125"))
        assert county is not None
        r = monthly_report(s, "2026-11", county, now)
    assert (r.overall.visited, r.overall.total, r.overall.remote, r.overall.home) == (2, 3, 1, 1)
    rates = {x.name: (x.rate.visited, x.rate.total) for x in r.by_region}
    assert rates == {"甲镇": (2, 2), "乙镇": (0, 1), "一村": (1, 1), "二村": (1, 1), "三村": (0, 1)}
    assert (r.by_category["失能"].visited, r.by_category["失能"].total) == (1, 1)
    assert (r.by_category["独居"].visited, r.by_category["独居"].total) == (1, 2)
    assert (r.by_category["空巢"].visited, r.by_category["空巢"].total) == (1, 1)
    assert r.by_category["重残"].total == 0
    assert (r.disabled_home.home, r.disabled_home.total) == (1, 1)
    e = r.escalations
    assert e.by_severity == {"P1": 1, "P2": 1, "P3": 1} and e.total == 3
    assert e.median_ack_minutes == 905.0  # median of 10 and 1800 minutes
    assert e.overdue == 2  # P2 acknowledged late, P3 never acknowledged
    assert e.open_past_deadline == 2
    with sessions() as s:
        town = s.scalar(select(Region).where(Region.code == "230125002"))
        assert town is not None
        r2 = monthly_report(s, "2026-11", town, now)
    assert (r2.overall.visited, r2.overall.total) == (0, 1) and [x.name for x in r2.by_region] == ["三村"]
    assert r2.escalations.total == 1


def test_cli_writes_the_workbook(sessions: sessionmaker[Session], world: World, month: None, db_url: str,
                                 settings_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tanfang.cli import main

    monkeypatch.setenv("TANFANG_DATABASE_URL", db_url)
    out = tmp_path / "r.xlsx"
    assert main(["report", "monthly", "--month", "2026-11", "--region", "230125", "--out", str(out)]) == 0
    wb = load_workbook(out)
    overview = {row[0]: row[1] for row in wb["概览"].iter_rows(min_row=3, values_only=True) if row[0]}
    assert overview["在册目标老人"] == 3 and overview["本月完成探访人数"] == 2
    assert overview["失能老人上门覆盖率"] == 1.0 and overview["超时事项"] == 2
    regions = {row[2]: row[3:6] for row in wb["按地区"].iter_rows(min_row=2, values_only=True)}
    assert regions["乙镇"] == (1, 0, 0.0)
    assert main(["report", "monthly", "--month", "2026/11", "--out", str(out)]) == 2
    assert main(["report", "monthly", "--month", "2026-11", "--region", "999", "--out", str(out)]) == 2


async def test_console_report_changes_with_a_visit(client: TestClient, sessions: sessionmaker[Session], world: World,
                                                   clock: Clock, month: None) -> None:
    csrf = await login(client, "jia")
    page = await (await client.get("/report?month=2026-11")).text()
    assert "<svg" in page and "100.0%" in page  # 甲镇: both of its elders visited
    await api_login(client, "county")
    data = await (await client.get("/api/reports/monthly?month=2026-11")).json()
    assert data["overall"]["visited"] == 2
    csrf = await login(client, "yi")
    r = await client.post(f"/elders/{world.elders['wang']}/visit", data={"_csrf": csrf, "kind": "phone"},
                          allow_redirects=False)
    assert r.status == 303
    page = await (await client.get("/report?month=2026-11")).text()
    assert 'id="visit-rate">100.0%' in page
    xlsx = await client.get("/report.xlsx?month=2026-11")
    assert xlsx.status == 200 and xlsx.headers["Content-Type"].startswith("application/vnd.openxmlformats")
    r = await client.get("/report?month=2026-99")
    assert r.status == 400
