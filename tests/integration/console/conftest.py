"""Console fixtures: a settable clock, the world, and a real aiohttp server with a cookie-keeping client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.orm import Session, sessionmaker

from console.app import mount
from console.config import ConsoleConfig
from storage.crypto import Vault
from tests.integration.console.world import PASSWORD, World, build_world

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Harbin


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def world(sessions: sessionmaker[Session], vault: Vault) -> World:
    return build_world(sessions, vault, T0 - timedelta(days=60))


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    d = tmp_path / "recordings"
    d.mkdir()
    return d


@pytest.fixture
async def client(sessions: sessionmaker[Session], vault: Vault, clock: Clock, recordings: Path,
                 world: World) -> AsyncIterator[TestClient]:
    app = web.Application()
    mount(app, sessions=sessions, vault=vault, now=clock, config=ConsoleConfig(recordings_dir=recordings))
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c


CSRF_RE = re.compile(r'name="_csrf" value="([^"]+)"')


async def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token (read from a page)."""
    client.session.cookie_jar.clear()
    r = await client.get("/login")
    token = CSRF_RE.search(await r.text())
    assert token
    r = await client.post("/login", data={"_csrf": token.group(1), "username": username, "password": password,
                                          "next": "/escalations"}, allow_redirects=False)
    assert r.status == 303, await r.text()
    r = await client.get("/escalations")
    assert r.status == 200
    m = CSRF_RE.search(await r.text())
    assert m
    return m.group(1)


async def api_login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    client.session.cookie_jar.clear()
    r = await client.post("/api/login", json={"username": username, "password": password})
    assert r.status == 200, await r.text()
    return (await r.json())["csrf_token"]
