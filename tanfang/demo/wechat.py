"""The demo's WeChat: the bot package's fake WeChat API on 127.0.0.1 (recording every message into
``<data_dir>/demo/wechat.jsonl``), family members bound through the real ``/wechat`` callback and
binding service, and a console page ``/demo/wechat`` (demo mode only) showing what was sent.
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web
from sqlalchemy import select

from bot.bindings import issue_binding_code, last_four
from bot.testing import FakeWechatApi, WechatServerSim, reply_content
from console.web import page
from scheduler.outbox import write_session
from storage.models.elder import Contact, Elder
from storage.models.wechat import WechatBinding
from tanfang.context import Context

SHANGHAI = ZoneInfo("Asia/Shanghai")
APPID = "wxdemo0000000000"
SECRET = "demo-secret"  # noqa: S105 - the fake WeChat API's, loopback only
TEMPLATE_ALERT = "DEMO_TEMPLATE_ALERT"
MESSAGE_PATHS = ("/template/send", "/custom/send", "/subscribe/bizsend")


@dataclass
class DemoWechatApi(FakeWechatApi):
    """The fake WeChat API, also appending each message sent to ``log_path`` (JSON lines)."""

    log_path: Path | None = None

    async def _send(self, request: web.Request) -> web.Response:
        response = await super()._send(request)
        rec = self.calls[-1]
        if self.log_path is not None and rec.path.endswith(MESSAGE_PATHS):
            line = {"at": datetime.now(UTC).isoformat(), "path": rec.path, "body": rec.body,
                    "ok": rec.answer.get("errcode", 0) == 0}
            with self.log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        return response


@dataclass(frozen=True)
class SentMessage:
    at: datetime
    openid: str
    kind: str  # 模板消息 / 客服消息
    text: str
    ok: bool


def read_sent(path: Path) -> list[SentMessage]:
    """What the fake WeChat API received, oldest first (empty when the demo has not run)."""
    out: list[SentMessage] = []
    if not path.exists():
        return out
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(raw)
        except ValueError:
            continue
        body: dict[str, Any] = d.get("body") or {}
        if "data" in body:
            kind = "模板消息"
            text = "；".join(str(v.get("value", "")) for v in (body.get("data") or {}).values() if isinstance(v, dict))
        else:
            kind = "客服消息"
            text = str((body.get("text") or {}).get("content", ""))
        out.append(SentMessage(datetime.fromisoformat(d["at"]), str(body.get("touser", "")), kind, text,
                               bool(d.get("ok"))))
    return out


@dataclass
class FamilyBinder:
    """Binds family members to WeChat openids the way a real family member would: follow the
    account, type the 6-digit code the officer handed out, confirm with the phone's last four."""

    ctx: Context
    callback_url: str
    sim: WechatServerSim
    http: aiohttp.ClientSession
    replies: list[str] = field(default_factory=list)

    async def _say(self, inner: str) -> str:
        params, body = self.sim.envelope(inner)
        async with self.http.post(self.callback_url, params=params, data=body) as r:
            text = await r.text()
            if r.status != 200:
                raise RuntimeError(f"微信回调返回 {r.status}：{text[:200]}")
        reply = reply_content(self.sim.open_reply(text)) or ""
        self.replies.append(reply)
        return reply

    async def bind(self, elder_name: str, contact_name: str, openid: str) -> str:
        """Returns the bot's last reply (``绑定成功！……``)."""
        code, digits = await asyncio.to_thread(self._issue, elder_name, contact_name)
        await self._say(self.sim.event(openid, "subscribe"))
        await self._say(self.sim.text(openid, code))
        return await self._say(self.sim.text(openid, digits))

    def _issue(self, elder_name: str, contact_name: str) -> tuple[str, str]:
        with write_session(self.ctx.sessions) as s:
            contact = s.scalars(select(Contact).join(Elder, Elder.id == Contact.elder_id)
                                .where(Elder.name == elder_name, Contact.name == contact_name)).first()
            if contact is None or contact.phone_enc is None:
                raise RuntimeError(f"示例台帐中没有 {elder_name} 的联系人 {contact_name}（或其没有手机号）")
            issued = issue_binding_code(s, self.ctx.vault, now=self.ctx.now(), elder_id=contact.elder_id,
                                        contact_id=contact.id, issued_by="demo")
            return issued.value, last_four(self.ctx.vault.decrypt(contact.phone_enc))


def new_token() -> str:
    return secrets.token_hex(8)


def demo_openid(contact_name: str) -> str:
    return "o_demo_" + contact_name.encode("utf-8").hex()[:12]


def names_by_openid(ctx: Context) -> dict[str, str]:
    """openid → "陈红梅（陈建国的女儿）" for the bound family members."""
    with ctx.sessions() as s:
        rows = s.execute(select(WechatBinding.openid, Contact.name, Contact.relation, Elder.name)
                         .join(Contact, Contact.id == WechatBinding.contact_id)
                         .join(Elder, Elder.id == WechatBinding.elder_id)
                         .where(WechatBinding.unbound_at.is_(None))).all()
    return {o: f"{c}（{e}的{rel or '家属'}）" for o, c, rel, e in rows}


def mount_demo_wechat_page(log_path: Path) -> Callable[[web.Application, Context], None]:
    """A component: ``GET /demo/wechat`` (console login required) lists the messages sent."""

    def mount(app: web.Application, ctx: Context) -> None:
        @page
        async def wechat_page(request: web.Request) -> web.StreamResponse:
            sent, names = await asyncio.to_thread(lambda: (read_sent(log_path), names_by_openid(ctx)))
            return web.Response(text=render_page(sent, names), content_type="text/html", charset="utf-8")

        app.router.add_get("/demo/wechat", wechat_page)

    return mount


def render_page(sent: list[SentMessage], names: dict[str, str]) -> str:
    rows = "\n".join(
        f"<tr><td>{m.at.astimezone(SHANGHAI):%m-%d %H:%M:%S}</td><td>{html.escape(names.get(m.openid, m.openid))}</td>"
        f"<td>{m.kind}</td><td>{html.escape(m.text)}</td><td>{'已送达' if m.ok else '失败'}</td></tr>"
        for m in reversed(sent))
    empty = "" if sent else "<p>还没有发出任何微信消息。</p>"
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>演示：微信消息</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style>
</head><body><h1>演示：发往微信的消息</h1>
<p>这些消息由本机的微信接口替身（127.0.0.1）接收，没有发往真正的微信服务器。仅在 <code>tanfang demo</code> 中可见。
<a href="/">返回控制台</a></p>{empty}
<table><tr><th>时间</th><th>收件人</th><th>类型</th><th>内容</th><th>状态</th></tr>
{rows}
</table></body></html>"""
