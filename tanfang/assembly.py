"""Which components ``tanfang serve`` mounts, per role. The one place the parts are wired."""

from __future__ import annotations

from typing import Literal

from aiohttp import web

from tanfang.app import Component, build_app
from tanfang.context import Context

Role = Literal["all", "api", "planner", "dialer"]


def components_for(role: Role) -> list[Component]:
    """Later issues add the console, WeChat callback, planner, watchdog and dialer here."""
    return []


def assemble(ctx: Context, role: Role = "all") -> web.Application:
    return build_app(ctx, components_for(role))
