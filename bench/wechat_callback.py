"""Safe-mode /wechat callback: requests/s (closed loop) and p99 latency at a fixed 500 requests/s.

    .venv/bin/python bench/wechat_callback.py [--rate 500] [--seconds 10] [--db-url URL] [--workers N]

The callback server runs in its own process (``--serve``, SQLite file by default; ``--workers N``
runs N of them on one port with SO_REUSEPORT, as ``tanfang serve --workers N`` does); this process
builds signed, AES-encrypted messages with the WeChat simulator beforehand and then sends them
open-loop at ``--rate`` (each a new MsgId, half of them from bound family members asking
"最近怎么样", half from strangers). Target: p99 ≤ 20 ms at 500 requests/s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bot.testing import WechatServerSim, new_aes_key, reply_content

APPID = "wxbench000000000"
FAMILY = 200


def serve(args: argparse.Namespace) -> None:
    import logging

    from aiohttp import web

    from bot.callback import CallbackService, add_routes
    from bot.dedup import DedupStore, write_session
    from bot.flows import BotConfig, Flows
    from bot.wire import CallbackKeys
    from storage.crypto import Vault, generate_secret
    from storage.db import make_engine
    from storage.migrate import upgrade
    from storage.models.wechat import WechatBinding, WechatFollower
    from tests.integration.bot.conftest import seed

    logging.disable(logging.WARNING)
    if os.environ.get("SWITCH"):
        sys.setswitchinterval(float(os.environ["SWITCH"]))
    engine = make_engine(args.db_url)
    vault = Vault(args.vault_key or generate_secret())
    if not args.no_seed:  # the first worker creates the schema and the family; the others share it
        upgrade(engine)
        world = seed(engine, vault)
        now = datetime.now(UTC)
        with write_session(engine) as s:
            for i in range(FAMILY):
                s.add(WechatBinding(openid=f"o_fam_{i}", role="family", elder_id=world.elder_id,
                                    contact_id=world.contact_id, consent_at=now, consent_text="同意", bound_at=now))
                s.add(WechatFollower(openid=f"o_fam_{i}", subscribed=True, failed_code_attempts=0))

    def utc() -> datetime:
        return datetime.now(UTC)

    service = CallbackService(CallbackKeys(args.token, APPID, args.aes_key), "safe", engine,
                              Flows(vault, BotConfig()), DedupStore(engine, vault, "bench", utc), now=utc)
    app = web.Application()
    add_routes(app, service)
    prof = None
    if os.environ.get("PROFILE"):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    web.run_app(app, host="127.0.0.1", port=args.port, print=lambda *_: print("READY", flush=True), access_log=None,
                reuse_port=args.workers > 1)
    if prof is not None:
        prof.disable()
        prof.dump_stats(os.environ["PROFILE"] + (f".{os.getpid()}" if args.workers > 1 else ""))


def build(sim: WechatServerSim, n: int) -> list[tuple[dict[str, str], bytes]]:
    out = []
    for i in range(n):
        openid = f"o_fam_{i % FAMILY}" if i % 2 == 0 else f"o_stranger_{i}"
        out.append(sim.envelope(sim.text(openid, "最近怎么样", msg_id=1_000_000 + i)))
    return out


async def closed_loop(url: str, reqs: list[tuple[dict[str, str], bytes]], concurrency: int) -> float:
    it = iter(reqs)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def worker() -> int:
            n = 0
            for params, body in it:
                async with http.post(url, params=params, data=body) as r:
                    await r.read()
                    assert r.status == 200
                n += 1
            return n

        t0 = time.perf_counter()
        done = sum(await asyncio.gather(*(worker() for _ in range(concurrency))))
        return done / (time.perf_counter() - t0)


async def open_loop(url: str, reqs: list[tuple[dict[str, str], bytes]], rate: float, sim: WechatServerSim) -> tuple[list[float], int]:
    lat: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:
        async def one(params: dict[str, str], body: bytes, check: bool) -> None:
            nonlocal errors
            t = time.perf_counter()
            try:
                async with http.post(url, params=params, data=body) as r:
                    text = await r.text()
            except aiohttp.ClientError:
                lat.append(time.perf_counter() - t)
                errors += 1
                return
            lat.append(time.perf_counter() - t)
            if r.status != 200 or (check and "王秀英" not in (reply_content(sim.open_reply(text)) or "")):
                errors += 1

        tasks = []
        start = time.perf_counter()
        for i, (params, body) in enumerate(reqs):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(params, body, i % 2 == 0)))
        await asyncio.gather(*tasks)
    return lat, errors


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token", default="")
    ap.add_argument("--aes-key", default="")
    ap.add_argument("--db-url", default="")
    ap.add_argument("--workers", type=int, default=1, help="server processes on one port (SO_REUSEPORT)")
    ap.add_argument("--no-seed", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--vault-key", default="", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    if args.serve:
        serve(args)
        return
    tmp = tempfile.mkdtemp(prefix="wxbench-")
    db_url = args.db_url or f"sqlite:///{tmp}/bench.db"
    schema = None
    if db_url.startswith("postgres"):  # a schema of our own, dropped afterwards
        from sqlalchemy import text

        from storage.db import make_engine
        from tests.conftest import pg_schema_url

        schema = f"wxbench_{secrets.token_hex(4)}"
        admin = make_engine(db_url)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        base_url, db_url = db_url, pg_schema_url(db_url, schema)
    token, aes = secrets.token_hex(8), new_aes_key()
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    from storage.crypto import generate_secret

    vault_key = generate_secret()
    servers: list[subprocess.Popen[str]] = []

    def start(seed: bool) -> None:
        cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--token", token, "--aes-key", aes,
               "--db-url", db_url, "--workers", str(args.workers), "--vault-key", vault_key]
        proc = subprocess.Popen(cmd + ([] if seed else ["--no-seed"]), stdout=subprocess.PIPE, text=True,
                                cwd=str(Path(__file__).resolve().parent.parent))
        servers.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "READY" not in line:
            raise SystemExit(f"server did not start: {line!r}")

    try:
        start(seed=True)
        for _ in range(args.workers - 1):
            start(seed=False)
        url = f"http://127.0.0.1:{port}/wechat"
        sim = WechatServerSim(token, APPID, aes, "safe")
        n_open = int(args.rate * args.seconds)
        warm = build(sim, 300)
        closed = build(sim, 3000)
        opened = build(sim, n_open + 3300)[3300:]
        import psutil

        procs = [psutil.Process(p.pid) for p in servers]

        def cpu() -> float:  # seconds, all server processes
            return sum(t.user + t.system for t in (p.cpu_times() for p in procs))

        asyncio.run(closed_loop(url, warm, 8 * args.workers))
        cpu0 = cpu()
        rps = asyncio.run(closed_loop(url, closed, 16))
        cpu1 = cpu()
        lat, errors = asyncio.run(open_loop(url, opened, args.rate, sim))
        cpu2 = cpu()
        cpu_closed = (cpu1 - cpu0) / len(closed) * 1000
        cpu_open = (cpu2 - cpu1) / len(opened) * 1000
        ms = [x * 1000 for x in lat]
        backend = "postgresql" if db_url.startswith("postgres") else "sqlite"
        print(f"wechat_callback safe mode ({backend}, {args.workers} server process(es) "
              f"{' '.join(str(p.pid) for p in servers)}, {os.cpu_count()} cores)")
        print(f"machine load average (1 min) {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
              "(figures below are only meaningful on an otherwise idle machine)")
        print(f"closed loop (16 concurrent): {rps:.0f} requests/s; server CPU {cpu_closed:.2f} ms/request "
              f"(one core's capacity: {1000 / cpu_closed:.0f} requests/s)")
        print(f"open loop at {args.rate:.0f} requests/s for {args.seconds:.0f} s: n={len(ms)} errors={errors} "
              f"p50={pct(ms, 50):.1f} ms p90={pct(ms, 90):.1f} ms p99={pct(ms, 99):.1f} ms max={max(ms):.1f} ms; "
              f"server CPU {cpu_open:.2f} ms/request")
        print(f"target p99 <= 20 ms: {'MET' if pct(ms, 99) <= 20 else 'NOT MET'}")
    finally:
        for server in servers:
            server.send_signal(signal.SIGINT)
        for server in servers:
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        if schema is not None:
            with make_engine(base_url).begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
