"""Console plumbing: the per-app state, database calls off the event loop, the login guard
(session + CSRF), security headers and template rendering."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import aiohttp_jinja2
import jinja2
from aiohttp import web
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from console.auth import COOKIE, SECURITY_HEADERS, LiveSession, SessionCache, csrf_ok, load_session_expiry
from console.config import ConsoleConfig
from console.scope import Principal
from storage.crypto import Vault

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ConsoleState:
    sessions: sessionmaker[Session]
    vault: Vault
    now: Callable[[], datetime]
    config: ConsoleConfig
    session_cache: SessionCache = field(init=False)

    def __post_init__(self) -> None:
        self.session_cache = SessionCache(self.config.session_cache_seconds)

    @property
    def engine(self) -> Engine:
        bind = self.sessions.kw["bind"]
        assert isinstance(bind, Engine)
        return bind

    def _run(self, fn: Callable[[Session], T], write: bool) -> T:
        with self.engine.connect() as conn:
            if write:  # SQLite: take the write lock at BEGIN (see storage.db)
                conn.info["write"] = True
            try:
                with conn.begin(), Session(bind=conn, expire_on_commit=False) as s:
                    result = fn(s)
                    s.flush()
                return result
            finally:
                conn.info.pop("write", None)

    async def read(self, fn: Callable[[Session], T]) -> T:
        return await asyncio.to_thread(self._run, fn, False)

    async def write(self, fn: Callable[[Session], T]) -> T:
        """One transaction: everything ``fn`` does commits together or not at all."""
        return await asyncio.to_thread(self._run, fn, True)


STATE: web.AppKey[ConsoleState] = web.AppKey("console_state", ConsoleState)
JINJA: web.AppKey[jinja2.Environment] = web.AppKey("console_jinja", jinja2.Environment)
LIVE: web.RequestKey[LiveSession] = web.RequestKey("console_live", LiveSession)

PUBLIC_PREFIXES = ("/static/console/",)
CONSOLE_PREFIXES = ("/login", "/logout", "/escalations", "/elders", "/recordings", "/ledger", "/events",
                    "/report", "/alerts", "/api/", "/static/console/")


def state(request: web.Request) -> ConsoleState:
    return request.app[STATE]


def remote(request: web.Request) -> str | None:
    return request.remote


def principal(request: web.Request) -> Principal:
    live: LiveSession = request[LIVE]
    return live.principal


async def current_session(request: web.Request) -> LiveSession | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    st = state(request)
    now = st.now()
    live = st.session_cache.get(token, now)
    if live is not None:
        return live
    live, expires_at = await st.read(lambda s: load_session_expiry(s, token, now))
    if live is not None and expires_at is not None:
        st.session_cache.put(token, live, expires_at)
    return live


def page(handler: Handler) -> Handler:
    """A logged-in HTML page; POSTs need the form's ``_csrf``."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        live = await current_session(request)
        if live is None:
            if request.method == "GET":
                raise web.HTTPSeeOther(f"/login?next={request.rel_url.path}")
            raise web.HTTPSeeOther("/login")
        request[LIVE] = live
        if request.method not in ("GET", "HEAD"):
            form = await request.post()
            given = form.get("_csrf")
            if not csrf_ok(live.csrf_token, given if isinstance(given, str) else None):
                return render(request, "error.html", {"message": "表单已过期或来源不明（CSRF 校验失败），请返回刷新后重试。"},
                              status=403)
        return await handler(request)

    return wrapped


def api(handler: Handler) -> Handler:
    """A logged-in JSON route; state-changing methods need the ``X-CSRF-Token`` header."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        live = await current_session(request)
        if live is None:
            return json_error(401, "未登录或登录已过期")
        request[LIVE] = live
        if request.method not in ("GET", "HEAD") and not csrf_ok(live.csrf_token,
                                                                 request.headers.get("X-CSRF-Token")):
            return json_error(403, "缺少或错误的 X-CSRF-Token")
        return await handler(request)

    return wrapped


def json_response(data: Any, status: int = 200) -> web.Response:
    import json

    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False, default=str))


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return json_response({"error": message, **extra}, status=status)


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/" or request.path.startswith(CONSOLE_PREFIXES):
        for k, v in SECURITY_HEADERS.items():
            if k == "Cache-Control" and request.path.startswith("/static/console/"):
                response.headers[k] = "public, max-age=3600"
                continue
            response.headers.setdefault(k, v)


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    live: LiveSession | None = request.get(LIVE)
    st = state(request)
    base = {
        "me": live.principal if live else None,
        "csrf": live.csrf_token if live else "",
        "service_name": st.config.service_name,
        "now": st.now(),
        "path": request.path,
    }
    base.update(context)
    return aiohttp_jinja2.render_template(template, request, base, status=status, app_key=JINJA)


EVENT_LABELS = {
    "created": "创建", "assigned": "分派", "acknowledged": "认领", "resolved": "解决",
    "raised_to_supervisor": "超时上报上级", "contact_call_queued": "呼叫联系人", "contact_declined": "联系人未接受",
    "contact_accepted": "联系人已接受", "contacts_exhausted": "联系人均未接受",
}


def actor_label(actor: str) -> str:
    if actor == "system":
        return "系统"
    kind, _, ident = actor.partition(":")
    return {"staff": f"工作人员#{ident}", "contact": f"联系人#{ident}"}.get(kind, actor)


def setup_templates(app: web.Application, tz: str) -> None:
    zone = ZoneInfo(tz)

    def local(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return value.astimezone(zone).strftime(fmt) if value else ""

    # Templates ship with the code: compiled once per process, never re-checked on disk per request.
    env = aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("console", "templates"), app_key=JINJA,
                               autoescape=jinja2.select_autoescape(default=True), auto_reload=False)
    env.filters["local"] = local
    env.filters["event_label"] = lambda kind: EVENT_LABELS.get(kind, kind)
    env.filters["actor_label"] = actor_label
    env.globals["STATIC"] = "/static/console"
