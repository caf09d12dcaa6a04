"""Mixed load on ``tanfang serve``: console pages, JSON API and WeChat callbacks at a fixed rate.

    .venv/bin/python bench/load.py [--rate 500] [--seconds 60] [--db-url URL]

Sets up a fresh data dir (SQLite by default; with ``--db-url postgresql://…`` a schema of its own in
that database, dropped afterwards), migrates,
imports the sample county and ledger, adds an admin, then starts ``tanfang serve --role api`` as a
separate process on 127.0.0.1 and sends requests open-loop (each at its scheduled time, never
waiting for earlier answers) from this process: 40 % console pages (queue, elder profile, search),
30 % JSON API (queue, elder, me), 30 % WeChat text messages (plain mode, signed, new MsgId each).
An error is any status ≥ 400, a timeout or a connection failure. Prints p50/p99 per kind.

Latency is measured from each request's *scheduled* send time (not from when the client got round
to sending it), so a stalled client or server cannot hide queueing delay (no coordinated omission).
A warm-up (``--warmup`` s at the same rate, not counted) runs first. Also printed: the achieved
rate, errors by kind and type, and the server's CPU seconds per request (all its processes,
from /proc via psutil): on a shared, loaded machine that is the comparable figure.

    --workers N        tanfang serve --workers N (SO_REUSEPORT processes)
    --only SLOT        send one request kind only (escalations, elder, search, events, api-escalations,
                       api-elder, api-me, wechat) — per-request CPU of one page type
    --py-spy OUT.svg   record the server with py-spy during the measured run (flame graph; OUT.txt:
                       collapsed stacks)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
PASSWORD = "load-test-password-1"
TOKEN = "loadtesttoken"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    subprocess.run([sys.executable, "-m", "tanfang", *args], env=env, check=True, input=stdin, text=True,
                   stdout=subprocess.DEVNULL, cwd=REPO)


SLOTS = ("escalations", "elder", "search", "events", "api-escalations", "api-elder", "api-me", "wechat")


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def _wechat_body(openid: str, msg_id: int, text: str) -> str:
    return (f"<xml><ToUserName><![CDATA[gh_load]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId></xml>")


def _signed_query() -> str:
    ts, nonce = str(int(time.time())), str(random.randrange(10**9))
    sig = hashlib.sha1("".join(sorted([TOKEN, ts, nonce])).encode()).hexdigest()
    return f"timestamp={ts}&nonce={nonce}&signature={sig}"


async def _load(base: str, rate: int, seconds: int, elder_ids: list[int], *, warmup: int = 5,
                only: str | None = None, on_measure: Any = None) -> dict[str, Any]:
    lat: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    error_types: dict[tuple[str, str], int] = defaultdict(int)
    samples: list[str] = []
    conn = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=30)
    clients = []
    for _ in range(4):  # a few logged-in staff sessions
        c = aiohttp.ClientSession(connector=conn, connector_owner=False, timeout=timeout,
                                  cookie_jar=aiohttp.CookieJar(unsafe=True))
        r = await c.post(f"{base}/api/login", json={"username": "loadadmin", "password": PASSWORD})
        r.raise_for_status()
        clients.append(c)
    wx = aiohttp.ClientSession(connector=conn, connector_owner=False, timeout=timeout)
    names = ["王", "李", "张", "刘"]
    msg_id = random.randrange(10**12)

    def pick(i: int) -> tuple[str, str, str, str | None]:
        nonlocal msg_id
        roll = i % 10
        e = elder_ids[i % len(elder_ids)]
        if only is not None:
            slot = SLOTS.index(only)
            if slot < 4:
                roll, i = 0, slot
            elif slot < 7:
                roll, i = 4, slot - 4
            else:
                roll = 9
        if roll < 4:
            url = ("/escalations", f"/elders/{e}", f"/elders?q={names[i % 4]}", "/events")[i % 4]
            return "console", "GET", url, None
        if roll < 7:
            url = ("/api/escalations", f"/api/elders/{e}", "/api/me")[i % 3]
            return "api", "GET", url, None
        msg_id += 1
        body = _wechat_body(f"o_load_{i % 997:05d}", msg_id, ("最近怎么样", "你好", "菜单")[i % 3])
        return "wechat", "POST", f"/wechat?{_signed_query()}", body

    async def one(i: int, t0: float, measured: bool) -> None:
        kind, method, url, body = pick(i)
        client = wx if kind == "wechat" else clients[i % len(clients)]
        try:
            async with client.request(method, base + url, data=body.encode() if body else None,
                                      headers={"Content-Type": "text/xml"} if body else None,
                                      allow_redirects=False) as r:
                await r.read()
                ok = r.status < 400
                status = str(r.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, status = False, type(exc).__name__
        if not measured:
            return
        lat[kind].append((time.perf_counter() - t0) * 1000)  # from the scheduled send time
        if not ok:
            errors[kind] += 1
            error_types[(kind, status)] += 1
            if len(samples) < 10:
                samples.append(f"{kind} {method} {url.split('?')[0]} → {status}")

    async def phase(n_seconds: int, measured: bool, offset: int) -> tuple[float, float]:
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        late = 0.0
        for i in range(rate * n_seconds):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
            tasks.append(asyncio.create_task(one(offset + i, due, measured)))
        sent_s = time.perf_counter() - start
        await asyncio.gather(*tasks)
        return sent_s, late

    if warmup:
        await phase(warmup, False, 10**6)
    if on_measure is not None:
        on_measure()
    t_start = time.perf_counter()
    sent_s, late = await phase(seconds, True, 0)
    done_s = time.perf_counter() - t_start
    for c in [*clients, wx]:
        await c.close()
    await conn.close()
    for line in samples:
        print("  error:", line)
    for (k, status), n in sorted(error_types.items()):
        print(f"  errors {k} {status}: {n}")
    return {"lat": lat, "errors": sum(errors.values()), "sent_s": sent_s, "done_s": done_s, "late_s": late}


def _wait_workers(pid: int, port: int, workers: int, timeout_s: float = 120) -> bool:
    """Until ``workers`` processes of the server listen on ``port`` (extra workers load for a while)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        root = psutil.Process(pid)
        listening = 0
        for p in [root, *root.children(recursive=True)]:
            try:
                conns = p.net_connections(kind="tcp")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            listening += any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)
        if listening >= workers:
            return True
        time.sleep(0.2)
    return False


