"""The JSON API under /api/: the console's operations, same scoping, described at /api/openapi.json.

Authentication is the console session: ``POST /api/login`` (JSON) sets the cookie and returns the
CSRF token that every state-changing call sends as ``X-CSRF-Token``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from console import actions, events, queries
from console.auth import COOKIE, end_session, load_session
from console.auth import login as auth_login
from console.openapi import OPENAPI
from console.pages import build_report, run_ledger_import
from console.scope import Principal, scoped_elder
from console.views import SHANGHAI, login_policy, set_session_cookie
from console.web import api, json_error, json_response, principal, remote, state
from scheduler.escalations import EscalationError, acknowledge, resolve
from storage.enums import ConsentStatus, EscalationStatus, Severity, VisitKind
from storage.models.escalation import ResolutionKind
from storage.models.staff import Staff


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text=json.dumps({"error": "请求体必须是 application/json"}, ensure_ascii=False),
                                           content_type="application/json")
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": "请求体不是有效的 JSON"}, ensure_ascii=False),
                                 content_type="application/json") from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "请求体必须是 JSON 对象"}, ensure_ascii=False),
                                 content_type="application/json")
    return data


def _me_json(p: Principal) -> dict[str, Any]:
    return {"staff_id": p.staff_id, "name": p.name, "role": p.role.value, "role_label": p.role.label,
            "region": {"id": p.region_id, "name": p.region_name}}


def _id(request: web.Request) -> int:
    raw = request.match_info["id"]
    return int(raw) if raw.isdigit() else 0


async def login(request: web.Request) -> web.StreamResponse:
    data = await _json_body(request)
    st = state(request)
    now = st.now()
    old = request.cookies.get(COOKIE)

    policy = login_policy(request)

    def do(s: Session) -> tuple[str, Any] | bool:
        res = auth_login(s, str(data.get("username") or ""), str(data.get("password") or ""), now,
                         remote_addr=remote(request), hours=st.config.session_hours, old_token=old, policy=policy)
        if res.token is None:
            return res.locked
        s.flush()
        return res.token, load_session(s, res.token, now)

    result = await st.write(do)
    st.session_cache.drop(old)  # rotated: the old cookie is dead at once
    if result is True:
        return json_error(429, policy.locked_message)
    if not isinstance(result, tuple):
        return json_error(401, "用户名或密码不正确")
    token, live = result
    resp = json_response({"csrf_token": live.csrf_token, "me": _me_json(live.principal)})
    set_session_cookie(request, resp, token)
    return resp


@api
async def logout(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(COOKIE, "")
    state(request).session_cache.drop(token)
    await state(request).write(lambda s: end_session(s, token))
    state(request).session_cache.drop(token)
    resp = json_response({"ok": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


@api
async def me(request: web.Request) -> web.StreamResponse:
    return json_response(_me_json(principal(request)))


@api
async def escalation_list(request: web.Request) -> web.StreamResponse:
    st, p = state(request), principal(request)
    now = st.now()
    sev = request.query.get("severity")
    if sev and sev not in {s.value for s in Severity}:
        return json_error(400, "severity 只能是 P1、P2 或 P3")
    statuses = (EscalationStatus.RESOLVED,) if request.query.get("status") == "resolved" else queries.ACTIVE
    try:
        pg = max(1, int(request.query.get("page", "1")))
        size = min(200, max(1, int(request.query.get("page_size", str(st.config.page_size)))))
    except ValueError:
        return json_error(400, "page / page_size 必须是正整数")
    q = await st.read(lambda s: queries.queue(s, p, now, statuses=statuses, severity=Severity(sev) if sev else None,
                                              mine=request.query.get("mine") == "1", page=pg, page_size=size))
    return json_response({"items": [i.as_json() for i in q.items], "total": q.total, "overdue_total": q.overdue_total,
                          "page": q.page, "pages": q.pages})


def _escalation_json(s: Session, p: Principal, eid: int) -> dict[str, Any] | None:
    esc = queries.scoped_escalation(s, p, eid)
    if esc is None:
        return None
    elder = esc.elder
    assignee = s.get(Staff, esc.assignee_staff_id) if esc.assignee_staff_id else None
    return {
        "id": esc.id, "severity": esc.severity.value, "reason": esc.reason, "detail": esc.detail,
        "status": esc.status.value, "status_label": esc.status.label, "created_at": esc.created_at.isoformat(),
        "ack_deadline_at": esc.ack_deadline_at.isoformat(), "deadline_at": esc.deadline_at.isoformat(),
        "acknowledged_at": esc.acknowledged_at.isoformat() if esc.acknowledged_at else None,
        "resolved_at": esc.resolved_at.isoformat() if esc.resolved_at else None,
        "resolution_kind": esc.resolution_kind, "resolution_note": esc.resolution_note,
        "assignee": {"id": assignee.id, "name": assignee.name} if assignee else None,
        "accepted_contact_id": esc.accepted_contact_id,
        "elder": {"id": elder.id, "name": elder.name, "region": elder.region.name,
                  "id_number_masked": elder.id_number_masked},
        "calls": [{"id": c.id, "started_at": c.started_at.isoformat(), "channel": c.channel,
                   "outcome": c.outcome.value if c.outcome else None, "transcript": c.transcript,
                   "recording_url": f"/api/calls/{c.id}/recording" if c.recording_path else None}
                  for c in queries.recent_calls(s, elder.id)],
        "events": [{"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "note": e.note} for e in esc.events],
        "visits": [{"id": v.id, "kind": v.kind.value, "visited_at": v.visited_at.isoformat()}
                   for v in queries.escalation_visits(s, esc.id)],
    }


@api
async def escalation_get(request: web.Request) -> web.StreamResponse:
    p, eid = principal(request), _id(request)
    data = await state(request).read(lambda s: _escalation_json(s, p, eid))
    return json_response(data) if data else json_error(404, "没有找到这条事项（或不在您的管辖范围）")


async def _change(request: web.Request, op: str, note: str | None = None) -> web.StreamResponse:
    st, p, eid = state(request), principal(request), _id(request)
    now = st.now()

    def do(s: Session) -> tuple[int, Any]:
        esc = queries.scoped_escalation(s, p, eid)
        if esc is None:
            return 404, "没有找到这条事项（或不在您的管辖范围）"
        staff = s.get(Staff, p.staff_id)
        assert staff is not None
        try:
            if op == "ack":
                acknowledge(s, esc, staff, now)
            else:
                resolve(s, esc, staff, now, ResolutionKind.REFERRAL, note=note)
        except EscalationError as exc:
            return 409, str(exc)
        s.flush()
        return 200, _escalation_json(s, p, eid)

    code, body = await st.write(do)
    return json_response(body) if code == 200 else json_error(code, body)


@api
async def escalation_ack(request: web.Request) -> web.StreamResponse:
    return await _change(request, "ack")


@api
async def escalation_resolve(request: web.Request) -> web.StreamResponse:
    data = await _json_body(request)
    if data.get("kind", "referral") != "referral":
        return json_error(400, "此接口只用于转介结案；探访或电话回访请用 POST /api/elders/{id}/visits 并带 escalation_id")
    return await _change(request, "resolve", str(data.get("note") or ""))


def _elder_json(e: Any, village: str) -> dict[str, Any]:
    return {"id": e.id, "name": e.name, "region": village, "id_number_masked": e.id_number_masked,
            "status": e.status.value, "categories": sorted(c.value for c in e.categories)}


@api
async def elder_list(request: web.Request) -> web.StreamResponse:
    st, p = state(request), principal(request)
    q = request.query.get("q", "")
    rows = await st.read(lambda s: [_elder_json(e, e.region.name) for e in queries.search_elders(s, p, st.vault, q)])
    return json_response({"items": rows})


@api
async def elder_get(request: web.Request) -> web.StreamResponse:
    st, p, eid = state(request), principal(request), _id(request)

    def do(s: Session) -> dict[str, Any] | None:
        e = scoped_elder(s, p, eid)
        if e is None:
            return None
        prof = e.profile.as_dict() if e.profile else {}
        prof = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in prof.items()}
        return _elder_json(e, e.region.name) | {
            "address": e.address, "risk_tier": e.risk_tier.value,
            "phones": [{"id": ph.id, "kind": ph.kind.value, "masked": ph.number_masked} for ph in e.phones],
            "contacts": [{"id": c.id, "name": c.name, "relation": c.relation, "kind": c.kind.value,
                          "phone_masked": c.phone_masked} for c in queries.contacts_of(s, e.id)],
            "profile": prof, "timeline": [t.as_json() for t in queries.timeline(s, e.id)],
        }

    data = await st.read(do)
    return json_response(data) if data else json_error(404, "没有找到这位老人（或不在您的管辖范围）")


@api
async def elder_reveal(request: web.Request) -> web.StreamResponse:
    data = await _json_body(request)
    st, p, eid = state(request), principal(request), _id(request)
    now = st.now()
    what = str(data.get("what") or "")
    try:
        rev = await st.write(lambda s: actions.reveal(s, p, st.vault, eid, what, now, remote(request)))
    except actions.NotFound as exc:
        return json_error(404, str(exc))
    except actions.InvalidInput as exc:
        return json_error(400, str(exc))
    return json_response({"label": rev.label, "value": rev.value, "audited": True})


@api
async def elder_consent(request: web.Request) -> web.StreamResponse:
    data = await _json_body(request)
    st, p, eid = state(request), principal(request), _id(request)
    now = st.now()
    raw = data.get("status")
    if raw not in (ConsentStatus.GRANTED.value, ConsentStatus.WITHDRAWN.value):
        return json_error(400, "status 只能是 granted（同意）或 withdrawn（撤回同意）")
    note = str(data.get("note") or "")[:255]
    after = timedelta(days=st.config.consent_deletion_days)
    try:
        ch = await st.write(lambda s: actions.change_consent(s, p, eid, ConsentStatus(raw), now, note, after,
                                                             remote(request)))
    except actions.NotFound as exc:
        return json_error(404, str(exc))
    except actions.Forbidden as exc:
        return json_error(403, str(exc))
    except actions.InvalidInput as exc:
        return json_error(409, str(exc))
    return json_response({"elder_id": ch.elder_id, "status": ch.status.value, "cancelled_checkins": ch.cancelled_checkins,
                          "deletion_due_at": ch.deletion_due_at.isoformat() if ch.deletion_due_at else None})


@api
async def elder_export(request: web.Request) -> web.StreamResponse:
    st, p, eid = state(request), principal(request), _id(request)
    now = st.now()
    try:
        data = await st.write(lambda s: actions.export_personal_data(s, p, st.vault, eid, now, remote(request)))
    except actions.NotFound as exc:
        return json_error(404, str(exc))
    except actions.Forbidden as exc:
        return json_error(403, str(exc))
    return json_response(data)


@api
async def visit_create(request: web.Request) -> web.StreamResponse:
    data = await _json_body(request)
    st, p, eid = state(request), principal(request), _id(request)
    now = st.now()
    try:
        kind = VisitKind(str(data.get("kind", "home")))
        if kind is VisitKind.REMOTE:
            raise ValueError
    except ValueError:
        return json_error(400, "kind 只能是 home（上门）或 phone（电话）")
    try:
        visited_at = datetime.fromisoformat(data["visited_at"]) if data.get("visited_at") else now
        if visited_at.tzinfo is None:
            visited_at = visited_at.replace(tzinfo=SHANGHAI)
        esc_id = data.get("escalation_id")
        vi = actions.VisitInput(
            kind=kind, visited_at=visited_at, elder_seen=bool(data.get("elder_seen", True)),
            profile_updates=actions.parse_profile_updates(dict(data.get("profile_updates") or {})),
            hazard_removed=bool(data.get("hazard_removed")), service_connected=bool(data.get("service_connected")),
            benefit_application_started=bool(data.get("benefit_application_started")),
            notes=str(data.get("notes") or "")[:4000], escalation_id=int(esc_id) if esc_id is not None else None,
            close_escalation=bool(data.get("close_escalation", True)),
        )
        visit = await st.write(lambda s: actions.record_visit(s, p, eid, vi, now))
    except actions.NotFound as exc:
        return json_error(404, str(exc))
    except (actions.InvalidInput, ValueError, TypeError) as exc:
        return json_error(400, str(exc) or "请求内容不正确")
    return json_response({"id": visit.id, "escalation_id": visit.escalation_id}, status=201)


@api
async def recording(request: web.Request) -> web.StreamResponse:
    st, p, cid = state(request), principal(request), _id(request)
    now = st.now()
    try:
        path = await st.write(lambda s: actions.open_recording(s, p, st.config.recordings_dir, cid, now, remote(request)))
    except actions.NotFound as exc:
        return json_error(404, str(exc))
    return web.FileResponse(path, headers={"Cache-Control": "no-store"})


@api
async def ledger(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        return json_error(400, "缺少文件字段 file")
    result = await run_ledger_import(request, upload.filename, upload.file.read(), form.get("dry_run") == "1")
    body = result.as_dict() | {"rows": result.rows, "written": result.written, "ok": result.ok}
    return json_response(body, status=200 if result.ok else 422)


@api
async def event_list(request: web.Request) -> web.StreamResponse:
    st, p = state(request), principal(request)
    now = st.now()
    rows = await st.read(lambda s: events.list_events(s, p, now))
    return json_response({"items": [r.as_json() for r in rows]})


@api
async def lockdown(request: web.Request) -> web.StreamResponse:
    data = await _json_body(request)
    st, p = state(request), principal(request)
    now = st.now()
    try:
        starts = datetime.fromisoformat(data["starts_at"]) if data.get("starts_at") else now
        ends = datetime.fromisoformat(str(data.get("ends_at")))
        starts = starts if starts.tzinfo else starts.replace(tzinfo=SHANGHAI)
        ends = ends if ends.tzinfo else ends.replace(tzinfo=SHANGHAI)
        ev_id = await asyncio.to_thread(events.declare_and_replan, st.sessions, p, str(data.get("region") or ""),
                                        str(data.get("title") or ""), starts, ends, now, st.config.policies)
    except (events.EventError, ValueError, TypeError) as exc:
        return json_error(400, str(exc) or "请求内容不正确（需要 region、ends_at）")
    return json_response({"id": ev_id}, status=201)


@api
async def event_end(request: web.Request) -> web.StreamResponse:
    st, p, eid = state(request), principal(request), _id(request)
    now = st.now()
    try:
        await asyncio.to_thread(events.end_and_replan, st.sessions, p, eid, now, st.config.policies)
    except events.EventNotFound as exc:
        return json_error(404, str(exc))
    except events.EventError as exc:
        return json_error(400, str(exc))
    return json_response({"ok": True})


@api
async def report(request: web.Request) -> web.StreamResponse:
    month = request.query.get("month") or state(request).now().astimezone(SHANGHAI).strftime("%Y-%m")
    try:
        rep = await build_report(request, month, request.query.get("region") or None)
    except web.HTTPNotFound as exc:
        return json_error(404, exc.text or "没有这个地区")
    except web.HTTPBadRequest as exc:
        return json_error(400, exc.text or "参数错误")
    return json_response(rep.as_json())


@api
async def alerts(request: web.Request) -> web.StreamResponse:
    st, p = state(request), principal(request)

    def do(s: Session) -> dict[str, Any]:
        def row(a: Any) -> dict[str, Any]:
            return {"id": a.id, "kind": a.kind, "channel": a.channel, "title": a.title, "body": a.body,
                    "status": a.status.value, "created_at": a.created_at.isoformat(), "last_error": a.last_error,
                    "escalation_id": a.escalation_id}
        return {"failed": [row(a) for a in queries.failed_alerts(s, p)], "mine": [row(a) for a in queries.my_alerts(s, p)]}

    return json_response(await st.read(do))


async def openapi(request: web.Request) -> web.StreamResponse:
    return json_response(OPENAPI)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/openapi.json", openapi)
    r.add_post("/api/login", login)
    r.add_post("/api/logout", logout)
    r.add_get("/api/me", me)
    r.add_get("/api/escalations", escalation_list)
    r.add_get("/api/escalations/{id}", escalation_get)
    r.add_post("/api/escalations/{id}/ack", escalation_ack)
    r.add_post("/api/escalations/{id}/resolve", escalation_resolve)
    r.add_get("/api/elders", elder_list)
    r.add_get("/api/elders/{id}", elder_get)
    r.add_post("/api/elders/{id}/reveal", elder_reveal)
    r.add_post("/api/elders/{id}/visits", visit_create)
    r.add_post("/api/elders/{id}/consent", elder_consent)
    r.add_post("/api/elders/{id}/export", elder_export)
    r.add_get("/api/calls/{id}/recording", recording)
    r.add_post("/api/ledger", ledger)
    r.add_get("/api/events", event_list)
    r.add_post("/api/events/lockdown", lockdown)
    r.add_post("/api/events/{id}/end", event_end)
    r.add_get("/api/reports/monthly", report)
    r.add_get("/api/alerts", alerts)
