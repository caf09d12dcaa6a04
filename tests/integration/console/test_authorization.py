"""A township officer never sees an elder of another township — through any page or API route.

乙镇's officer ("yi") tries every route on 张桂兰 of 甲镇; each must answer 404 (or not list her),
and the same routes work for 甲镇's officer ("jia") so the test is not passing by accident. A
last test enumerates the router: a new console route without a row here fails the suite.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage.enums import EventKind
from storage.models.checkin import CallAttempt
from storage.models.escalation import AuditLog, Visit
from storage.models.schedule import SurgeEvent, SurgeEventRegion
from tests.integration.console.conftest import Clock, api_login, login
from tests.integration.console.test_lifecycle import make_escalation
from tests.integration.console.world import World


@pytest.fixture
def target(sessions: sessionmaker[Session], world: World, clock: Clock, recordings: Path) -> dict[str, int]:
    """张桂兰's escalation, a recorded call and a lockdown in her village."""
    esc = make_escalation(sessions, world, clock, reason="暖气不热")
    (recordings / "c1.wav").write_bytes(b"RIFF....WAVE")
    with sessions() as s, s.begin():
        call = CallAttempt(elder_id=world.elders["zhang"], started_at=clock(), recording_path="c1.wav",
                           transcript=[{"who": "elder", "text": "暖气不热"}])
        s.add(call)
        ev = SurgeEvent(kind=EventKind.LOCKDOWN, title="一村封控", source="staff", starts_at=clock(),
                        ends_at=clock() + timedelta(days=7), status="active")
        s.add(ev)
        s.flush()
        s.add(SurgeEventRegion(event_id=ev.id, region_id=world.regions["230125001001"]))
        ids = {"esc": esc, "call": call.id, "event": ev.id, "elder": world.elders["zhang"]}
    from tests.security.conftest import wechat_target

    return ids | wechat_target(sessions, world, clock)


def page_routes(t: dict[str, int], world: World) -> list[tuple[str, str, dict[str, str] | None]]:
    e, esc = t["elder"], t["esc"]
    return [
        ("GET", f"/escalations/{esc}", None),
        ("POST", f"/escalations/{esc}/ack", {}),
        ("POST", f"/escalations/{esc}/resolve", {"note": "转给卫生院"}),
        ("GET", f"/elders/{e}", None),
        ("POST", f"/elders/{e}/reveal", {"what": "id_number"}),
        ("POST", f"/elders/{e}/reveal", {"what": f"phone:{world.phone_ids['zhang']}"}),
        ("POST", f"/elders/{e}/reveal", {"what": f"contact:{world.contacts['zhang'][0]}"}),
        ("GET", f"/elders/{e}/visit", None),
        ("POST", f"/elders/{e}/visit", {"kind": "home", "notes": "x"}),
        ("GET", f"/recordings/{t['call']}", None),
        ("GET", "/report?region=230125001", None),
        ("GET", "/report.xlsx?region=230125001", None),
        ("POST", f"/events/{t['event']}/end", {}),
        ("POST", f"/elders/{e}/wechat/codes", {"target": "elder", "kind": "code"}),
        ("POST", f"/elders/{e}/wechat/revoke", {"code_id": str(t["wcode"])}),
        ("POST", f"/elders/{e}/wechat/unbind", {"binding_id": str(t["wbinding"])}),
        ("POST", f"/elders/{e}/consent", {"consent": "withdrawn", "note": "本人告知"}),
    ]


async def _page(client: TestClient, method: str, url: str, data: dict[str, str] | None, csrf: str) -> tuple[int, str]:
    if method == "GET":
        r = await client.get(url, allow_redirects=False)
    else:
        r = await client.post(url, data={"_csrf": csrf, **(data or {})}, allow_redirects=False)
    body = await r.read()
    return r.status, body.decode("utf-8", "replace")


