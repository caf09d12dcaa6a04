"""Stand-ins for the WeChat servers (the only fakes in Tanfang), on 127.0.0.1.

:class:`WechatServerSim` builds callback requests exactly as WeChat signs and encrypts them,
written independently of wechatpy (sha1 over the sorted strings; AES-256-CBC, IV = key[:16],
16 random bytes + 4-byte big-endian length + XML + appid, PKCS#7 to 32-byte blocks).
:class:`FakeWechatApi` is an aiohttp server for the outbound API that records what it receives
and can be told to answer with an error code (40001, 42001, 45009, 45015, 40125, …) or to hang.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import os
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from aiohttp import web
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

Mode = Literal["plain", "compat", "safe"]


def wechat_sha1(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()  # noqa: S324 - WeChat's own scheme


def new_aes_key() -> str:
    """A fresh 43-character EncodingAESKey."""
    return base64.b64encode(os.urandom(32)).decode().rstrip("=")


def _cdata(v: str) -> str:
    return "<![CDATA[" + v.replace("]]>", "]]]]><![CDATA[>") + "]]>"


@dataclass
class WechatServerSim:
    token: str
    appid: str
    aes_key: str | None
    mode: Mode = "safe"
    account: str = "gh_tanfang"
    now: Callable[[], float] = time.time
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(int(time.time() * 1000)))

    @property
    def key(self) -> bytes:
        assert self.aes_key
        return base64.b64decode(self.aes_key + "=")

    # -- messages ----------------------------------------------------------------
    def fields_xml(self, fields: dict[str, str | int]) -> str:
        parts = []
        for k, v in fields.items():
            parts.append(f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}>{_cdata(v)}</{k}>")
        return "<xml>" + "".join(parts) + "</xml>"

    def text(self, openid: str, content: str, msg_id: int | None = None, create_time: int | None = None) -> str:
        return self.fields_xml(
            {
                "ToUserName": self.account,
                "FromUserName": openid,
                "CreateTime": create_time or int(self.now()),
                "MsgType": "text",
                "Content": content,
                "MsgId": msg_id if msg_id is not None else next(self._ids),
            }
        )

    def voice(self, openid: str, media_id: str, recognition: str | None = None, msg_id: int | None = None) -> str:
        f: dict[str, str | int] = {
            "ToUserName": self.account,
            "FromUserName": openid,
            "CreateTime": int(self.now()),
            "MsgType": "voice",
            "MediaId": media_id,
            "Format": "amr",
            "MsgId": msg_id if msg_id is not None else next(self._ids),
        }
        if recognition is not None:
            f["Recognition"] = recognition
        return self.fields_xml(f)

    def event(self, openid: str, event: str, key: str | None = None, create_time: int | None = None) -> str:
        f: dict[str, str | int] = {
            "ToUserName": self.account,
            "FromUserName": openid,
            "CreateTime": create_time or int(self.now()),
            "MsgType": "event",
            "Event": event,
        }
        if key is not None:
            f["EventKey"] = key
        if event in ("subscribe", "SCAN") and key:
            f["Ticket"] = "gQ" + secrets.token_hex(8)
        return self.fields_xml(f)

    # -- envelopes ---------------------------------------------------------------
    def encrypt(self, xml: str) -> str:
        body = xml.encode("utf-8")
        raw = os.urandom(16) + struct.pack(">I", len(body)) + body + self.appid.encode()
        pad = 32 - len(raw) % 32
        raw += bytes([pad]) * pad
        enc = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).encryptor()
        return base64.b64encode(enc.update(raw) + enc.finalize()).decode()

    def decrypt(self, b64: str) -> str:
        dec = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).decryptor()
        raw = dec.update(base64.b64decode(b64)) + dec.finalize()
        raw = raw[: -raw[-1]]
        (n,) = struct.unpack(">I", raw[16:20])
        xml, appid = raw[20 : 20 + n], raw[20 + n :]
        if appid.decode() != self.appid:
            raise AssertionError("reply encrypted for another appid")
        return xml.decode("utf-8")

    def envelope(self, inner: str, *, timestamp: int | None = None, nonce: str | None = None) -> tuple[dict[str, str], bytes]:
        """Query parameters and body of one POST, signed (and encrypted) for the mode."""
        ts = str(timestamp if timestamp is not None else int(self.now()))
        nonce = nonce or str(secrets.randbelow(10**10))
        params = {"signature": wechat_sha1(self.token, ts, nonce), "timestamp": ts, "nonce": nonce}
        if self.mode == "plain":
            return params, inner.encode("utf-8")
        encrypt = self.encrypt(inner)
        params |= {"openid": _field(inner, "FromUserName") or "", "encrypt_type": "aes"}
        params["msg_signature"] = wechat_sha1(self.token, ts, nonce, encrypt)
        if self.mode == "safe":
            body = f"<xml><ToUserName>{_cdata(self.account)}</ToUserName><Encrypt>{_cdata(encrypt)}</Encrypt></xml>"
        else:  # compatible mode: the plain fields and the ciphertext side by side
            body = inner[: -len("</xml>")] + f"<Encrypt>{_cdata(encrypt)}</Encrypt></xml>"
        return params, body.encode("utf-8")

    def verify_url(self, echostr: str = "echo123") -> dict[str, str]:
        ts, nonce = str(int(self.now())), str(secrets.randbelow(10**10))
        return {"signature": wechat_sha1(self.token, ts, nonce), "timestamp": ts, "nonce": nonce, "echostr": echostr}

    def open_reply(self, body: str) -> str | None:
        """The reply XML (decrypted and its signature checked when encrypted); None for success/empty."""
        if body in ("", "success"):
            return None
        if self.mode == "plain":
            return body
        encrypt = _field(body, "Encrypt")
        assert encrypt, f"expected an encrypted reply, got {body[:80]!r}"
        ts, nonce, sig = _field(body, "TimeStamp"), _field(body, "Nonce"), _field(body, "MsgSignature")
        assert sig == wechat_sha1(self.token, ts or "", nonce or "", encrypt), "bad reply signature"
        return self.decrypt(encrypt)

    @staticmethod
    def url(base: str, params: dict[str, str]) -> str:
        return f"{base}?{urlencode(params)}"


def _field(xml: str, name: str) -> str | None:
    m = re.search(rf"<{name}>(?:<!\[CDATA\[(.*?)\]\]>|([^<]*))</{name}>", xml, re.S)
    if not m:
        return None
    return m.group(1) if m.group(1) is not None else m.group(2)


def reply_content(xml: str | None) -> str | None:
    return _field(xml, "Content") if xml else None


# -- the outbound API ---------------------------------------------------------------


@dataclass
class Recorded:
    path: str
    query: dict[str, str]
    body: dict[str, Any]
    answer: dict[str, Any]


@dataclass
class FakeWechatApi:
    appid: str
    secret: str
    token_lifetime: int = 7200
    calls: list[Recorded] = field(default_factory=list)
    closed_window: set[str] = field(default_factory=set)  # openids outside the 48-hour window
    media: dict[str, bytes] = field(default_factory=dict)  # media_id -> file (voice: AMR)
    _plan: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    _tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (time.time)
    _current: str | None = None
    _runner: web.AppRunner | None = None
    base_url: str = ""
    _msgids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def inject(self, path: str, errcode: int, times: int = 1) -> None:
        """The next ``times`` calls of ``path`` answer with ``errcode``."""
        self._plan.setdefault(path, []).extend([("err", float(errcode))] * times)

    def inject_delay(self, path: str, seconds: float, times: int = 1) -> None:
        self._plan.setdefault(path, []).extend([("delay", seconds)] * times)

    def expire_tokens(self) -> None:
        self._tokens = dict.fromkeys(self._tokens, 0.0)

    def revoke_tokens(self) -> None:
        self._tokens.clear()
        self._current = None

    def sent(self, path_suffix: str) -> list[Recorded]:
        return [c for c in self.calls if c.path.endswith(path_suffix) and c.answer.get("errcode", 0) == 0]

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/cgi-bin/stable_token", self._stable_token)
        for p in (
            "/cgi-bin/message/template/send",
            "/cgi-bin/message/subscribe/bizsend",
            "/cgi-bin/message/custom/send",
            "/cgi-bin/qrcode/create",
        ):
            app.router.add_post(p, self._send)
        app.router.add_get("/cgi-bin/media/get", self._media)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _planned(self, path: str) -> dict[str, Any] | None:
        plan = self._plan.get(path)
        while plan:
            what, value = plan.pop(0)
            if what == "delay":
                await asyncio.sleep(value)
                continue
            code = int(value)
            return {"errcode": code, "errmsg": f"injected {code}"}
        return None

    async def _media(self, request: web.Request) -> web.Response:
        answer = await self._planned(request.path)
        token = request.query.get("access_token", "")
        media_id = request.query.get("media_id", "")
        if answer is None and token not in self._tokens:
            answer = {"errcode": 40001, "errmsg": "invalid credential"}
        if answer is None and media_id not in self.media:
            answer = {"errcode": 40007, "errmsg": "invalid media_id"}
        self.calls.append(Recorded(request.path, dict(request.query), {}, answer or {"errcode": 0}))
        if answer is not None:
            return web.json_response(answer)
        return web.Response(body=self.media[media_id], content_type="audio/amr")

    async def _stable_token(self, request: web.Request) -> web.Response:
        body = await request.json()
        answer = await self._planned(request.path)
        if answer is None:
            if body.get("appid") != self.appid or body.get("secret") != self.secret:
                answer = {"errcode": 40125, "errmsg": "invalid appsecret"}
            else:
                now = time.time()
                valid = self._current is not None and self._tokens.get(self._current, 0) > now
                if body.get("force_refresh") or not valid:
                    self._current = "TOKEN_" + secrets.token_hex(12)
                    self._tokens[self._current] = now + self.token_lifetime
                assert self._current is not None
                answer = {"access_token": self._current, "expires_in": int(self._tokens[self._current] - now)}
        self.calls.append(Recorded(request.path, dict(request.query), body, answer))
        return web.json_response(answer)

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        answer = await self._planned(request.path)
        if answer is None:
            token = request.query.get("access_token", "")
            if token not in self._tokens:
                answer = {"errcode": 40001, "errmsg": "invalid credential"}
            elif self._tokens[token] <= time.time():
                answer = {"errcode": 42001, "errmsg": "access_token expired"}
            elif request.path.endswith("/custom/send") and body.get("touser") in self.closed_window:
                answer = {"errcode": 45015, "errmsg": "response out of time limit"}
            elif request.path.endswith("/qrcode/create"):
                answer = {"ticket": "gQ" + secrets.token_hex(8), "expire_seconds": body.get("expire_seconds", 60), "url": "http://weixin.qq.com/q/x"}
            else:
                answer = {"errcode": 0, "errmsg": "ok", "msgid": next(self._msgids)}
        self.calls.append(Recorded(request.path, dict(request.query), body, answer))
        return web.json_response(answer)
