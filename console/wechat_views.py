"""Pages and JSON routes of the elder profile's 微信绑定 section (see console.wechat)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from console import actions, wechat
from console.web import api, json_error, json_response, page, principal, remote, render, state


def _int(raw: Any) -> int:
    text = str(raw or "")
    return int(text) if text.isdigit() and len(text) < 12 else 0


def _eid(request: web.Request) -> int:
    return _int(request.match_info["id"])


def _profile(s: Session, request: web.Request, eid: int, issued: Any = None, error: str | None = None) -> dict[str, Any]:
    from console.views import _elder_context

    return _elder_context(s, request, eid) | {"revealed": None, "issued": issued, "wechat_error": error}


def _raise_http(exc: Exception) -> None:
    if isinstance(exc, actions.NotFound):
        raise web.HTTPNotFound(text=str(exc)) from exc
    if isinstance(exc, actions.Forbidden):
        raise web.HTTPForbidden(text=str(exc)) from exc


@page
async def issue_page(request: web.Request) -> web.StreamResponse:
    eid = _eid(request)
    form = await request.post()
    st, me = state(request), principal(request)
    now = st.now()

    def do(s: Session) -> tuple[int, dict[str, Any]]:
        try:
            issued = wechat.issue(s, me, st.vault, eid, str(form.get("target") or ""), str(form.get("kind") or "code"),
                                  now, remote(request))
        except (actions.NotFound, actions.Forbidden) as exc:
            _raise_http(exc)
            raise
        except actions.InvalidInput as exc:
            return 400, _profile(s, request, eid, error=str(exc))
        target = str(form.get("target"))
        return 200, _profile(s, request, eid, issued={"code": issued, "target": target})

    status, ctx = await st.write(do)
    return render(request, "elder.html", ctx, status=status)


async def _change(request: web.Request, op: str) -> web.StreamResponse:
    eid = _eid(request)
    form = await request.post()
    st, me = state(request), principal(request)
    now = st.now()

    def do(s: Session) -> None:
        try:
            if op == "revoke":
                wechat.revoke(s, me, eid, _int(form.get("code_id")), now, remote(request))
            else:
                wechat.unbind_binding(s, me, eid, _int(form.get("binding_id")), now, remote(request))
        except (actions.NotFound, actions.Forbidden) as exc:
            _raise_http(exc)

    await st.write(do)
    raise web.HTTPSeeOther(f"/elders/{eid}#wechat")


@page
async def revoke_page(request: web.Request) -> web.StreamResponse:
    return await _change(request, "revoke")


@page
async def unbind_page(request: web.Request) -> web.StreamResponse:
    return await _change(request, "unbind")


def _api_error(exc: Exception) -> web.Response:
    if isinstance(exc, actions.NotFound):
        return json_error(404, str(exc))
    if isinstance(exc, actions.Forbidden):
        return json_error(403, str(exc))
    return json_error(400, str(exc))


@api
async def codes_get(request: web.Request) -> web.StreamResponse:
    st, me, eid = state(request), principal(request), _eid(request)
    now = st.now()
    try:
        targets = await st.read(lambda s: wechat.wechat_targets(s, me, eid))
    except actions.NotFound as exc:
        return _api_error(exc)
    return json_response({"elder_id": eid, "targets": wechat.targets_json(targets, now)})


@api
async def codes_post(request: web.Request) -> web.StreamResponse:
    from console.api import _json_body

    data = await _json_body(request)
    st, me, eid = state(request), principal(request), _eid(request)
    now = st.now()
    try:
        issued = await st.write(lambda s: wechat.issue(s, me, st.vault, eid, str(data.get("target") or ""),
                                                       str(data.get("kind") or "code"), now, remote(request)))
    except (actions.NotFound, actions.Forbidden, actions.InvalidInput) as exc:
        return _api_error(exc)
    return json_response({"code_id": issued.code_id, "kind": str(issued.kind), "value": issued.value,
                          "expires_at": issued.expires_at.isoformat(), "instructions": wechat.INSTRUCTIONS}, status=201)


@api
async def codes_delete(request: web.Request) -> web.StreamResponse:
    st, me, eid = state(request), principal(request), _eid(request)
    code_id = _int(request.match_info["code_id"])
    now = st.now()
    try:
        done = await st.write(lambda s: wechat.revoke(s, me, eid, code_id, now, remote(request)))
    except (actions.NotFound, actions.Forbidden) as exc:
        return _api_error(exc)
    if not done:
        return json_error(409, "该绑定码已使用或已作废")
    return json_response({"ok": True, "code_id": code_id})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/elders/{id}/wechat/codes", issue_page)
    r.add_post("/elders/{id}/wechat/revoke", revoke_page)
    r.add_post("/elders/{id}/wechat/unbind", unbind_page)
    r.add_get("/api/elders/{id}/wechat-codes", codes_get)
    r.add_post("/api/elders/{id}/wechat-codes", codes_post)
    r.add_delete("/api/elders/{id}/wechat-codes/{code_id}", codes_delete)
