"""Two callback processes on one database: WeChat's retries hit both at once, the message is
handled once (one escalation) and both answer with the same reply."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bot.dedup import write_session
from bot.testing import WechatServerSim, new_aes_key, reply_content
from storage.crypto import Vault, generate_secret
from storage.models.escalation import Escalation
from storage.models.wechat import WechatBinding
from tests.integration.bot.conftest import APPID, now_utc, seed

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def servers(db_url: str, engine: Engine) -> Iterator[tuple[list[str], WechatServerSim, Engine]]:
    secret, token, aes = generate_secret(), secrets.token_hex(6), new_aes_key()
    world = seed(engine, Vault(secret))
    now = now_utc()
    with write_session(engine) as s:
        s.add(WechatBinding(openid="o_mp", role="family", elder_id=world.elder_id, contact_id=world.contact_id,
                            consent_at=now, consent_text="同意", bound_at=now))
    procs, urls = [], []
    for _ in range(2):
        p = subprocess.Popen(
            # name=value: a generated secret may begin with "-", which argparse would take for an option
            [sys.executable, "-m", "tests.integration.bot.callback_proc", f"--db-url={db_url}", f"--secret={secret}",
             f"--token={token}", f"--aes-key={aes}", f"--appid={APPID}"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        procs.append(p)
        assert p.stdout is not None
        line = p.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            p.kill()
            raise AssertionError(f"callback process did not start: {line!r} {p.stderr.read() if p.stderr else ''}")
        urls.append(f"http://127.0.0.1:{m.group(1)}/wechat")
    try:
        yield urls, WechatServerSim(token, APPID, aes, "safe"), engine
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


async def test_retries_across_processes_are_handled_once(servers: tuple[list[str], WechatServerSim, Engine]) -> None:
    urls, sim, engine = servers
    async with aiohttp.ClientSession() as http:
        async def post(url: str, params: dict[str, str], body: bytes) -> str | None:
            async with http.post(url, params=params, data=body) as r:
                assert r.status == 200
                return reply_content(sim.open_reply(await r.text()))

        for i in range(5):
            inner = sim.text("o_mp", "想请人上门看看", msg_id=700 + i)
            deliveries = [sim.envelope(inner) for _ in range(6)]  # each retry signed afresh, as WeChat does
            replies = await asyncio.gather(*(post(urls[j % 2], p, b) for j, (p, b) in enumerate(deliveries)))
            assert replies[0] and "上门看望王秀英" in replies[0]
            assert len(set(replies)) == 1, replies
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Escalation)) == 5
