"""The aiohttp application that ``tanfang serve`` runs. Components mount themselves onto it.

A component is a callable ``mount(app, ctx)`` that adds routes, background tasks (via
``app.cleanup_ctx``), health checks (``add_health_check``) and metrics. Console, WeChat callback,
scheduler and dialer are components; each lives in its own package and is listed in
``tanfang.assembly``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from storage.db import ping
from storage.migrate import is_current
from tanfang.context import Context

log = logging.getLogger(__name__)

CTX: web.AppKey[Context] = web.AppKey("ctx", Context)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
HEALTH_CHECKS: web.AppKey[list[HealthCheck]] = web.AppKey("health_checks", list)


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str  # Chinese, for the operator
    degraded: bool = False  # works, but with reduced function (e.g. keypad-only ASR)


HealthCheck = tuple[str, Callable[[], Awaitable[HealthResult]]]
Component = Callable[[web.Application, Context], None]


def add_health_check(app: web.Application, name: str, check: Callable[[], Awaitable[HealthResult]]) -> None:
    app[HEALTH_CHECKS].append((name, check))


def build_app(ctx: Context, components: list[Component] | None = None) -> web.Application:
    app = web.Application(client_max_size=20 * 1024 * 1024)
    app[CTX] = ctx
    app[REGISTRY] = CollectorRegistry()
    app[HEALTH_CHECKS] = []
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_health_check(app, "database", lambda: _database_check(ctx))
    Gauge("tanfang_up", "1 while the process serves", registry=app[REGISTRY]).set(1)
    from tanfang.metrics import DatabaseCollector

    app[REGISTRY].register(DatabaseCollector(ctx.engine, ctx.now))
    for mount in components or []:
        mount(app, ctx)
    return app


async def _database_check(ctx: Context) -> HealthResult:
    def check() -> HealthResult:
        try:
            ping(ctx.engine)
        except Exception as exc:  # any driver error means "unreachable"
            return HealthResult(False, f"数据库不可达：{type(exc).__name__}")
        if not is_current(ctx.engine):
            return HealthResult(False, "数据库结构不是最新版本：请运行 tanfang db upgrade")
        return HealthResult(True, "正常")

    return await asyncio.to_thread(check)


async def healthz(request: web.Request) -> web.Response:
    results = {}
    ok = True
    for name, check in request.app[HEALTH_CHECKS]:
        try:
            r = await asyncio.wait_for(check(), timeout=5)
        except Exception as exc:  # a hanging or broken check is itself a failure
            r = HealthResult(False, f"检查失败：{type(exc).__name__}")
        results[name] = {"ok": r.ok, "degraded": r.degraded, "detail": r.detail}
        ok = ok and r.ok
    return web.json_response(
        {"status": "ok" if ok else "fail", "checks": results},
        status=200 if ok else 503,
        dumps=_dumps,
    )


def _dumps(obj: object) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False)


async def metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(generate_latest, request.app[REGISTRY])  # the DB gauges query
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
