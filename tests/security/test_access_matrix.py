"""The authorisation matrix: every console/API route × role × region (own, other), generated
from the router — a route added later without a row in ``SPEC`` fails ``test_spec_covers_router``.

Each (role, region) case logs in as a staff member of that role whose region does (own) or does
not (other) contain 张桂兰, and calls every route on her records. Expected:
- out of scope → 404 (never a hint that she exists), lists do not show her;
- in scope → allowed per role (imports: admin/county; lockdowns and recording consent: officers;
  data export: admin), otherwise 403 (or 400 with a Chinese reason for lockdown forms).
Nothing may leak into an out-of-scope response: no name, no ID or phone number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage.models.escalation import AuditLog
from tests.integration.console.conftest import api_login, login
from tests.integration.console.world import World
from tests.security.conftest import OTHER, OWN, console_app

ROLES = ("admin", "county_officer", "township_officer", "visitor")
OK = frozenset({200, 201, 303, 409})  # 409: allowed, but the state forbids it (e.g. acknowledged twice)
DENIED = frozenset({400, 403})  # 400 only for forms that explain in Chinese why this role may not


@dataclass(frozen=True)
class Route:
    kind: str  # read, act, manage, import, admin, list, public
    url: Callable[[dict[str, int]], str]
    body: Callable[[dict[str, int]], dict[str, Any] | None] = lambda t: None


def _ledger_body(t: dict[str, int]) -> dict[str, Any]:
    return {"__file__": True}


# (method, path template) → how to call it on 张桂兰's records. Order matters: destructive last.
SPEC: dict[tuple[str, str], Route] = {
    ("GET", "/"): Route("public", lambda t: "/"),
    ("GET", "/login"): Route("public", lambda t: "/login"),
    ("POST", "/login"): Route("public", lambda t: "/login"),
    ("POST", "/api/login"): Route("public", lambda t: "/api/login"),
    ("GET", "/api/openapi.json"): Route("public", lambda t: "/api/openapi.json"),
    ("GET", "/escalations"): Route("list", lambda t: "/escalations"),
    ("GET", "/elders"): Route("list", lambda t: "/elders?q=张桂兰"),
    ("GET", "/alerts"): Route("list", lambda t: "/alerts"),
    ("GET", "/events"): Route("list", lambda t: "/events"),
    ("GET", "/report"): Route("list", lambda t: "/report"),
    ("GET", "/api/me"): Route("list", lambda t: "/api/me"),
    ("GET", "/api/escalations"): Route("list", lambda t: "/api/escalations"),
    ("GET", "/api/elders"): Route("list", lambda t: "/api/elders?q=张桂兰"),
    ("GET", "/api/events"): Route("list", lambda t: "/api/events"),
    ("GET", "/api/alerts"): Route("list", lambda t: "/api/alerts"),
    ("GET", "/escalations/{id}"): Route("read", lambda t: f"/escalations/{t['esc']}"),
    ("GET", "/elders/{id}"): Route("read", lambda t: f"/elders/{t['elder']}"),
    ("GET", "/elders/{id}/visit"): Route("read", lambda t: f"/elders/{t['elder']}/visit"),
    ("GET", "/recordings/{id}"): Route("read", lambda t: f"/recordings/{t['call']}"),
    ("GET", "/report.xlsx"): Route("read", lambda t: "/report.xlsx?region=230125001001"),
    ("GET", "/api/escalations/{id}"): Route("read", lambda t: f"/api/escalations/{t['esc']}"),
    ("GET", "/api/elders/{id}"): Route("read", lambda t: f"/api/elders/{t['elder']}"),
    ("GET", "/api/calls/{id}/recording"): Route("read", lambda t: f"/api/calls/{t['call']}/recording"),
    ("GET", "/api/reports/monthly"): Route("read", lambda t: "/api/reports/monthly?region=230125001001"),
    ("POST", "/elders/{id}/reveal"): Route("act", lambda t: f"/elders/{t['elder']}/reveal",
                                           lambda t: {"what": f"phone:{t['phone']}"}),
    ("POST", "/api/elders/{id}/reveal"): Route("act", lambda t: f"/api/elders/{t['elder']}/reveal",
                                               lambda t: {"what": f"contact:{t['contact']}"}),
    ("POST", "/escalations/{id}/ack"): Route("act", lambda t: f"/escalations/{t['esc']}/ack", lambda t: {}),
    ("POST", "/api/escalations/{id}/ack"): Route("act", lambda t: f"/api/escalations/{t['esc']}/ack", lambda t: {}),
    ("POST", "/elders/{id}/visit"): Route("act", lambda t: f"/elders/{t['elder']}/visit",
                                          lambda t: {"kind": "phone", "notes": "电话回访"}),
    ("POST", "/api/elders/{id}/visits"): Route("act", lambda t: f"/api/elders/{t['elder']}/visits",
                                               lambda t: {"kind": "phone", "notes": "电话回访"}),
    ("POST", "/elders/{id}/export"): Route("admin", lambda t: f"/elders/{t['elder']}/export", lambda t: {}),
    ("POST", "/api/elders/{id}/export"): Route("admin", lambda t: f"/api/elders/{t['elder']}/export", lambda t: {}),
    ("GET", "/ledger"): Route("import_form", lambda t: "/ledger"),
    ("POST", "/ledger"): Route("import", lambda t: "/ledger", _ledger_body),
    ("POST", "/api/ledger"): Route("import", lambda t: "/api/ledger", _ledger_body),
    ("POST", "/events/lockdown"): Route("manage", lambda t: "/events/lockdown",
                                        lambda t: {"region": "230125001001", "days": "3", "title": "测试"}),
    ("POST", "/api/events/lockdown"): Route("manage", lambda t: "/api/events/lockdown",
                                            lambda t: {"region": "230125001001", "ends_at": "2026-12-30T00:00:00"}),
    ("POST", "/escalations/{id}/resolve"): Route("act", lambda t: f"/escalations/{t['esc']}/resolve",
                                                 lambda t: {"note": "转给卫生院"}),
    ("POST", "/api/escalations/{id}/resolve"): Route("act", lambda t: f"/api/escalations/{t['esc']}/resolve",
                                                     lambda t: {"kind": "referral", "note": "转给卫生院"}),
    ("POST", "/events/{id}/end"): Route("manage", lambda t: f"/events/{t['event']}/end", lambda t: {}),
    ("POST", "/api/events/{id}/end"): Route("manage", lambda t: f"/api/events/{t['event2']}/end", lambda t: {}),
    ("POST", "/elders/{id}/consent"): Route("act", lambda t: f"/elders/{t['elder']}/consent",
                                            lambda t: {"consent": "withdrawn", "note": "本人告知"}),
    ("POST", "/api/elders/{id}/consent"): Route("manage", lambda t: f"/api/elders/{t['elder']}/consent",
                                                lambda t: {"status": "granted"}),
    ("GET", "/api/elders/{id}/wechat-codes"): Route("read", lambda t: f"/api/elders/{t['elder']}/wechat-codes"),
    ("POST", "/elders/{id}/wechat/codes"): Route("officer", lambda t: f"/elders/{t['elder']}/wechat/codes",
                                                 lambda t: {"target": f"contact:{t['contact']}", "kind": "code"}),
    ("POST", "/api/elders/{id}/wechat-codes"): Route("officer", lambda t: f"/api/elders/{t['elder']}/wechat-codes",
                                                     lambda t: {"target": f"contact:{t['contact']}", "kind": "scene"}),
    ("DELETE", "/api/elders/{id}/wechat-codes/{code_id}"): Route(
        "officer", lambda t: f"/api/elders/{t['elder']}/wechat-codes/{t['wcode']}"),
    ("POST", "/elders/{id}/wechat/revoke"): Route("officer", lambda t: f"/elders/{t['elder']}/wechat/revoke",
                                                  lambda t: {"code_id": str(t["wcode"])}),
    ("POST", "/elders/{id}/wechat/unbind"): Route("officer", lambda t: f"/elders/{t['elder']}/wechat/unbind",
                                                  lambda t: {"binding_id": str(t["wbinding"])}),
    ("POST", "/logout"): Route("public", lambda t: "/logout"),
    ("POST", "/api/logout"): Route("public", lambda t: "/api/logout"),
}


def router_routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if not path or path.startswith("/static/") or route.method == "HEAD":
            continue
        out.add((route.method, path))
    return out


def expected(kind: str, role: str, own: bool) -> frozenset[int]:
    if kind == "list":
        return frozenset({200})
    if kind == "import_form":  # the upload form: the county's own business, whichever county
        return frozenset({200}) if role in ("admin", "county_officer") else frozenset({403})
    if not own and role != "admin":
        if kind == "import":  # the upload is county business; another county's officer gets row errors
            return frozenset({422}) if role == "county_officer" else frozenset({403})
        if kind == "manage":
            return frozenset({400, 403, 404})
        return frozenset({404})
    if kind in ("read", "act"):
        return OK
    if kind == "officer":  # WeChat binding codes: officers and admins; visitors only see the state
        return OK if role != "visitor" else frozenset({403})
    if kind == "manage":
        return OK if role != "visitor" else DENIED
    if kind == "import":
        return frozenset({200, 422}) if role in ("admin", "county_officer") else frozenset({403})
    if kind == "admin":
        return frozenset({200}) if role == "admin" else frozenset({403})
    raise AssertionError(kind)


async def call(client: TestClient, method: str, url: str, body: dict[str, Any] | None, csrf: str) -> tuple[int, str]:
    api = url.startswith("/api/")
    if method == "GET":
        r = await client.get(url, allow_redirects=False)
    elif method == "DELETE":
        r = await client.delete(url, headers={"X-CSRF-Token": csrf}, allow_redirects=False)
    elif body is not None and "__file__" in body:
        form = FormData()
        if not api:
            form.add_field("_csrf", csrf)
        form.add_field("dry_run", "1")
        form.add_field("file", "编号,姓名\n1,测试\n".encode("gbk"), filename="ledger.csv", content_type="text/csv")
        r = await client.post(url, data=form, headers={"X-CSRF-Token": csrf} if api else {}, allow_redirects=False)
    elif api:
        r = await client.post(url, json=body or {}, headers={"X-CSRF-Token": csrf}, allow_redirects=False)
    else:
        r = await client.post(url, data={"_csrf": csrf, **(body or {})}, allow_redirects=False)
    raw = await r.read()
    return r.status, raw.decode("utf-8", "replace")


def test_spec_covers_router(sessions: sessionmaker[Session], vault: Any, clock: Any, recordings: Any) -> None:
    routes = router_routes(console_app(sessions, vault, clock, recordings))
    missing = routes - set(SPEC)
    assert not missing, f"routes without an authorisation rule: {sorted(missing)}"
    assert not set(SPEC) - routes, f"rules for routes that no longer exist: {sorted(set(SPEC) - routes)}"


@pytest.mark.parametrize("own", [True, False], ids=["own", "other"])
@pytest.mark.parametrize("role", ROLES)
async def test_matrix(client: TestClient, sessions: sessionmaker[Session], world: World, target: dict[str, int],
                      role: str, own: bool) -> None:
    if role == "admin" and not own:
        pytest.skip("an administrator's region is the whole province: there is no other region")
    username = (OWN if own else OTHER)[role]
    secrets = [world.id_numbers["zhang"], world.phones["zhang"], "张桂兰"]
    routes = router_routes(client.app)
    assert set(SPEC) >= routes
    failures = []
    csrf = await api_login(client, username)  # one session: its CSRF token serves forms and API alike
    for (method, _template), route in SPEC.items():
        if route.kind == "public":
            continue
        url = route.url(target)
        status, body = await call(client, method, url, route.body(target), csrf)
        want = expected(route.kind, role, own)
        if status not in want:
            failures.append(f"{method} {url} as {username}: {status} not in {sorted(want)}: {body[:120]}")
        if not own:
            visible = body.replace("q=张桂兰", "").replace('value="张桂兰"', "")
            leaked = [s for s in secrets if s in visible]
            if leaked:
                failures.append(f"{method} {url} as {username} leaks {leaked}")
    assert not failures, "\n".join(failures)
    if not own:
        with sessions() as s:  # out of scope: nothing about her was revealed, exported or changed
            assert s.scalar(select(func.count()).select_from(AuditLog).where(
                AuditLog.elder_id == target["elder"])) == 0


async def test_unauthenticated_every_route(client: TestClient, target: dict[str, int]) -> None:
    """Without a session every non-public route redirects to the login page (pages) or answers 401 (API)."""
    for (method, template), route in SPEC.items():
        if route.kind == "public":
            continue
        url = route.url(target)
        r = await (client.get(url, allow_redirects=False) if method == "GET"
                   else client.delete(url, allow_redirects=False) if method == "DELETE"
                   else client.post(url, data={}, allow_redirects=False))
        if template.startswith("/api/"):
            assert r.status == 401, f"{method} {url} → {r.status}"
        else:
            assert r.status == 303 and r.headers["Location"].startswith("/login"), f"{method} {url} → {r.status}"


async def test_csrf_on_every_state_changing_route(client: TestClient, sessions: sessionmaker[Session],
                                                  target: dict[str, int]) -> None:
    """Every POST but the two logins (double-submit cookie / JSON credentials) refuses a missing
    or wrong token with 403 and changes nothing, for the most privileged user."""
    with sessions() as s:
        before = s.scalar(select(func.count()).select_from(AuditLog))
    await login(client, "admin")
    for (method, template), route in SPEC.items():
        if method != "POST" or template in ("/api/login",):
            continue
        url = route.url(target)
        for token in (None, "forged-token"):
            if template == "/login":  # without the login form's double-submit cookie
                r = await client.post(url, data={"username": "admin", "password": "correct-horse-9",
                                                 **({"_csrf": token} if token else {})}, allow_redirects=False)
                assert r.status == 403, f"{url} without the login token → {r.status}"
                continue
            api = template.startswith("/api/")
            if api:
                r = await client.post(url, json=route.body(target) or {},
                                      headers={"X-CSRF-Token": token} if token else {}, allow_redirects=False)
            else:
                data = {k: v for k, v in (route.body(target) or {}).items() if k != "__file__"}
                r = await client.post(url, data={**data, **({"_csrf": token} if token else {})}, allow_redirects=False)
            assert r.status == 403, f"POST {url} with token {token!r} → {r.status}"
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)) == before
