"""No personal number and no secret key in the logs: the sample ledger imported, console pages
and reveals, searches by full ID number and phone, consent, export and purge — all with logging
at DEBUG through ``tanfang.logsetup`` into a file, then grepped for every sample number."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from console.app import mount
from console.auth import hash_password
from console.config import ConsoleConfig
from scripts.check_logs import sample_numbers, scan
from storage.db import make_engine, make_session_factory
from storage.enums import StaffRole
from storage.models.elder import Contact, Elder, ElderPhone
from storage.models.region import Region
from storage.models.staff import Staff
from tanfang.cli import main
from tanfang.keys import load_vault
from tanfang.logsetup import setup_logging
from tanfang.settings import Settings
from tests.conftest import SAMPLES


@pytest.fixture
def log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Route logging through tanfang.logsetup (DEBUG) into a file for this test only."""
    path = tmp_path / "tanfang.log"
    monkeypatch.setenv("TANFANG_LOG_FILE", str(path))
    monkeypatch.setenv("TANFANG_LOG_LEVEL", "DEBUG")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, getattr(root, "_tanfang_configured", False))
    root._tanfang_configured = False  # type: ignore[attr-defined]
    setup_logging(Settings())
    yield path
    for h in root.handlers:
        if h not in saved[0]:
            h.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    root._tanfang_configured = saved[2]  # type: ignore[attr-defined]


async def test_flows_leave_no_number_in_logs(settings_env: Path, db_url: str, monkeypatch: pytest.MonkeyPatch,
                                             log_file: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("TANFANG_DATABASE_URL", db_url)
    assert main(["regions", "import", str(SAMPLES / "regions.yaml")]) == 0
    assert main(["ledger", "import", str(SAMPLES / "ledger_sample.xlsx")]) == 0
    assert main(["ledger", "import", str(SAMPLES / "ledger_sample_gbk.csv"), "--dry-run"]) == 0
    settings = Settings()
    vault = load_vault(settings)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    with sessions() as s, s.begin():
        county = s.scalar(select(Region).where(Region.code == "230183"))
        assert county is not None
        s.add(Staff(name="县民政", role=StaffRole.ADMIN, region_id=county.id, username="admin",
                    password_hash=hash_password("correct-horse-9")))
    with sessions() as s:
        elders = list(s.scalars(select(Elder).order_by(Elder.id).limit(5)))
        ids = [e.id for e in elders]
        phones = {e.id: [p.id for p in s.scalars(select(ElderPhone).where(ElderPhone.elder_id == e.id))] for e in elders}
        contacts = {e.id: [c.id for c in s.scalars(select(Contact).where(Contact.elder_id == e.id))] for e in elders}
    numbers = sorted(sample_numbers())
    app = web.Application()
    mount(app, sessions=sessions, vault=vault, now=lambda: __import__("datetime").datetime.now(
        __import__("datetime").UTC), config=ConsoleConfig(recordings_dir=tmp_path))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        r = await c.post("/api/login", json={"username": "admin", "password": "correct-horse-9"})
        csrf = (await r.json())["csrf_token"]
        r = await c.post("/api/login", json={"username": numbers[0], "password": numbers[1]})  # numbers as usernames
        assert r.status == 401
        await c.post("/api/login", json={"username": "admin", "password": "correct-horse-9"})
        h = {"X-CSRF-Token": (await (await c.post("/api/login", json={"username": "admin",
                                                                        "password": "correct-horse-9"})).json())["csrf_token"]}
        del csrf
        for n in numbers[:20]:  # searches by full ID number and phone go into request URLs
            assert (await c.get(f"/elders?q={n}")).status == 200
            assert (await c.get("/api/elders", params={"q": n})).status == 200
        for eid in ids:
            assert (await c.get(f"/elders/{eid}")).status == 200
            assert (await c.get(f"/api/elders/{eid}")).status == 200
            r = await c.post(f"/api/elders/{eid}/reveal", json={"what": "id_number"}, headers=h)
            assert r.status == 200 and (await r.json())["value"] in numbers
            for pid in phones[eid]:
                assert (await c.post(f"/api/elders/{eid}/reveal", json={"what": f"phone:{pid}"}, headers=h)).status == 200
            for cid in contacts[eid][:1]:
                await c.post(f"/api/elders/{eid}/reveal", json={"what": f"contact:{cid}"}, headers=h)
            assert (await c.post(f"/api/elders/{eid}/export", headers=h)).status == 200
        r = await c.post(f"/api/elders/{ids[0]}/consent", json={"status": "withdrawn", "note": numbers[2]}, headers=h)
        assert r.status == 200
    engine.dispose()
    assert main(["elder", "export", str(ids[1]), "--out", str(tmp_path / "e.json")]) == 0
    assert main(["purge", "--dry-run"]) == 0
    assert main(["audit", "verify"]) == 0
    for handler in logging.getLogger().handlers:
        handler.flush()
    _check(log_file, set(numbers) | {settings.secret_key or ""})


def _check(log_file: Path, secrets: set[str]) -> None:
    text = log_file.read_text(encoding="utf-8")
    assert "action=ledger_import" in text and "GET /elders" in text, "the flows were logged at all"
    assert not scan([log_file], {s for s in secrets if s}), "personal numbers or the key in the log"
