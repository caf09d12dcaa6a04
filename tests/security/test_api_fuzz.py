"""Schemathesis against the console API's own OpenAPI document, on a real aiohttp server on
127.0.0.1 (SQLite), logged in (session cookie + CSRF token): never a 500, every status code and
content type is one the document declares, JSON bodies match their schemas.

Bounded: ``FUZZ_EXAMPLES`` generated cases per operation (the whole file runs in well under 2
minutes). The CSRF header is the real token, so state-changing operations reach their handlers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from console.app import mount
from console.config import ConsoleConfig
from console.openapi import OPENAPI
from storage.crypto import Vault, generate_secret
from storage.db import make_engine, make_session_factory
from storage.migrate import upgrade
from tests.integration.console.conftest import T0, Clock
from tests.integration.console.world import PASSWORD, build_world

FUZZ_EXAMPLES = 25
SCHEMA = schemathesis.openapi.from_dict(OPENAPI)
OPERATIONS = sorted((method.upper(), path) for path, item in OPENAPI["paths"].items() for method in item)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class Server:
    base: str
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    runner: web.AppRunner


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp / 'fuzz.db'}"
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    vault = Vault(generate_secret())
    build_world(sessions, vault, T0 - timedelta(days=60))
    (tmp / "rec").mkdir()
    loop = asyncio.new_event_loop()
    app = web.Application()
    mount(app, sessions=sessions, vault=vault, now=Clock(T0),
          config=ConsoleConfig(recordings_dir=Path(tmp / "rec"), login_max_failures=10_000))
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{port}", thread, loop, runner)
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    engine.dispose()


def _logged_in(base: str, username: str = "admin") -> tuple[requests.Session, str]:
    http = requests.Session()
    r = http.post(f"{base}/api/login", json={"username": username, "password": PASSWORD}, timeout=30)
    r.raise_for_status()
    return http, r.json()["csrf_token"]


@pytest.fixture(scope="module")
def logins(server: Server) -> dict[str, tuple[requests.Session, str]]:
    """One session per role, shared by all operations (argon2 makes logins deliberately slow)."""
    return {who: _logged_in(server.base, who) for who in ("admin", "jia", "visitor1")}


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_never_500_and_conforms(server: Server, logins: dict[str, tuple[requests.Session, str]],
                                          method: str, path: str) -> None:
    op = SCHEMA[path][method]

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(), who=st.sampled_from(["admin", "jia", "visitor1"]))
    def run(case: schemathesis.Case, who: str) -> None:
        session, token = logins[who]
        if path == "/api/logout":  # would end the shared session: use one of its own
            session, token = _logged_in(server.base, who)
        headers = {"X-CSRF-Token": token} if "X-CSRF-Token" in (case.headers or {}) else None
        case.call_and_validate(base_url=server.base, session=session, headers=headers, checks=CHECKS,
                               timeout=60)

    run()


def test_malformed_bodies_never_500(server: Server) -> None:
    http, csrf = _logged_in(server.base)
    h = {"X-CSRF-Token": csrf}
    for path in ("/api/elders/1/reveal", "/api/elders/1/visits", "/api/events/lockdown", "/api/elders/1/consent",
                 "/api/escalations/1/resolve"):
        for data, ctype in ((b"{", "application/json"), (b"[1,2]", "application/json"), (b"\xff\xfe", "application/json"),
                            (b"a=b", "application/x-www-form-urlencoded"), (b'{"kind": {"x": 1}}', "application/json"),
                            (b'{"visited_at": "2026-13-45", "kind": "home"}', "application/json"),
                            (b'{"ends_at": 12345678901234567890, "region": []}', "application/json"),
                            (b'{"escalation_id": "abc", "kind": "home"}', "application/json"),
                            (b'{"profile_updates": [1, 2]}', "application/json")):
            r = http.post(server.base + path, data=data, headers={**h, "Content-Type": ctype}, timeout=30)
            assert r.status_code < 500, (path, data, r.status_code, r.text[:200])
            assert r.headers["Content-Type"].startswith("application/json"), (path, data)
            assert r.status_code < 300 or "error" in r.json()
