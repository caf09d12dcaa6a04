"""Which components ``tanfang serve`` mounts, per role. The one place the parts are wired."""

from __future__ import annotations

import contextlib
from typing import Literal

from aiohttp import web

from tanfang.app import Component, HealthResult, add_health_check, build_app
from tanfang.context import Context

Role = Literal["all", "api", "planner", "dialer"]


def mount_planner(app: web.Application, ctx: Context) -> None:
    """The single-active planner (APScheduler jobs: plan tick, CAP poller) as a background task."""
    import asyncio
    import os
    import socket
    from collections.abc import AsyncIterator

    from scheduler.config import load_policy
    from scheduler.service import PlannerConfig, PlannerService

    s = ctx.settings
    load_policy(s.policy_file)  # a bad policy file stops start-up here, naming the key
    config = PlannerConfig(db_url=s.db_url, policy_file=str(s.policy_file) if s.policy_file else None,
                           plan_interval_s=s.plan_interval_s, horizon_hours=s.plan_horizon_hours,
                           cap_source=s.cap_source, cap_poll_s=s.cap_poll_interval_s,
                           owner=f"{socket.gethostname()}:{os.getpid()}")
    service = PlannerService(ctx.engine, config)

    async def run(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(service.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def health() -> HealthResult:
        return HealthResult(True, "本实例正在计划" if service.active else "待命（另一实例持有计划锁）")

    app.cleanup_ctx.append(run)
    add_health_check(app, "planner", health)


def mount_signals(app: web.Application, ctx: Context) -> None:
    """``POST /api/signals`` for home devices (per-device token, no console login)."""
    from scheduler.config import load_policy
    from scheduler.signals import signals_routes

    app.add_routes(signals_routes(ctx.sessions, load_policy(ctx.settings.policy_file), ctx.now))


def components_for(role: Role) -> list[Component]:
    """Later issues add the console, WeChat callback, planner, watchdog and dialer here."""
    components: list[Component] = []
    if role in ("all", "api"):
        components.append(mount_signals)
    if role in ("all", "planner"):
        components.append(mount_planner)
    return components


def assemble(ctx: Context, role: Role = "all") -> web.Application:
    return build_app(ctx, components_for(role))
