"""The daily 平安 digest job: scheduled with the WeChat component at TANFANG_WECHAT_DIGEST_TIME, and
run against the fake WeChat API on 127.0.0.1 — several processes (here: concurrent runs on one
database) running it at once still send one message per follower per elder per day."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.dedup import write_session
from bot.service import WechatConfig, build_runtime, daily_digest_job
from bot.testing import FakeWechatApi
from storage.crypto import generate_secret
from storage.migrate import upgrade
from storage.models.wechat import WechatBinding, WechatDedup, WechatFollower
from tanfang.assembly import DIGEST_SCHEDULER, assemble
from tanfang.context import build_context
from tanfang.settings import Settings
from tests.integration.bot.conftest import APPID, SECRET, now_utc, seed


def _settings(tmp_path: Path, base: str, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path / "var", database_url=f"sqlite:///{tmp_path / 'digest.db'}",
                    secret_key=generate_secret(), wechat_appid=APPID, wechat_secret=SECRET,
                    wechat_token=secrets.token_hex(6), wechat_api_base=base, **extra)  # type: ignore[arg-type]


async def test_digest_job_is_scheduled_daily_with_wechat(tmp_path: Path) -> None:
    fake = FakeWechatApi(APPID, SECRET)
    base = await fake.start()
    ctx = build_context(_settings(tmp_path, base, wechat_digest_time="07:30"))
    upgrade(ctx.engine)
    app = assemble(ctx, "api")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        sched = app[DIGEST_SCHEDULER]
        job = sched.get_job("wechat_daily_digest")  # type: ignore[attr-defined]
        nxt = job.next_run_time.astimezone(ZoneInfo("Asia/Shanghai"))
        assert (nxt.hour, nxt.minute) == (7, 30)
        assert nxt - datetime.now(ZoneInfo("Asia/Shanghai")) <= timedelta(days=1)
    finally:
        await runner.cleanup()
        await fake.stop()


async def test_no_digest_schedule_without_wechat(tmp_path: Path) -> None:
    ctx = build_context(Settings(data_dir=tmp_path / "var", database_url=f"sqlite:///{tmp_path / 'x.db'}",
                                 secret_key=generate_secret()))
    upgrade(ctx.engine)
    app = assemble(ctx, "api")
    assert DIGEST_SCHEDULER not in app


async def test_digest_job_sends_once_per_day_even_when_run_concurrently(tmp_path: Path) -> None:
    fake = FakeWechatApi(APPID, SECRET)
    base = await fake.start()
    ctx = build_context(_settings(tmp_path, base))
    upgrade(ctx.engine)
    world = seed(ctx.engine, ctx.vault)
    now = now_utc()
    with write_session(ctx.engine) as s:
        for openid, opt_in in (("o_in", True), ("o_in2", True), ("o_off", False)):
            s.add(WechatBinding(openid=openid, role="family", elder_id=world.elder_id, contact_id=world.contact_id,
                                consent_at=now, consent_text="同意", bound_at=now, digest_opt_in=opt_in))
            s.add(WechatFollower(openid=openid, subscribed=True, failed_code_attempts=0,
                                 last_inbound_at=now - timedelta(hours=2)))
    cfg = WechatConfig(appid=APPID, secret=SECRET, token="t", api_base=base)
    # two runtimes = two api processes sharing the database
    a = build_runtime(cfg, engine=ctx.engine, vault=ctx.vault, now=now_utc)
    b = build_runtime(cfg, engine=ctx.engine, vault=ctx.vault, now=now_utc)
    try:
        ra, rb = await asyncio.gather(daily_digest_job(a, ctx.engine, now_utc), daily_digest_job(b, ctx.engine, now_utc))
        assert ra.sent + rb.sent == 2 and ra.failed == rb.failed == 0
        sent = sorted(c.body["touser"] for c in fake.sent("/custom/send"))
        assert sent == ["o_in", "o_in2"]
        assert all("今日平安消息" in c.body["text"]["content"] and "王秀英" in c.body["text"]["content"]
                   for c in fake.sent("/custom/send"))
        again = await daily_digest_job(a, ctx.engine, now_utc)  # later the same day: nothing twice
        assert (again.sent, again.skipped) == (0, 2)
        assert len(fake.sent("/custom/send")) == 2
        with Session(ctx.engine) as s:
            keys = s.scalars(select(WechatDedup).where(WechatDedup.owner == "digest")).all()
            assert len(keys) == 2 and all(k.completed_at is not None for k in keys)
    finally:
        await a.api.close()
        await b.api.close()
        await fake.stop()


async def test_failed_digest_is_retried_by_a_later_run(tmp_path: Path) -> None:
    fake = FakeWechatApi(APPID, SECRET)
    base = await fake.start()
    ctx = build_context(_settings(tmp_path, base))
    upgrade(ctx.engine)
    world = seed(ctx.engine, ctx.vault)
    now = now_utc()
    with write_session(ctx.engine) as s:
        s.add(WechatBinding(openid="o_in", role="family", elder_id=world.elder_id, contact_id=world.contact_id,
                            consent_at=now, consent_text="同意", bound_at=now, digest_opt_in=True))
        s.add(WechatFollower(openid="o_in", subscribed=True, failed_code_attempts=0,
                             last_inbound_at=now - timedelta(hours=2)))
    rt = build_runtime(WechatConfig(appid=APPID, secret=SECRET, token="t", api_base=base), engine=ctx.engine,
                       vault=ctx.vault, now=now_utc)
    try:
        fake.inject("/cgi-bin/message/custom/send", 45009)
        first = await daily_digest_job(rt, ctx.engine, now_utc)
        assert (first.sent, first.failed) == (0, 1)
        second = await daily_digest_job(rt, ctx.engine, now_utc)
        assert (second.sent, second.failed) == (1, 0)
    finally:
        await rt.api.close()
        await fake.stop()