async def test_other_township_officer_gets_404_on_every_page(client: TestClient, sessions: sessionmaker[Session],
                                                              world: World, target: dict[str, int]) -> None:
    csrf = await login(client, "yi")
    for method, url, data in page_routes(target, world):
        status, body = await _page(client, method, url, data, csrf)
        assert status == 404, f"{method} {url} → {status}"
        assert "张桂兰" not in body and world.id_numbers["zhang"] not in body
    # lists and searches do not show her either
    for url in ("/escalations", "/escalations?show=resolved", "/elders", "/elders?q=张桂兰",
                f"/elders?q={world.id_numbers['zhang']}", f"/elders?q={world.phones['zhang']}", "/alerts", "/events",
                "/report"):
        status, body = await _page(client, "GET", url, None, csrf)
        assert status == 200, url
        body = body.replace('value="张桂兰"', "").replace(f'value="{world.id_numbers["zhang"]}"', "")
        assert f'href="/elders/{target["elder"]}"' not in body
        assert "张桂兰" not in body and "暖气不热" not in body and "一村" not in body, url
    # declaring a lockdown in 甲镇's village is refused
    status, body = await _page(client, "POST", "/events/lockdown", {"region": "230125001001", "days": "3"}, csrf)
    assert status == 400 and "管辖范围" in body
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)) == 0
        assert s.scalar(select(func.count()).select_from(Visit)) == 0


async def test_own_township_officer_reaches_the_same_pages(client: TestClient, world: World,
                                                            target: dict[str, int]) -> None:
    csrf = await login(client, "jia")
    for method, url, data in page_routes(target, world):
        status, body = await _page(client, method, url, data, csrf)
        assert status in (200, 303), f"{method} {url} → {status}: {body[:200]}"
    status, body = await _page(client, "GET", f"/elders?q={world.id_numbers['zhang']}", None, csrf)
    assert "张桂兰" in body


def api_routes(t: dict[str, int], world: World) -> list[tuple[str, str, dict[str, object] | None]]:
    e, esc = t["elder"], t["esc"]
    return [
        ("GET", f"/api/escalations/{esc}", None),
        ("POST", f"/api/escalations/{esc}/ack", {}),
        ("POST", f"/api/escalations/{esc}/resolve", {"kind": "referral", "note": "转给卫生院"}),
        ("GET", f"/api/elders/{e}", None),
        ("POST", f"/api/elders/{e}/reveal", {"what": "id_number"}),
        ("POST", f"/api/elders/{e}/reveal", {"what": f"contact:{world.contacts['zhang'][0]}"}),
        ("POST", f"/api/elders/{e}/visits", {"kind": "home", "notes": "x"}),
        ("GET", f"/api/calls/{t['call']}/recording", None),
        ("GET", "/api/reports/monthly?region=230125001", None),
        ("POST", f"/api/events/{t['event']}/end", {}),
        ("GET", f"/api/elders/{e}/wechat-codes", None),
        ("POST", f"/api/elders/{e}/wechat-codes", {"target": f"contact:{world.contacts['zhang'][0]}"}),
        ("DELETE", f"/api/elders/{e}/wechat-codes/{t['wcode']}", None),
        ("POST", f"/api/elders/{e}/consent", {"status": "withdrawn"}),
    ]


async def test_other_township_officer_gets_404_on_every_api_route(client: TestClient, sessions: sessionmaker[Session],
                                                                   world: World, target: dict[str, int]) -> None:
    csrf = await api_login(client, "yi")
    for method, url, data in api_routes(target, world):
        if method == "GET":
            r = await client.get(url)
        elif method == "DELETE":
            r = await client.delete(url, headers={"X-CSRF-Token": csrf})
        else:
            r = await client.post(url, json=data, headers={"X-CSRF-Token": csrf})
        body = await r.text()
        assert r.status == 404, f"{method} {url} → {r.status}: {body}"
        assert "张桂兰" not in body
    for url in ("/api/escalations", "/api/escalations?status=resolved", "/api/elders", "/api/elders?q=张桂兰",
                f"/api/elders?q={world.id_numbers['zhang']}", "/api/events", "/api/alerts", "/api/reports/monthly",
                "/api/me"):
        r = await client.get(url)
        body = await r.text()
        assert r.status == 200, url
        assert "张桂兰" not in body.replace("q=张桂兰", "") and "暖气不热" not in body and "一村" not in body, url
    r = await client.post("/api/events/lockdown", json={"region": "230125001001", "ends_at": "2026-12-01T00:00:00"},
                          headers={"X-CSRF-Token": csrf})
    assert r.status == 400
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)) == 0


