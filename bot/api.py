"""Async client for the WeChat Official Account API (aiohttp), with one shared access token.

The token comes from ``/cgi-bin/stable_token``; it is refreshed early (``early_refresh`` before
expiry) under an asyncio lock, and shared between processes through the ``wechat_tokens`` row:
a process reads the row before fetching, and writes what it fetched. ``stable_token`` returns the
same token to every caller while it is valid, so two processes refreshing at once is harmless.
40001/42001 (token invalid/expired) get one refresh and one retry; nothing else is retried here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.dedup import write_session
from storage.models.wechat import WechatToken

log = logging.getLogger(__name__)

TOKEN_ERRORS = (40001, 42001)
QUOTA = 45009
OUT_OF_WINDOW = 45015
BAD_SECRET = 40125


class WechatApiError(Exception):
    def __init__(self, errcode: int, errmsg: str, path: str = "") -> None:
        super().__init__(f"WeChat API {path} error {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg
        self.path = path


class QuotaExceeded(WechatApiError):
    """45009: the daily call quota of this interface is used up."""


class OutsideWindow(WechatApiError):
    """45015: a customer-service message outside the 48-hour window."""


class ApiUnavailable(Exception):
    """Timeout or network failure talking to WeChat (transient)."""


@dataclass(frozen=True)
class ApiConfig:
    appid: str
    secret: str
    base_url: str = "https://api.weixin.qq.com"
    timeout_s: float = 5.0
    early_refresh: timedelta = timedelta(minutes=5)


class TokenStore:
    """The ``wechat_tokens`` row: the token every process shares."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def read(self, appid: str) -> tuple[str, datetime] | None:
        with Session(self.engine) as s:
            row = s.execute(
                select(WechatToken.access_token, WechatToken.expires_at).where(WechatToken.appid == appid)
            ).first()
        if row is None or not row.access_token or row.expires_at is None:
            return None
        return row.access_token, row.expires_at

    def try_lease(self, appid: str, owner: str, now: datetime, ttl: timedelta = timedelta(seconds=10)) -> bool:
        """Take the right to refresh (one process at a time); False while another holds it."""
        try:
            with write_session(self.engine) as s:
                row = s.get(WechatToken, appid, with_for_update=True)
                if row is None:
                    row = WechatToken(appid=appid)
                    s.add(row)
                elif row.refreshing_until is not None and row.refreshing_until > now and row.refreshing_owner != owner:
                    return False
                row.refreshing_owner, row.refreshing_until = owner, now + ttl
        except IntegrityError:
            return False
        return True

    def write(self, appid: str, token: str, expires_at: datetime, now: datetime) -> None:
        with write_session(self.engine) as s:
            row = s.get(WechatToken, appid, with_for_update=True)
            if row is None:
                row = WechatToken(appid=appid)
                s.add(row)
            row.access_token, row.expires_at, row.refreshed_at = token, expires_at, now
            row.refreshing_owner, row.refreshing_until = None, None


