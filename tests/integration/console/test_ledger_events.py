"""Ledger upload (the CLI's importer: same counts, same row-level errors) and lockdown events."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from console.app import mount
from console.auth import hash_password
from console.config import ConsoleConfig
from storage.crypto import Vault
from storage.db import transaction
from storage.enums import StaffRole
from storage.ledger.importer import import_ledger
from storage.models.elder import Elder
from storage.models.region import Region
from storage.models.schedule import SurgeEvent
from storage.models.staff import Staff
from storage.regions import import_regions, load_region_file
from tests.conftest import SAMPLES
from tests.integration.console.conftest import Clock, api_login, login
from tests.unit.ledger.files import HEADER, ident, row, write_csv

NOW = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
async def county_client(sessions: sessionmaker[Session], vault: Vault, tmp_path: Path) -> AsyncIterator[TestClient]:
    with transaction(sessions) as s:
        import_regions(s, load_region_file(SAMPLES / "regions.yaml"))
        county = s.scalar(select(Region).where(Region.code == "230183"))
        town = s.scalar(select(Region).where(Region.parent_id == county.id).order_by(Region.code)) if county else None
        assert county is not None and town is not None
        pw = hash_password("correct-horse-9")
        s.add(Staff(name="县干部", role=StaffRole.COUNTY_OFFICER, region_id=county.id, username="c", password_hash=pw))
        s.add(Staff(name="镇干部", role=StaffRole.TOWNSHIP_OFFICER, region_id=town.id, username="t", password_hash=pw))
    app = web.Application()
    mount(app, sessions=sessions, vault=vault, now=Clock(NOW),
          config=ConsoleConfig(recordings_dir=tmp_path, upload_dir=tmp_path / "uploads"))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


def bad_csv(tmp_path: Path) -> bytes:
    bad_id = ident(2)[:17] + ("3" if ident(2)[17] != "3" else "4")
    path = write_csv(tmp_path / "bad.csv", [["标题"], HEADER, row(1), row(2, 身份证号=bad_id), row(3, 出生日期="1944-01-01"),
                                            row(1)], encoding="gbk")
    return path.read_bytes()


async def test_upload_reports_the_clis_row_errors_and_writes_nothing(county_client: TestClient, sessions: sessionmaker[Session],
                                                                     vault: Vault, tmp_path: Path) -> None:
    data = bad_csv(tmp_path)
    cli = import_ledger(io.BytesIO(data), sessions=sessions, vault=vault, now=lambda: NOW, filename="bad.csv",
                        dry_run=True)
    assert len(cli.errors) == 3
    csrf = await login(county_client, "c")
    form = FormData()
    form.add_field("_csrf", csrf)
    form.add_field("file", data, filename="bad.csv", content_type="text/csv")
    r = await county_client.post("/ledger", data=form)
    page = await r.text()
    assert r.status == 422 and "没有导入任何数据" in page
    for e in cli.errors:
        assert f"<td>{e.row}</td><td>{e.column}</td><td>{e.value}</td><td>{e.reason}</td>" in page
    api_csrf = await api_login(county_client, "c")
    form = FormData()
    form.add_field("file", data, filename="bad.csv", content_type="text/csv")
    r = await county_client.post("/api/ledger", data=form, headers={"X-CSRF-Token": api_csrf})
    assert r.status == 422
    assert (await r.json())["errors"] == [e.as_dict() for e in cli.errors]
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Elder)) == 0


async def test_upload_imports_the_sample(county_client: TestClient, sessions: sessionmaker[Session], tmp_path: Path) -> None:
    csrf = await login(county_client, "c")
    form = FormData()
    form.add_field("_csrf", csrf)
    form.add_field("file", (SAMPLES / "ledger_sample.xlsx").read_bytes(), filename="ledger_sample.xlsx")
    r = await county_client.post("/ledger", data=form)
    page = await r.text()
    assert r.status == 200 and "新增 50 人" in page, page[-2000:]
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Elder)) == 50
    assert len(list((tmp_path / "uploads").iterdir())) == 1
    # the township officer may not import
    csrf = await login(county_client, "t")
    assert "台账导入" not in await (await county_client.get("/escalations")).text()


async def test_declare_and_end_a_lockdown(county_client: TestClient, sessions: sessionmaker[Session]) -> None:
    csrf = await login(county_client, "t")
    page = await (await county_client.get("/events")).text()
    code = page.split('<select name="region" required><option value="')[1].split('"')[0]
    r = await county_client.post("/events/lockdown", data={"_csrf": csrf, "region": code, "title": "临时封控",
                                                           "days": "7"}, allow_redirects=False)
    assert r.status == 303
    with sessions() as s:
        ev = s.scalar(select(SurgeEvent))
        assert ev is not None and ev.status == "active" and ev.created_by.startswith("staff:")
        event_id = ev.id
    page = await (await county_client.get("/events")).text()
    assert "临时封控" in page and "进行中" in page
    await api_login(county_client, "c")
    items = (await (await county_client.get("/api/events")).json())["items"]
    assert [i["title"] for i in items] == ["临时封控"] and items[0]["can_end"]
    csrf = await login(county_client, "t")
    r = await county_client.post(f"/events/{event_id}/end", data={"_csrf": csrf}, allow_redirects=False)
    assert r.status == 303
    r = await county_client.post(f"/events/{event_id}/end", data={"_csrf": csrf}, allow_redirects=False)
    assert r.status == 400  # already ended
    with sessions() as s:
        ev = s.get(SurgeEvent, event_id)
        assert ev is not None and ev.status == "ended" and ev.ends_at == NOW
