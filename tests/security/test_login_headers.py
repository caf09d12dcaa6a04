"""Login rate limiting and lockout, session rotation and logout, security headers on every page,
no inline script or event-handler attribute in any template, consent and export in the console."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from console.auth import COOKIE
from storage.enums import CheckInStatus, ConsentStatus
from storage.models.checkin import CheckIn
from storage.models.elder import Elder
from storage.models.escalation import AuditLog
from tests.integration.console.conftest import CSRF_RE, Clock, api_login, login
from tests.integration.console.world import PASSWORD, World
from tests.security.test_access_matrix import SPEC

TEMPLATES = Path(__file__).resolve().parents[2] / "console" / "templates"


async def _form_login(client: TestClient, username: str, password: str) -> tuple[int, str]:
    r = await client.get("/login")
    m = CSRF_RE.search(await r.text())
    assert m
    r = await client.post("/login", data={"_csrf": m.group(1), "username": username, "password": password},
                          allow_redirects=False)
    return r.status, await r.text()


async def test_five_failures_lock_the_account_for_fifteen_minutes(client: TestClient, sessions: sessionmaker[Session],
                                                                  world: World, clock: Clock) -> None:
    for i in range(4):
        status, body = await _form_login(client, "jia", f"wrong-{i}")
        assert status == 401 and "用户名或密码不正确" in body
    status, body = await _form_login(client, "jia", "wrong-4")
    assert status == 429 and "锁定 15 分钟" in body
    # Locked: even the right password is refused, through the form and the API alike.
    status, body = await _form_login(client, "jia", PASSWORD)
    assert status == 429 and "登录失败次数过多" in body
    r = await client.post("/api/login", json={"username": "jia", "password": PASSWORD})
    assert r.status == 429 and "锁定" in (await r.json())["error"]
    # The username is matched case-insensitively (no way round it with "JIA").
    r = await client.post("/api/login", json={"username": "JIA ", "password": "x"})
    assert r.status == 429
    # Other accounts are not affected.
    await api_login(client, "yi")
    with sessions() as s:
        rows = s.scalars(select(AuditLog).where(AuditLog.action == "login_locked")).all()
        assert len(rows) == 1 and rows[0].subject_id == world.staff["jia"] and "jia" in (rows[0].detail or "")
        assert PASSWORD not in (rows[0].detail or "")
    clock.advance(minutes=15, seconds=1)
    await login(client, "jia")  # the window has passed
    # A success clears the count: four more failures do not lock.
    for i in range(4):
        status, _ = await _form_login(client, "jia", f"again-{i}")
        assert status == 401
    await api_login(client, "jia")


async def test_unknown_usernames_lock_too(client: TestClient, world: World, sessions: sessionmaker[Session]) -> None:
    for _ in range(5):
        r = await client.post("/api/login", json={"username": "nobody", "password": "x"})
    assert r.status == 429
    with sessions() as s:
        row = s.scalars(select(AuditLog).where(AuditLog.action == "login_locked")).one()
        assert row.subject_id is None


async def test_session_rotates_at_login_and_dies_at_logout(client: TestClient, world: World) -> None:
    await login(client, "jia")
    first = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    # log in again, presenting the existing session cookie: it is replaced, not kept alongside
    r = await client.get("/login")
    m = CSRF_RE.search(await r.text())
    assert m
    r = await client.post("/login", data={"_csrf": m.group(1), "username": "jia", "password": PASSWORD},
                          allow_redirects=False)
    assert r.status == 303
    second = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
    assert second != first
    client.session.cookie_jar.clear()
    r = await client.get("/api/me", headers={"Cookie": f"{COOKIE}={first}"})
    assert r.status == 401  # the presented session was replaced, not kept alongside
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({COOKIE: second})
    r = await client.get("/escalations")
    csrf = CSRF_RE.search(await r.text())
    assert csrf
    r = await client.post("/logout", data={"_csrf": csrf.group(1)}, allow_redirects=False)
    assert r.status == 303
    client.session.cookie_jar.clear()
    r = await client.get("/api/me", headers={"Cookie": f"{COOKIE}={second}"})
    assert r.status == 401  # invalidated on the server, not only forgotten by the browser


async def test_security_headers_on_every_response(client: TestClient, world: World, target: dict[str, int]) -> None:
    await api_login(client, "admin")
    urls = ["/login", "/api/openapi.json", "/escalations/999999", "/api/elders/999999", "/no-such-page"]
    urls += [route.url(target) for (method, _t), route in SPEC.items() if method == "GET"]
    for url in urls:
        r = await client.get(url, allow_redirects=False)
        h = r.headers
        if url == "/no-such-page":
            continue  # not a console path
        csp = h.get("Content-Security-Policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp, url
        assert "object-src 'none'" in csp and "base-uri 'self'" in csp, url
        assert h.get("X-Content-Type-Options") == "nosniff", url
        assert h.get("X-Frame-Options") == "DENY", url
        assert h.get("Referrer-Policy") == "same-origin", url
        assert h.get("Cache-Control") == "no-store", url


def test_templates_have_no_inline_script_or_event_handlers() -> None:
    for tpl in sorted(TEMPLATES.glob("*.html")):
        text = tpl.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"inline <script> in {tpl.name}"
        assert not re.search(r"\son[a-z]+\s*=", text, re.IGNORECASE), f"on* handler attribute in {tpl.name}"
        assert "javascript:" not in text.lower(), tpl.name
        assert not re.search(r"\sstyle\s*=", text), f"inline style in {tpl.name}"


async def test_console_consent_withdrawal_and_export(client: TestClient, sessions: sessionmaker[Session],
                                                     world: World, clock: Clock) -> None:
    zhang = world.elders["zhang"]
    with sessions() as s, s.begin():
        s.add(CheckIn(elder_id=zhang, slot="R:test", kind="routine", status=CheckInStatus.DUE, due_at=clock(),
                      next_attempt_at=clock()))
    csrf = await login(client, "visitor1")
    r = await client.get(f"/elders/{zhang}")
    body = await r.text()
    assert "登记撤回同意" in body and "导出个人信息" not in body
    r = await client.post(f"/elders/{zhang}/consent", data={"_csrf": csrf, "consent": "withdrawn", "note": "本人电话告知"},
                          allow_redirects=False)
    assert r.status == 303
    body = await (await client.get(f"/elders/{zhang}")).text()
    assert "已撤回" in body and "已停止自动电话" in body
    with sessions() as s:
        e = s.get(Elder, zhang)
        assert e is not None and e.consent_status is ConsentStatus.WITHDRAWN and e.consent_by == "一村探访员周"
        assert set(s.scalars(select(CheckIn.status).where(CheckIn.elder_id == zhang))) == {CheckInStatus.CANCELLED}
    # a visitor may not record consent (officers do)
    r = await client.post(f"/elders/{zhang}/consent", data={"_csrf": csrf, "consent": "granted"}, allow_redirects=False)
    assert r.status == 403
    csrf = await api_login(client, "jia")
    r = await client.post(f"/api/elders/{zhang}/consent", json={"status": "granted", "note": "书面同意"},
                          headers={"X-CSRF-Token": csrf})
    assert r.status == 200 and (await r.json())["deletion_due_at"] is None
    r = await client.post(f"/api/elders/{zhang}/consent", json={"status": "maybe"}, headers={"X-CSRF-Token": csrf})
    assert r.status == 400
    r = await client.post(f"/api/elders/{zhang}/export", headers={"X-CSRF-Token": csrf})
    assert r.status == 403
    csrf = await login(client, "admin")
    assert "导出个人信息" in await (await client.get(f"/elders/{zhang}")).text()
    r = await client.post(f"/elders/{zhang}/export", data={"_csrf": csrf})
    assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
    data = await r.json()
    assert data["elder"]["id_number"] == world.id_numbers["zhang"]
    assert world.phones["zhang"] in {p["number"] for p in data["phones"]}
    with sessions() as s:
        actions = list(s.scalars(select(AuditLog.action).where(AuditLog.elder_id == zhang).order_by(AuditLog.seq)))
    assert actions == ["consent_withdrawn", "consent_granted", "export_personal_data"]