class WechatApi:
    def __init__(
        self,
        config: ApiConfig,
        *,
        now: Callable[[], datetime],
        tokens: TokenStore | None = None,
        http: aiohttp.ClientSession | None = None,
    ) -> None:
        self.config = config
        self.now = now
        self.tokens = tokens
        self._http = http
        self._own_http = http is None
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires: datetime | None = None
        self.token_fetches = 0
        self.owner = secrets.token_hex(8)

    async def close(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))
        return self._http

    # -- token ---------------------------------------------------------------------
    def _fresh(self, expires: datetime | None) -> bool:
        return expires is not None and expires - self.config.early_refresh > self.now()

    async def access_token(self, *, stale: str | None = None) -> str:
        """A valid token; ``stale`` is one WeChat just refused (never returned again)."""
        if self._token and self._token != stale and self._fresh(self._expires):
            return self._token
        async with self._lock:
            if self._token and self._token != stale and self._fresh(self._expires):
                return self._token
            shared = await asyncio.to_thread(self.tokens.read, self.config.appid) if self.tokens else None
            if shared is not None and shared[0] != stale and self._fresh(shared[1]):
                self._token, self._expires = shared
                return shared[0]
            if self.tokens is not None:
                if await asyncio.to_thread(self.tokens.try_lease, self.config.appid, self.owner, self.now()):
                    # another process may have written a token between our read and our lease
                    shared = await asyncio.to_thread(self.tokens.read, self.config.appid)
                    if shared is not None and shared[0] != stale and self._fresh(shared[1]):
                        self._token, self._expires = shared
                        return shared[0]
                else:
                    waited = await self._wait_for_shared(stale)
                    if waited is not None:
                        return waited
            force = stale is not None and (shared is None or shared[0] == stale)
            data = await self._post("/cgi-bin/stable_token", {
                "grant_type": "client_credential",
                "appid": self.config.appid,
                "secret": self.config.secret,
                "force_refresh": force,
            })
            token = str(data["access_token"])
            expires = self.now() + timedelta(seconds=int(data.get("expires_in", 7200)))
            self.token_fetches += 1
            if token == stale and not force:  # WeChat still hands out the refused one: force it
                data = await self._post("/cgi-bin/stable_token", {
                    "grant_type": "client_credential", "appid": self.config.appid,
                    "secret": self.config.secret, "force_refresh": True,
                })
                token = str(data["access_token"])
                expires = self.now() + timedelta(seconds=int(data.get("expires_in", 7200)))
                self.token_fetches += 1
            self._token, self._expires = token, expires
            if self.tokens is not None:
                await asyncio.to_thread(self.tokens.write, self.config.appid, token, expires, self.now())
            log.info("access token refreshed", extra={"action": "wechat_token_refreshed", "forced": force})
            return token

    async def _wait_for_shared(self, stale: str | None, limit_s: float = 5.0) -> str | None:
        """Another process is refreshing: wait for the token it writes (None: give up, fetch)."""
        assert self.tokens is not None
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            shared = await asyncio.to_thread(self.tokens.read, self.config.appid)
            if shared is not None and shared[0] != stale and self._fresh(shared[1]):
                self._token, self._expires = shared
                return shared[0]
        return None

    # -- transport -----------------------------------------------------------------
    async def _post(self, path: str, payload: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        url = self.config.base_url.rstrip("/") + path
        params = {"access_token": token} if token else None
        try:
            async with self._session().post(
                url,
                params=params,
                json=payload,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            ) as resp:
                data = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise ApiUnavailable(f"{path}: {type(exc).__name__}") from exc
        if not isinstance(data, dict):
            raise ApiUnavailable(f"{path}: unexpected answer")
        code = int(data.get("errcode", 0) or 0)
        if code:
            msg = str(data.get("errmsg", ""))
            if code == QUOTA:
                log.error("WeChat quota exhausted", extra={"action": "wechat_quota", "path": path})
                raise QuotaExceeded(code, msg, path)
            if code == OUT_OF_WINDOW:
                raise OutsideWindow(code, msg, path)
            raise WechatApiError(code, msg, path)
        return data

    async def call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with the access token; on 40001/42001 refresh once and retry once."""
        token = await self.access_token()
        try:
            return await self._post(path, payload, token)
        except WechatApiError as exc:
            if exc.errcode not in TOKEN_ERRORS:
                raise
            log.warning("token refused, refreshing", extra={"action": "wechat_token_refused", "errcode": exc.errcode})
            token = await self.access_token(stale=token)
            return await self._post(path, payload, token)

    # -- messages ------------------------------------------------------------------
    async def send_template(
        self, openid: str, template_id: str, data: dict[str, str], url: str | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "data": {k: {"value": v} for k, v in data.items()},
        }
        if url:
            payload["url"] = url
        return await self.call("/cgi-bin/message/template/send", payload)

    async def send_subscribe(
        self, openid: str, template_id: str, data: dict[str, str], page: str | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "data": {k: {"value": v} for k, v in data.items()},
        }
        if page:
            payload["page"] = page
        return await self.call("/cgi-bin/message/subscribe/bizsend", payload)

    async def send_custom_text(self, openid: str, text: str) -> dict[str, Any]:
        return await self.call(
            "/cgi-bin/message/custom/send", {"touser": openid, "msgtype": "text", "text": {"content": text}}
        )

    async def get_media(self, media_id: str, max_bytes: int = 2 * 1024 * 1024) -> bytes:
        """A temporary media file (voice: AMR), with one token refresh on 40001/42001."""
        token = await self.access_token()
        for attempt in range(2):
            url = self.config.base_url.rstrip("/") + "/cgi-bin/media/get"
            try:
                async with self._session().get(
                    url, params={"access_token": token, "media_id": media_id},
                    timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
                ) as resp:
                    body = await resp.content.read(max_bytes + 1)
                    ctype = resp.headers.get("Content-Type", "")
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise ApiUnavailable(f"/cgi-bin/media/get: {type(exc).__name__}") from exc
            if len(body) > max_bytes:
                raise WechatApiError(-2, "media too large", "/cgi-bin/media/get")
            if "json" not in ctype and "text" not in ctype:
                return body
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise ApiUnavailable("/cgi-bin/media/get: unexpected answer") from exc
            code = int(data.get("errcode", 0) or 0)
            if code in TOKEN_ERRORS and attempt == 0:
                token = await self.access_token(stale=token)
                continue
            raise WechatApiError(code, str(data.get("errmsg", "")), "/cgi-bin/media/get")
        raise AssertionError("unreachable")

    async def create_qr_scene(self, scene: str, expire_seconds: int = 3 * 24 * 3600) -> str:
        """A temporary QR code ticket for a binding scene string (show it at showqrcode?ticket=…)."""
        data = await self.call("/cgi-bin/qrcode/create", {
            "expire_seconds": expire_seconds,
            "action_name": "QR_STR_SCENE",
            "action_info": {"scene": {"scene_str": scene}},
        })
        return str(data["ticket"])
