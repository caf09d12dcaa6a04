"""Mixed load on ``tanfang serve``: console pages, JSON API and WeChat callbacks at a fixed rate.

    .venv/bin/python bench/load.py [--rate 500] [--seconds 60] [--db-url URL]

Sets up a fresh data dir (SQLite by default, or ``--db-url`` e.g. a PostgreSQL schema), migrates,
imports the sample county and ledger, adds an admin, then starts ``tanfang serve --role api`` as a
separate process on 127.0.0.1 and sends requests open-loop (each at its scheduled time, never
waiting for earlier answers) from this process: 40 % console pages (queue, elder profile, search),
30 % JSON API (queue, elder, me), 30 % WeChat text messages (plain mode, signed, new MsgId each).
An error is any status ≥ 400, a timeout or a connection failure. Prints p50/p99 per kind.
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


async def _load(base: str, rate: int, seconds: int, elder_ids: list[int]) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
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
        if roll < 4:
            url = ("/escalations", f"/elders/{e}", f"/elders?q={names[i % 4]}", "/events")[i % 4]
            return "console", "GET", url, None
        if roll < 7:
            url = ("/api/escalations", f"/api/elders/{e}", "/api/me")[i % 3]
            return "api", "GET", url, None
        msg_id += 1
        body = _wechat_body(f"o_load_{i % 997:05d}", msg_id, ("最近怎么样", "你好", "菜单")[i % 3])
        return "wechat", "POST", f"/wechat?{_signed_query()}", body

    async def one(i: int) -> None:
        kind, method, url, body = pick(i)
        client = wx if kind == "wechat" else clients[i % len(clients)]
        t0 = time.perf_counter()
        try:
            async with client.request(method, base + url, data=body.encode() if body else None,
                                      headers={"Content-Type": "text/xml"} if body else None,
                                      allow_redirects=False) as r:
                await r.read()
                ok = r.status < 400
                status = str(r.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, status = False, type(exc).__name__
        lat[kind].append((time.perf_counter() - t0) * 1000)
        if not ok:
            errors[kind] += 1
            if len(samples) < 10:
                samples.append(f"{kind} {method} {url.split('?')[0]} → {status}")

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    total = rate * seconds
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    sent_s = time.perf_counter() - start
    await asyncio.gather(*tasks)
    for c in [*clients, wx]:
        await c.close()
    await conn.close()
    lat["_errors"] = [float(sum(errors.values()))]
    lat["_sent_s"] = [sent_s]
    for s in samples:
        print("  error:", s)
    for k, n in errors.items():
        print(f"  errors {k}: {n}")
    return lat


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--db-url", default=None)
    args = ap.parse_args()
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
    _cli(env, "staff", "add", "loadadmin", "--role", "admin", "--region", "23", stdin=PASSWORD + "\n")
    server = subprocess.Popen([sys.executable, "-m", "tanfang", "serve", "--role", "api", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
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
        from sqlalchemy import create_engine, text

        url = args.db_url or f"sqlite:///{tmp / 'tanfang.db'}"
        with create_engine(url).connect() as c:
            elder_ids = [r[0] for r in c.execute(text("SELECT id FROM elders ORDER BY id"))]
        print(f"load: {args.rate} requests/s for {args.seconds} s against tanfang serve "
              f"({'PostgreSQL' if args.db_url and args.db_url.startswith('postgres') else 'SQLite'}), "
              f"mix 40 % console / 30 % API / 30 % WeChat")
        lat = asyncio.run(_load(base, args.rate, args.seconds, elder_ids))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    errors = int(lat.pop("_errors")[0])
    sent_s = lat.pop("_sent_s")[0]
    everything = [v for vs in lat.values() for v in vs]
    print(f"sent {len(everything)} requests in {sent_s:.1f} s ({len(everything) / sent_s:.0f}/s offered)")
    for kind in ("console", "api", "wechat"):
        v = lat.get(kind, [])
        print(f"  {kind:8s} n={len(v):6d}  p50={_pct(v, 50):7.1f} ms  p99={_pct(v, 99):7.1f} ms  max={max(v or [0]):7.1f} ms")
    print(f"all      n={len(everything):6d}  p50={_pct(everything, 50):7.1f} ms  p99={_pct(everything, 99):7.1f} ms  "
          f"errors={errors}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
