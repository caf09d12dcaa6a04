"""``tanfang serve`` with TANFANG_WECHAT_* set: /wechat answers, the notifier is registered and the
outbox dispatcher delivers a family alert through the fake WeChat API."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import aiohttp
from aiohttp import web

from bot.dedup import write_session
from bot.testing import FakeWechatApi, WechatServerSim, new_aes_key, reply_content
from scheduler.notify import AlertKind, RecipientKind
from scheduler.outbox import NOTIFIERS, enqueue_alert
from storage.crypto import generate_secret
from storage.migrate import upgrade
from storage.models.wechat import WechatBinding, WechatFollower
from tanfang.assembly import assemble
from tanfang.context import build_context
from tanfang.settings import Settings
from tests.integration.bot.conftest import APPID, SECRET, now_utc, seed


async def test_serve_mounts_wechat_and_delivers_alerts(tmp_path: Path) -> None:
    fake = FakeWechatApi(APPID, SECRET)
    base = await fake.start()
    aes, token = new_aes_key(), secrets.token_hex(6)
    settings = Settings(
        data_dir=tmp_path / "var", database_url=f"sqlite:///{tmp_path / 'serve.db'}", secret_key=generate_secret(),
        wechat_appid=APPID, wechat_secret=SECRET, wechat_token=token, wechat_aes_key=aes, wechat_api_base=base,
        wechat_template_alert="TPL_ALERT",
    )
    ctx = build_context(settings)
    upgrade(ctx.engine)
    world = seed(ctx.engine, ctx.vault)
    now = now_utc()
    with write_session(ctx.engine) as s:
        s.add(WechatBinding(openid="o_son", role="family", elder_id=world.elder_id, contact_id=world.contact_id,
                            consent_at=now, consent_text="同意", bound_at=now))
        s.add(WechatFollower(openid="o_son", subscribed=True, failed_code_attempts=0))
    app = assemble(ctx, "api")
    assert "wechat" in app[NOTIFIERS].channels
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    sim = WechatServerSim(token, APPID, aes, "safe")
    try:
        async with aiohttp.ClientSession() as http:
            params, body = sim.envelope(sim.text("o_son", "最近怎么样"))
            async with http.post(url + "/wechat", params=params, data=body) as r:
                assert r.status == 200
                assert "王秀英" in (reply_content(sim.open_reply(await r.text())) or "")
            async with http.get(url + "/healthz") as r:
                health = await r.json()
                assert "安全" in health["checks"]["wechat"]["detail"] or "safe" in health["checks"]["wechat"]["detail"]
            with write_session(ctx.engine) as s:
                enqueue_alert(s, kind=AlertKind.EMERGENCY, recipient_kind=RecipientKind.CONTACT,
                              recipient_id=world.contact_id, title="紧急：王秀英可能需要帮助", body="老人说摔倒了。",
                              now=now_utc(), channels=("wechat",), elder_id=world.elder_id)
            for _ in range(100):
                if fake.sent("/template/send"):
                    break
                await asyncio.sleep(0.1)
            sent = fake.sent("/template/send")
            assert len(sent) == 1 and sent[0].body["touser"] == "o_son"
    finally:
        await runner.cleanup()
        await fake.stop()
        ctx.close()