async def test_own_officer_reaches_the_same_api_routes(client: TestClient, world: World,
                                                       target: dict[str, int]) -> None:
    csrf = await api_login(client, "jia")
    for method, url, data in api_routes(target, world):
        if method == "GET":
            r = await client.get(url)
        elif method == "DELETE":
            r = await client.delete(url, headers={"X-CSRF-Token": csrf})
        else:
            r = await client.post(url, json=data, headers={"X-CSRF-Token": csrf})
        assert r.status in (200, 201), f"{method} {url} → {r.status}: {await r.text()}"


async def test_visitor_sees_only_their_village(client: TestClient, sessions: sessionmaker[Session], world: World,
                                               clock: Clock) -> None:
    make_escalation(sessions, world, clock, key="li", reason="想请人上门看看")
    await api_login(client, "visitor1")
    r = await client.get(f"/api/elders/{world.elders['li']}")
    assert r.status == 404
    items = (await (await client.get("/api/escalations")).json())["items"]
    assert items == []
    await api_login(client, "county")
    items = (await (await client.get("/api/escalations")).json())["items"]
    assert [i["elder_name"] for i in items] == ["李秀英"]


async def test_unauthenticated_requests_are_refused(client: TestClient, world: World,
                                                    target: dict[str, int]) -> None:
    for method, url, _ in page_routes(target, world):
        r = await (client.get(url, allow_redirects=False) if method == "GET"
                   else client.post(url, data={}, allow_redirects=False))
        assert r.status == 303 and r.headers["Location"].startswith("/login"), url
    for method, url, _ in api_routes(target, world):
        r = await (client.get(url) if method == "GET" else client.delete(url) if method == "DELETE"
                   else client.post(url, json={}))
        assert r.status == 401, url


async def test_every_console_route_is_covered(client: TestClient, world: World, target: dict[str, int]) -> None:
    """A route added later must be added to the tables above (or to PUBLIC/LISTS)."""
    covered = {url.split("?")[0] for _m, url, _d in page_routes(target, world) + api_routes(target, world)}
    lists = {"/escalations", "/elders", "/alerts", "/events", "/report", "/api/escalations", "/api/elders",
             "/api/events", "/api/alerts", "/api/reports/monthly", "/api/me", "/events/lockdown",
             "/api/events/lockdown"}
    admin_only = {f"/elders/{target['elder']}/export", f"/api/elders/{target['elder']}/export"}  # tests/security
    public = admin_only | {"/", "/login", "/logout", "/api/login", "/api/logout", "/api/openapi.json", "/ledger", "/api/ledger"}
    ids = {str(v) for v in target.values()} | {str(c) for c in world.contacts["zhang"]}
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if not path or path.startswith("/static/"):
            continue
        concrete = {path.replace("{id}", i).replace("{code_id}", str(target["wcode"])) for i in ids} \
            if "{id}" in path else {path}
        assert concrete & (covered | lists | public), f"route {route.method} {path} has no authorisation test"


async def test_ledger_upload_is_for_county_officers(client: TestClient, world: World) -> None:
    csrf = await api_login(client, "jia")
    form = FormData()
    form.add_field("file", b"x", filename="ledger.csv", content_type="text/csv")
    r = await client.post("/api/ledger", data=form, headers={"X-CSRF-Token": csrf})
    assert r.status == 403
    csrf = await login(client, "jia")
    form = FormData()
    form.add_field("_csrf", csrf)
    form.add_field("file", b"x", filename="ledger.csv", content_type="text/csv")
    r = await client.post("/ledger", data=form)
    assert r.status == 403