def _py_spy() -> str:
    import shutil

    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else (shutil.which("py-spy") or "py-spy")


def _cpu(proc: Any) -> float:
    """User + system CPU seconds of the server and its worker processes."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except Exception:
            continue
        total += t.user + t.system
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--db-url", default=None)
    ap.add_argument("--warmup", type=int, default=5, help="seconds of warm-up at the same rate (not counted)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--only", choices=SLOTS, default=None)
    ap.add_argument("--py-spy", default=None, metavar="OUT.svg")
    args = ap.parse_args()
    if not (args.db_url or "").startswith("postgres"):
        return _run(args)
    # PostgreSQL: a schema of our own, dropped afterwards (the database itself is left as it was)
    import secrets

    from sqlalchemy import text

    from storage.db import make_engine

    schema = f"loadbench_{secrets.token_hex(4)}"
    admin = make_engine(args.db_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    base_url = args.db_url
    args.db_url = f"{base_url}{'&' if '?' in base_url else '?'}options=-csearch_path%3D{schema}"
    try:
        return _run(args)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _run(args: argparse.Namespace) -> int:
    from storage.crypto import generate_secret

    tmp = Path(tempfile.mkdtemp(prefix="tanfang-load-"))
    port = _free_port()
    env = {**os.environ, "TANFANG_DATA_DIR": str(tmp), "TANFANG_SECRET_KEY": generate_secret(),
           "TANFANG_WECHAT_APPID": "wxload0000000000", "TANFANG_WECHAT_SECRET": "loadsecret",
           "TANFANG_WECHAT_TOKEN": TOKEN, "TANFANG_WECHAT_MODE": "plain",
           "TANFANG_WECHAT_API_BASE": f"http://127.0.0.1:{_free_port()}", "TANFANG_LOG_LEVEL": "WARNING",
           "TANFANG_LOGIN_MAX_FAILURES": "5"}
    if args.db_url:
        env["TANFANG_DATABASE_URL"] = args.db_url
    _cli(env, "db", "upgrade")
    _cli(env, "regions", "import", str(SAMPLES / "regions.yaml"))
    _cli(env, "ledger", "import", str(SAMPLES / "ledger_sample.xlsx"))
    _cli(env, "nlu", "train")  # as in production: the server loads the cached model, does not train it
    _cli(env, "staff", "add", "loadadmin", "--role", "admin", "--region", "23", stdin=PASSWORD + "\n")
    server = subprocess.Popen([sys.executable, "-m", "tanfang", "serve", "--role", "api", "--host", "127.0.0.1",
                               "--port", str(port), "--workers", str(args.workers)], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=open(tmp / "serve.err", "w"))  # noqa: SIM115
    base = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/login", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            print("server did not start:", (tmp / "serve.err").read_text()[-2000:])
            return 1
        if not _wait_workers(server.pid, port, args.workers):
            print("not all request workers started:", (tmp / "serve.err").read_text()[-2000:])
            return 1
        from sqlalchemy import text

        from storage.db import make_engine

        url = args.db_url or f"sqlite:///{tmp / 'tanfang.db'}"
        with make_engine(url).connect() as c:
            elder_ids = [r[0] for r in c.execute(text("SELECT id FROM elders ORDER BY id"))]
        print(f"load: {args.rate} requests/s for {args.seconds} s (+{args.warmup} s warm-up) against tanfang serve "
              f"--workers {args.workers} ({'PostgreSQL' if args.db_url and args.db_url.startswith('postgres') else 'SQLite'}), "
              + (f"only {args.only}" if args.only else "mix 40 % console / 30 % API / 30 % WeChat"))
        import psutil

        proc = psutil.Process(server.pid)
        cpu0: list[float] = []
        spy: list[subprocess.Popen[bytes]] = []

        def on_measure() -> None:
            cpu0.append(_cpu(proc))
            if args.py_spy:
                spy.append(subprocess.Popen([_py_spy(), "record", "--pid", str(server.pid), "--subprocesses",
                                             "-o", args.py_spy, "-d", str(args.seconds), "--nonblocking",
                                             "--format", "raw" if args.py_spy.endswith(".txt") else "flamegraph"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        load0 = os.getloadavg()[0]
        result = asyncio.run(_load(base, args.rate, args.seconds, elder_ids, warmup=args.warmup, only=args.only,
                                   on_measure=on_measure))
        cpu_s = _cpu(proc) - cpu0[0]
        for sp in spy:
            sp.wait(60)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    lat, errors, sent_s = result["lat"], int(result["errors"]), result["sent_s"]
    everything = [v for vs in lat.values() for v in vs]
    n = len(everything)
    print(f"sent {n} requests in {sent_s:.1f} s ({n / sent_s:.0f}/s offered, sender at most "
          f"{result['late_s'] * 1000:.0f} ms behind schedule); all answered after {result['done_s']:.1f} s "
          f"({(n - errors) / result['done_s']:.0f}/s achieved)")
    print(f"server CPU {cpu_s:.1f} s = {cpu_s / max(1, n) * 1000:.2f} ms per request "
          f"(load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after, {os.cpu_count()} CPUs)")
    for kind in ("console", "api", "wechat"):
        v = lat.get(kind, [])
        print(f"  {kind:8s} n={len(v):6d}  p50={_pct(v, 50):7.1f} ms  p99={_pct(v, 99):7.1f} ms  max={max(v or [0]):7.1f} ms")
    print(f"all      n={len(everything):6d}  p50={_pct(everything, 50):7.1f} ms  p99={_pct(everything, 99):7.1f} ms  "
          f"errors={errors}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
