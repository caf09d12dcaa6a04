"""Server-rendered pages: login, escalation queue and detail, elders, visits, recordings, alerts."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy.orm import Session

from console import actions, queries, wechat
from console.auth import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    LoginPolicy,
    csrf_ok,
    end_session,
    login,
    new_token,
)
from console.web import page, principal, remote, render, state
from scheduler.escalations import EscalationError, acknowledge, resolve
from storage.enums import ConsentStatus, EscalationStatus, Severity, VisitKind
from storage.models.escalation import Escalation, ResolutionKind
from storage.models.staff import Staff


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/escalations"


def login_policy(request: web.Request) -> LoginPolicy:
    cfg = state(request).config
    return LoginPolicy(cfg.login_max_failures, timedelta(minutes=cfg.login_lockout_minutes))


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    st = state(request)
    response.set_cookie(COOKIE, token, httponly=True, samesite="Lax", secure=st.config.cookie_secure, path="/",
                        max_age=int(st.config.session_hours * 3600))


async def login_form(request: web.Request) -> web.StreamResponse:
    token = new_token()
    resp = render(request, "login.html", {"login_csrf": token, "next": _safe_next(request.query.get("next")),
                                          "error": None})
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict",
                    secure=state(request).config.cookie_secure, path="/login")
    return resp


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    nxt = _safe_next(str(form.get("next") or ""))
    if not csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE), str(form.get("_csrf") or "")):
        return render(request, "error.html", {"message": "登录页面已过期，请刷新后重新登录。"}, status=403)
    username, password = str(form.get("username") or ""), str(form.get("password") or "")
    st = state(request)
    now = st.now()
    old = request.cookies.get(COOKIE)

    policy = login_policy(request)
    result = await st.write(lambda s: login(s, username, password, now, remote_addr=remote(request),
                                            hours=st.config.session_hours, old_token=old, policy=policy))
    st.session_cache.drop(old)  # rotated: the old cookie is dead at once
    token = result.token
    if token is None:
        fresh = new_token()
        error = policy.locked_message if result.locked else "用户名或密码不正确"
        resp = render(request, "login.html", {"login_csrf": fresh, "next": nxt, "error": error},
                      status=429 if result.locked else 401)
        resp.set_cookie(LOGIN_CSRF_COOKIE, fresh, httponly=True, samesite="Strict",
                        secure=st.config.cookie_secure, path="/login")
        return resp
    resp = web.HTTPSeeOther(nxt)
    set_session_cookie(request, resp, token)
    resp.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise resp


@page
async def logout(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(COOKIE, "")
    state(request).session_cache.drop(token)
    await state(request).write(lambda s: end_session(s, token))
    state(request).session_cache.drop(token)
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/escalations")


def _int(value: Any, default: int = 1) -> int:
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return default


@page
async def escalation_queue(request: web.Request) -> web.StreamResponse:
    st, me = state(request), principal(request)
    now = st.now()
    sev_raw = request.query.get("severity") or ""
    severity = Severity(sev_raw) if sev_raw in {s.value for s in Severity} else None
    show = request.query.get("show", "active")
    statuses = (EscalationStatus.RESOLVED,) if show == "resolved" else queries.ACTIVE
    mine = request.query.get("mine") == "1"
    pg = _int(request.query.get("page"))
    result = await st.read(lambda s: queries.queue(s, me, now, statuses=statuses, severity=severity, mine=mine,
                                                   page=pg, page_size=st.config.page_size))
    return render(request, "queue.html", {"q": result, "severity": sev_raw, "show": show, "mine": mine,
                                          "severities": list(Severity)})


def _escalation_context(s: Session, request: web.Request, escalation_id: int) -> dict[str, Any]:
    me = principal(request)
    esc = queries.scoped_escalation(s, me, escalation_id)
    if esc is None:
        raise web.HTTPNotFound(text="没有找到这条事项（或不在您的管辖范围）")
    elder = esc.elder
    assignee = s.get(Staff, esc.assignee_staff_id) if esc.assignee_staff_id else None
    return {
        "esc": esc, "elder": elder, "events": list(esc.events), "calls": queries.recent_calls(s, elder.id),
        "visits": queries.escalation_visits(s, esc.id), "assignee": assignee,
        "accepted_contact": esc.accepted_contact, "region": elder.region,
        "resolution_kinds": [ResolutionKind.REFERRAL],
    }


@page
async def escalation_detail(request: web.Request) -> web.StreamResponse:
    eid = _int(request.match_info["id"], 0)
    ctx = await state(request).read(lambda s: _escalation_context(s, request, eid))
    return render(request, "escalation.html", ctx | {"error": request.query.get("error")})


async def _act_on_escalation(request: web.Request, eid: int,
                             act: Callable[[Session, Escalation, Staff], object]) -> str | None:
    """Run a staff action on an escalation in scope (404 otherwise); the Chinese error, if refused."""
    st, me = state(request), principal(request)

    def do(s: Session) -> str | None:
        esc = queries.scoped_escalation(s, me, eid)
        if esc is None:
            raise web.HTTPNotFound(text="没有找到这条事项（或不在您的管辖范围）")
        staff = s.get(Staff, me.staff_id)
        assert staff is not None
        try:
            act(s, esc, staff)
        except EscalationError as exc:
            return str(exc)
        return None

    return await st.write(do)


@page
async def escalation_ack(request: web.Request) -> web.StreamResponse:
    eid = _int(request.match_info["id"], 0)
    now = state(request).now()
    err = await _act_on_escalation(request, eid, lambda s, esc, staff: acknowledge(s, esc, staff, now))
    raise web.HTTPSeeOther(f"/escalations/{eid}" + (f"?error={err}" if err else ""))


@page
async def escalation_resolve(request: web.Request) -> web.StreamResponse:
    """Close with a referral (a visit or call is recorded through the visit form instead)."""
    eid = _int(request.match_info["id"], 0)
    form = await request.post()
    note = str(form.get("note") or "")
    st = state(request)
    now = st.now()
    err = await _act_on_escalation(
        request, eid, lambda s, esc, staff: resolve(s, esc, staff, now, ResolutionKind.REFERRAL, note=note)
    )
    if err:
        ctx = await st.read(lambda s: _escalation_context(s, request, eid))
        return render(request, "escalation.html", ctx | {"error": err}, status=400)
    raise web.HTTPSeeOther(f"/escalations/{eid}")


@page
async def elder_search(request: web.Request) -> web.StreamResponse:
    st, me = state(request), principal(request)
    q = request.query.get("q", "")
    elders = await st.read(lambda s: [(e, e.region.name) for e in queries.search_elders(s, me, st.vault, q)])
    return render(request, "elders.html", {"q": q, "elders": elders})


def _elder_context(s: Session, request: web.Request, elder_id: int) -> dict[str, Any]:
    from console.scope import scoped_elder

    me = principal(request)
    elder = scoped_elder(s, me, elder_id)
    if elder is None:
        raise web.HTTPNotFound(text="没有找到这位老人（或不在您的管辖范围）")
    return {
        "elder": elder, "region": elder.region, "phones": list(elder.phones),
        "contacts": queries.contacts_of(s, elder.id), "profile": actions.profile_rows(elder.profile),
        "timeline": queries.timeline(s, elder.id), "categories": sorted(c.label for c in elder.categories),
        "wechat": wechat.wechat_targets(s, me, elder.id), "wechat_instructions": wechat.INSTRUCTIONS,
    }


@page
async def elder_profile(request: web.Request) -> web.StreamResponse:
    eid = _int(request.match_info["id"], 0)
    ctx = await state(request).read(lambda s: _elder_context(s, request, eid))
    return render(request, "elder.html", ctx | {"revealed": None})


@page
async def elder_reveal(request: web.Request) -> web.StreamResponse:
    eid = _int(request.match_info["id"], 0)
    form = await request.post()
    what = str(form.get("what") or "")
    st, me = state(request), principal(request)
    now = st.now()

    def do(s: Session) -> tuple[actions.Revealed, dict[str, Any]]:
        try:
            rev = actions.reveal(s, me, st.vault, eid, what, now, remote(request))
        except actions.NotFound as exc:
            raise web.HTTPNotFound(text=str(exc)) from exc
        except actions.InvalidInput as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        return rev, _elder_context(s, request, eid)

    rev, ctx = await st.write(do)
    return render(request, "elder.html", ctx | {"revealed": rev, "revealed_key": what})


@page
async def elder_consent(request: web.Request) -> web.StreamResponse:
    """Record consent or its withdrawal (withdrawal: calls stop now, personal data erased later)."""
    eid = _int(request.match_info["id"], 0)
    form = await request.post()
    raw = str(form.get("consent") or "")
    if raw not in (ConsentStatus.GRANTED.value, ConsentStatus.WITHDRAWN.value):
        raise web.HTTPBadRequest(text="同意状态只能是“同意”或“撤回同意”")
    st, me = state(request), principal(request)
    now = st.now()
    after = timedelta(days=st.config.consent_deletion_days)
    note = str(form.get("note") or "")[:255]

    def do(s: Session) -> None:
        try:
            actions.change_consent(s, me, eid, ConsentStatus(raw), now, note, after, remote(request))
        except actions.NotFound as exc:
            raise web.HTTPNotFound(text=str(exc)) from exc
        except actions.Forbidden as exc:
            raise web.HTTPForbidden(text=str(exc)) from exc
        except actions.InvalidInput as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc

    await st.write(do)
    raise web.HTTPSeeOther(f"/elders/{eid}")


@page
async def elder_export(request: web.Request) -> web.StreamResponse:
    """Download everything held about the elder as JSON (admins; audited)."""
    eid = _int(request.match_info["id"], 0)
    st, me = state(request), principal(request)
    now = st.now()

    def do(s: Session) -> dict[str, Any]:
        try:
            return actions.export_personal_data(s, me, st.vault, eid, now, remote(request))
        except actions.NotFound as exc:
            raise web.HTTPNotFound(text=str(exc)) from exc
        except actions.Forbidden as exc:
            raise web.HTTPForbidden(text=str(exc)) from exc

    data = await st.write(do)
    body = json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")
    return web.Response(body=body, content_type="application/json", charset="utf-8", headers={
        "Content-Disposition": f'attachment; filename="tanfang-elder-{eid}.json"', "Cache-Control": "no-store"})


SHANGHAI = ZoneInfo("Asia/Shanghai")


def parse_visit_form(form: Any, now: datetime) -> actions.VisitInput:
    kind_raw = str(form.get("kind") or "home")
    if kind_raw not in (VisitKind.HOME.value, VisitKind.PHONE.value):
        raise actions.InvalidInput("探访方式只能是上门探访或电话探访")
    when_raw = str(form.get("visited_at") or "").strip()
    if when_raw:
        try:
            visited_at = datetime.fromisoformat(when_raw).replace(tzinfo=SHANGHAI)
        except ValueError as exc:
            raise actions.InvalidInput(f"探访时间格式不正确：“{when_raw}”，应为 2026-11-28T09:30") from exc
    else:
        visited_at = now
    esc_raw = str(form.get("escalation_id") or "").strip()
    return actions.VisitInput(
        kind=VisitKind(kind_raw), visited_at=visited_at, elder_seen=form.get("elder_seen", "1") == "1",
        profile_updates=actions.parse_profile_updates({k: form.get(k) for k in actions.PROFILE_LABELS}),
        hazard_removed=form.get("hazard_removed") == "1", service_connected=form.get("service_connected") == "1",
        benefit_application_started=form.get("benefit_application_started") == "1",
        notes=str(form.get("notes") or "")[:4000], escalation_id=int(esc_raw) if esc_raw.isdigit() else None,
    )


@page
async def visit_form(request: web.Request) -> web.StreamResponse:
    eid = _int(request.match_info["id"], 0)
    esc_id = request.query.get("escalation")
    ctx = await state(request).read(lambda s: _elder_context(s, request, eid))
    return render(request, "visit.html", ctx | {"escalation_id": esc_id if esc_id and esc_id.isdigit() else "",
                                                 "error": None, "form": {}, "labels": actions.PROFILE_LABELS,
                                                 "mobility_values": actions.MOBILITY_VALUES})


@page
async def visit_submit(request: web.Request) -> web.StreamResponse:
    eid = _int(request.match_info["id"], 0)
    form = await request.post()
    st, me = state(request), principal(request)
    now = st.now()
    try:
        data = parse_visit_form(form, now)
        visit = await st.write(lambda s: actions.record_visit(s, me, eid, data, now))
    except actions.NotFound as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    except actions.InvalidInput as exc:
        ctx = await st.read(lambda s: _elder_context(s, request, eid))
        return render(request, "visit.html", ctx | {"escalation_id": str(form.get("escalation_id") or ""),
                                                     "error": str(exc), "form": form, "labels": actions.PROFILE_LABELS,
                                                     "mobility_values": actions.MOBILITY_VALUES}, status=400)
    if visit.escalation_id:
        raise web.HTTPSeeOther(f"/escalations/{visit.escalation_id}")
    raise web.HTTPSeeOther(f"/elders/{eid}")


@page
async def recording(request: web.Request) -> web.StreamResponse:
    cid = _int(request.match_info["id"], 0)
    st, me = state(request), principal(request)
    now = st.now()

    def do(s: Session) -> Any:
        try:
            return actions.open_recording(s, me, st.config.recordings_dir, cid, now, remote(request))
        except actions.NotFound as exc:
            raise web.HTTPNotFound(text=str(exc)) from exc

    path = await st.write(do)
    resp = web.FileResponse(path, headers={"Cache-Control": "no-store"})
    return resp


@page
async def alerts_page(request: web.Request) -> web.StreamResponse:
    st, me = state(request), principal(request)
    failed, mine = await st.read(lambda s: (queries.failed_alerts(s, me), queries.my_alerts(s, me)))
    return render(request, "alerts.html", {"failed": failed, "mine": mine})
