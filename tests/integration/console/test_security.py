"""Reveals are audited (hash chain intact), CSRF is enforced on every form and API change,
cookies are HttpOnly/SameSite and rotate at login, assets are local and the CSP forbids inline script."""

from __future__ import annotations

import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from console.app import mount
from console.auth import COOKIE
from console.config import ConsoleConfig
from storage.crypto import Vault
from storage.models.escalation import AuditLog, Escalation, verify_audit_chain
from tests.integration.console.conftest import CSRF_RE, Clock, api_login, login
from tests.integration.console.test_lifecycle import make_escalation
from tests.integration.console.world import World


def audit_rows(sessions: sessionmaker[Session]) -> list[AuditLog]:
    with sessions() as s:
        return list(s.scalars(select(AuditLog).order_by(AuditLog.seq)))


async def test_every_reveal_writes_an_audit_row(client: TestClient, sessions: sessionmaker[Session],
                                                world: World) -> None:
    csrf = await login(client, "jia")
    e = world.elders["zhang"]
    page = await (await client.get(f"/elders/{e}")).text()
    assert world.id_numbers["zhang"] not in page and world.phones["zhang"] not in page
    whats = ["id_number", f"phone:{world.phone_ids['zhang']}", f"contact:{world.contacts['zhang'][1]}"]
    expected_values = [world.id_numbers["zhang"], world.phones["zhang"]]
    for i, what in enumerate(whats):
        r = await client.post(f"/elders/{e}/reveal", data={"_csrf": csrf, "what": what})
        assert r.status == 200
        body = await r.text()
        if i < 2:
            assert expected_values[i] in body
        assert len(audit_rows(sessions)) == i + 1
    api_csrf = await api_login(client, "jia")
    r = await client.post(f"/api/elders/{e}/reveal", json={"what": "id_number"}, headers={"X-CSRF-Token": api_csrf})
    assert (await r.json())["value"] == world.id_numbers["zhang"]
    rows = audit_rows(sessions)
    assert [r.action for r in rows] == ["reveal_id_number", "reveal_phone", "reveal_contact", "reveal_id_number"]
    assert all(r.actor == f"staff:{world.staff['jia']}" and r.elder_id == e for r in rows)
    assert all(world.id_numbers["zhang"] not in (r.detail or "") for r in rows)
    with sessions() as s:
        assert verify_audit_chain(s) == (True, 4, "完整")


async def test_audit_chain_detects_tampering(client: TestClient, sessions: sessionmaker[Session], world: World) -> None:
    csrf = await api_login(client, "jia")
    for _ in range(3):
        await client.post(f"/api/elders/{world.elders['zhang']}/reveal", json={"what": "id_number"},
                          headers={"X-CSRF-Token": csrf})
    with pytest.raises(PermissionError), sessions() as s, s.begin():
        row = s.scalar(select(AuditLog).where(AuditLog.seq == 2))
        assert row is not None
        row.detail = "改过"
    with pytest.raises(PermissionError), sessions() as s, s.begin():
        row = s.scalar(select(AuditLog).where(AuditLog.seq == 3))
        s.delete(row)
    with sessions() as s, s.begin():  # a raw UPDATE bypasses the ORM guard, and the chain notices
        s.execute(update(AuditLog).where(AuditLog.seq == 2).values(actor="staff:999"))
    with sessions() as s:
        ok, n, detail = verify_audit_chain(s)
        assert not ok and n == 2 and "改动" in detail


async def test_csrf_is_enforced(client: TestClient, sessions: sessionmaker[Session], world: World,
                                clock: Clock) -> None:
    eid = make_escalation(sessions, world, clock)
    csrf = await login(client, "jia")
    for url, data in [(f"/escalations/{eid}/ack", {}), (f"/elders/{world.elders['zhang']}/reveal", {"what": "id_number"}),
                      (f"/elders/{world.elders['zhang']}/visit", {"kind": "home"}), ("/logout", {})]:
        r = await client.post(url, data=data, allow_redirects=False)
        assert r.status == 403, url
        r = await client.post(url, data={**data, "_csrf": csrf + "x"}, allow_redirects=False)
        assert r.status == 403, url
    api_csrf = await api_login(client, "jia")
    r = await client.post(f"/api/escalations/{eid}/ack")
    assert r.status == 403
    r = await client.post(f"/api/escalations/{eid}/ack", headers={"X-CSRF-Token": "nope"})
    assert r.status == 403
    with sessions() as s:
        esc = s.get(Escalation, eid)
        assert esc is not None and esc.acknowledged_at is None
        assert s.scalar(select(func.count()).select_from(AuditLog)) == 0
    r = await client.post(f"/api/escalations/{eid}/ack", headers={"X-CSRF-Token": api_csrf})
    assert r.status == 200
    # the login form itself needs its double-submit token
    client.session.cookie_jar.clear()
    r = await client.post("/login", data={"username": "jia", "password": "correct-horse-9"}, allow_redirects=False)
    assert r.status == 403


