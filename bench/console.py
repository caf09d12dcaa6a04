"""Console queue latency with 10,000 open escalations: p95 of the queue page and the queue API.

    .venv/bin/python bench/console.py [--escalations 10000] [--requests 200] [--db-url postgresql://…]
Target: p95 ≤ 200 ms for both, for a county officer (sees all) and a township officer (a tenth).
The server runs in-process on 127.0.0.1 (a real aiohttp server, real HTTP through aiohttp's client).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web
from sqlalchemy import insert, select, text

from console.app import mount
from console.auth import hash_password
from console.config import ConsoleConfig
from storage.crypto import Vault, generate_secret
from storage.db import make_engine, make_session_factory
from storage.enums import EscalationStatus, RegionLevel, Severity, StaffRole
from storage.migrate import upgrade
from storage.models import Elder, Region, Staff
from storage.models.escalation import Escalation

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
PASSWORD = "bench-password-1"


def populate(url: str, n: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    vault = Vault(generate_secret())
    with sessions() as s, s.begin():
        county = Region(code="230125", name="宾县", level=RegionLevel.COUNTY, path="23/2301/230125")
        s.add(county)
        s.flush()
        villages = []
        for t in range(10):
            town = Region(code=f"230125{t:03d}", name=f"第{t}镇", level=RegionLevel.TOWNSHIP, parent_id=county.id,
                          path=f"{county.path}/230125{t:03d}")
            s.add(town)
            s.flush()
            for v in range(10):
                vil = Region(code=f"230125{t:03d}{v:03d}", name=f"{t}镇{v}村", level=RegionLevel.VILLAGE,
                             parent_id=town.id, path=f"{town.path}/230125{t:03d}{v:03d}")
                s.add(vil)
                villages.append(vil)
        s.flush()
        pw = hash_password(PASSWORD)
        s.add(Staff(name="县干部", role=StaffRole.COUNTY_OFFICER, region_id=county.id, username="county", password_hash=pw))
        town0 = s.scalar(select(Region).where(Region.code == "230125000"))
        assert town0 is not None
        s.add(Staff(name="镇干部", role=StaffRole.TOWNSHIP_OFFICER, region_id=town0.id, username="town", password_hash=pw))
        token = vault.encrypt("230125194001010011")
        conn = s.connection()
        conn.execute(insert(Elder), [
            {"name": f"老人{i}", "region_id": villages[i % len(villages)].id, "id_number_enc": token,
             "id_number_hash": f"h{i}", "id_number_masked": "2301**********0011", "categories": 1,
             "risk_tier": "general", "locale": "zh-CN", "call_windows": [], "consent_status": "unknown",
             "status": "active", "created_at": NOW, "updated_at": NOW} for i in range(n)])
        elders = s.execute(select(Elder.id, Region.path).join(Region, Region.id == Elder.region_id)).all()
        sev = list(Severity)
        rows = []
        for i, (eid, path) in enumerate(elders):
            created = NOW - timedelta(minutes=i % 5000)
            severity = sev[i % 3]
            ack = created + timedelta(minutes=severity.ack_minutes)
            rows.append({"elder_id": eid, "region_path": path, "severity": severity.value, "reason": "需要上门看看",
                         "status": EscalationStatus.OPEN.value, "source_key": f"bench:{i}", "created_at": created,
                         "ack_deadline_at": ack, "deadline_at": created + timedelta(days=2), "due_at": ack,
                         "escalation_level": 0, "contact_calls_exhausted": False})
        conn.execute(insert(Escalation), rows)
    engine.dispose()


async def measure(base: str, username: str, path: str, requests: int) -> list[float]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        r = await http.post(f"{base}/api/login", json={"username": username, "password": PASSWORD})
        assert r.status == 200, await r.text()
        for _ in range(5):  # warm-up
            await (await http.get(base + path)).read()
        out = []
        for _ in range(requests):
            t0 = time.perf_counter()
            resp = await http.get(base + path)
            body = await resp.read()
            out.append((time.perf_counter() - t0) * 1000)
            assert resp.status == 200 and body
        return out


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[94]


async def run(url: str, n: int, requests: int) -> None:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    app = web.Application()
    with tempfile.TemporaryDirectory() as rec:
        mount(app, sessions=sessions, vault=Vault(generate_secret()), now=lambda: NOW,
              config=ConsoleConfig(recordings_dir=Path(rec)))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        print(f"{n} open escalations on {engine.dialect.name}; {requests} requests each (page = 50 rows)")
        for user in ("county", "town"):
            for path in ("/escalations", "/api/escalations", "/escalations?page=100" if user == "county" else "/escalations?page=20"):
                ms = await measure(base, user, path, requests)
                print(f"  {user:7s} {path:24s} p50 {statistics.median(ms):6.1f} ms   p95 {p95(ms):6.1f} ms")
        await runner.cleanup()
    engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--escalations", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--db-url", help="PostgreSQL URL (a temporary schema is created and dropped)")
    args = ap.parse_args()
    if args.db_url:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = make_engine(args.db_url)
        with admin.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in args.db_url else "?"
        url = f"{args.db_url}{sep}options=-csearch_path%3D{schema}"
        try:
            populate(url, args.escalations)
            asyncio.run(run(url, args.escalations, args.requests))
        finally:
            with admin.begin() as c:
                c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        return
    with tempfile.TemporaryDirectory() as d:
        url = f"sqlite:///{Path(d) / 'bench.db'}"
        populate(url, args.escalations)
        asyncio.run(run(url, args.escalations, args.requests))


if __name__ == "__main__":
    main()