async def test_session_cookie_flags_and_rotation(client: TestClient, world: World) -> None:
    r = await client.get("/login")
    token = CSRF_RE.search(await r.text())
    assert token
    r = await client.post("/login", data={"_csrf": token.group(1), "username": "jia", "password": "wrong-password"},
                          allow_redirects=False)
    assert r.status == 401 and "用户名或密码不正确" in await r.text()
    await login(client, "jia")
    first = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    r = await client.get("/login")
    token = CSRF_RE.search(await r.text())
    assert token
    r = await client.post("/login", data={"_csrf": token.group(1), "username": "jia", "password": "correct-horse-9"},
                          allow_redirects=False)
    set_cookie = r.headers.getall("Set-Cookie")
    line = next(c for c in set_cookie if c.startswith(COOKIE + "="))
    assert "HttpOnly" in line and "SameSite=Lax" in line and "Secure" not in line
    second = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    assert second != first
    client.session.cookie_jar.clear()
    r = await client.get("/escalations", allow_redirects=False, headers={"Cookie": f"{COOKIE}={first}"})
    assert r.status == 303  # the old session is gone
    r = await client.get("/escalations", allow_redirects=False, headers={"Cookie": f"{COOKIE}={second}"})
    assert r.status == 200


async def test_secure_cookie_when_configured(sessions: sessionmaker[Session], vault: Vault, clock: Clock,
                                             world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = web.Application()
    mount(app, sessions=sessions, vault=vault, now=clock,
          config=ConsoleConfig(recordings_dir=tmp_path, cookie_secure=True))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        r = await c.post("/api/login", json={"username": "jia", "password": "correct-horse-9"})
        line = next(x for x in r.headers.getall("Set-Cookie") if x.startswith(COOKIE + "="))
        assert "Secure" in line and "HttpOnly" in line


async def test_session_expires(client: TestClient, world: World, clock: Clock) -> None:
    await login(client, "jia")
    clock.advance(hours=13)
    r = await client.get("/escalations", allow_redirects=False)
    assert r.status == 303


async def test_assets_are_local_and_csp_forbids_inline_script(client: TestClient, world: World) -> None:
    await login(client, "jia")
    for url in ("/escalations", "/elders", "/report", "/events", "/alerts", "/login"):
        r = await client.get(url)
        body = await r.text()
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["X-Frame-Options"] == "DENY"
        assert not re.search(r"<script(?![^>]*\bsrc=)", body), url  # no inline script
        assert not re.search(r"""(src|href)=["']https?://""", body), url  # no CDN
        assert "style=" not in body, url
    for asset in ("/static/console/console.css", "/static/console/console.js"):
        r = await client.get(asset)
        assert r.status == 200


async def test_openapi_document(client: TestClient, world: World) -> None:
    r = await client.get("/api/openapi.json")
    doc = await r.json()
    assert doc["openapi"].startswith("3.")
    routes = {f"{m.lower()} {p}" for p, ops in doc["paths"].items() for m in ops}
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/") and route.method != "HEAD":
            assert f"{route.method.lower()} {path}" in routes, path


async def test_deadline_display_after_clock_moves(client: TestClient, sessions: sessionmaker[Session], world: World,
                                                  clock: Clock) -> None:
    make_escalation(sessions, world, clock)
    await api_login(client, "jia")
    items = (await (await client.get("/api/escalations")).json())["items"]
    assert items[0]["overdue"] is False
    clock.advance(hours=25)  # P2: 24 h to acknowledge (and the 12-hour session has expired)
    assert (await client.get("/api/escalations")).status == 401
    await api_login(client, "jia")
    data = await (await client.get("/api/escalations")).json()
    assert data["items"][0]["overdue"] is True and data["overdue_total"] == 1

