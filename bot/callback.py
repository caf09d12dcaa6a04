"""The ``/wechat`` callback: GET verification and POST in plain, compatible and safe (AES) modes.

Every request is checked before anything is parsed: timestamp freshness, then the signature
(constant time), then the body size and DOCTYPE/ENTITY guard. Junk → 400, bad signature → 403;
nothing reaches a 500 (an unexpected error is logged and answered with an apology).
Each message is handled once (see :mod:`bot.dedup`); the reply is due within ``reply_deadline``
seconds, after which WeChat gets ``success`` and the answer goes out as a customer-service message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from aiohttp import web
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from wechatpy.messages import BaseMessage
from wechatpy.replies import create_reply

from bot import wire
from bot.dbworker import DbWorker
from bot.dedup import DedupStore, wait_for_reply, write_session
from bot.flows import Flows, Inbound, family_command
from bot.ports import VoiceRecognizer
from dialogs.nlu.intents import IntentParser
from storage.models.elder import Elder
from storage.models.wechat import WechatBinding

log = logging.getLogger(__name__)

Mode = Literal["plain", "compat", "safe"]
SUCCESS = "success"


class CustomerServiceSender(Protocol):
    def send_custom_text(self, openid: str, text: str) -> Awaitable[object]: ...


class _Duplicate(Exception):
    """The dedup row exists: another delivery of this message was handled (rolls the transaction back)."""


@dataclass
class _InFlight:
    future: asyncio.Future[str]
    timed_out: bool = False


@dataclass
class CallbackService:
    keys: wire.CallbackKeys
    mode: Mode
    engine: Engine
    flows: Flows
    store: DedupStore
    now: Callable[[], datetime]
    reply_deadline: float = 4.0
    freshness_seconds: int = wire.FRESHNESS_SECONDS
    recognizer: VoiceRecognizer | None = None
    fallback: CustomerServiceSender | None = None
    intent_parser: IntentParser | None = None  # parses elders' replies in a thread (Rasa may block)
    handler_runs: int = 0  # messages handled and committed (WeChat's retries must not add to it)
    _inflight: dict[str, _InFlight] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _runs_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.db = DbWorker(self.engine)
        self._crypto = self.keys.crypto()
        if self.mode != "plain" and self._crypto is None:
            raise ValueError("兼容模式/安全模式需要 TANFANG_WECHAT_AES_KEY")

    # -- HTTP --------------------------------------------------------------------
    async def get(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            wire.check_fresh(q.get("timestamp"), self._now_ts(), self.freshness_seconds)
            wire.verify((self.keys.token, q.get("timestamp", ""), q.get("nonce", "")), q.get("signature"))
        except wire.SignatureError:
            return web.Response(status=403, text="签名无效")
        return web.Response(text=q.get("echostr", ""))

    async def post(self, request: web.Request) -> web.Response:
        try:
            return await self._post(request)
        except wire.SignatureError:
            return web.Response(status=403, text="签名无效")
        except wire.WireError as exc:
            return web.Response(status=413 if "too large" in str(exc) else 400, text="请求格式不正确")
        except Exception:  # never a 500 to WeChat: log it and apologise
            log.exception("wechat callback failed", extra={"action": "wechat_callback_error"})
            return web.Response(text=SUCCESS)

    async def _post(self, request: web.Request) -> web.Response:
        q = {k: v for k, v in request.query.items()}
        timestamp, nonce = q.get("timestamp", ""), q.get("nonce", "")
        wire.check_fresh(timestamp, self._now_ts(), self.freshness_seconds)
        wire.verify((self.keys.token, timestamp, nonce), q.get("signature"))
        body = await _read_limited(request, wire.MAX_BODY_BYTES)
        encrypted = q.get("encrypt_type", "raw").lower() == "aes"
        if encrypted and self.mode == "plain":
            raise wire.WireError("encrypted message but no AES key configured")
        if not encrypted and self.mode == "safe":
            raise wire.SignatureError("plain message refused in safe mode")
        if encrypted:
            assert self._crypto is not None
            inner = wire.decrypt_envelope(self.keys, self._crypto, body, q)
        else:
            inner = body
        msg = wire.to_message(inner)
        reply = await self.answer(wire.dedup_key(msg), msg)
        if not reply:
            return web.Response(text=SUCCESS)
        if encrypted:
            assert self._crypto is not None
            ts = str(int(self._now_ts()))
            reply = wire.encrypt_reply(self.keys, self._crypto, reply, nonce or secrets.token_hex(8), ts)
        return web.Response(text=reply, content_type="application/xml")

    def _now_ts(self) -> float:
        return self.now().timestamp()

    # -- once per message ----------------------------------------------------------
    async def answer(self, key: str, msg: BaseMessage) -> str:
        """The reply XML for ``msg`` (``""`` = success), computed once per key."""
        deadline = time.monotonic() + self.reply_deadline
        entry = self._inflight.get(key)
        if entry is None:
            entry = _InFlight(asyncio.get_running_loop().create_future())
            self._inflight[key] = entry
            task = asyncio.create_task(self._execute(key, msg, entry, deadline))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            reply = await asyncio.wait_for(asyncio.shield(entry.future), max(deadline - time.monotonic(), 0.01))
        except TimeoutError:
            entry.timed_out = True
            return ""
        # once a delivery has timed out the answer goes as a customer-service message: a retry
        # that sees the result must not answer a second time
        return "" if entry.timed_out else reply

    async def _execute(self, key: str, msg: BaseMessage, entry: _InFlight, deadline: float) -> None:
        reply_xml = ""
        text = ""
        try:
            inbound = await self._inbound(msg)
            job = functools.partial(self._handle_record, key=key, msg=msg, inbound=inbound)
            done: tuple[str, str] | None
            try:
                done = await self.db.run(job)
            except _Duplicate:
                done = None
            except DBAPIError:  # a serialisation conflict or a dropped connection: once more
                log.warning("wechat handling retried", extra={"action": "wechat_handle_retry"})
                try:
                    done = await self.db.run(job)
                except _Duplicate:
                    done = None
            if done is None:  # another process owns this message: its reply, once stored
                reply_xml = await wait_for_reply(self.store, key, deadline + 1.0)
            else:
                # counted once committed: an attempt rolled back by a conflict and retried left no trace
                with self._runs_lock:
                    self.handler_runs += 1
                text, reply_xml = done
        except Exception:
            # nothing was committed (one transaction), so WeChat's retry is handled afresh
            log.exception("wechat message handling failed", extra={"action": "wechat_handle_error"})
            reply_xml = ""
        finally:
            if not entry.future.done():
                entry.future.set_result(reply_xml)
            self._inflight.pop(key, None)
        if entry.timed_out and text:
            await self._late_answer(key, str(msg.source), text)

    def _handle_record(self, session: Session, key: str, msg: BaseMessage, inbound: Inbound) -> tuple[str, str]:
        """In the worker's transaction: handle the message, then insert its dedup row with the reply.
        Raises _Duplicate (rolling back this message's work) when the row exists already."""
        text = self.flows.handle(session, inbound, self.now()) or ""
        reply_xml = create_reply(text, message=msg, render=True) if text else ""
        if not self.store.record_in(session, key, reply_xml):
            raise _Duplicate
        return text, reply_xml

    async def _late_answer(self, key: str, openid: str, text: str) -> None:
        """The passive reply missed its deadline: store ``success`` for retries and send a CS message."""
        await asyncio.to_thread(self.store.replace_reply, key, "")
        if self.fallback is None:
            log.warning("late reply dropped: no API client", extra={"action": "wechat_late_reply_dropped"})
            return
        try:
            await self.fallback.send_custom_text(openid, text)
        except Exception:
            log.exception("late reply not delivered", extra={"action": "wechat_late_reply_failed"})

    async def _inbound(self, msg: BaseMessage) -> Inbound:
        openid = str(msg.source)
        if msg.type == "text":
            text = str(getattr(msg, "content", "") or "")
            return Inbound(openid, "text", text=text, intent=await self._parse(text))
        if msg.type == "voice":
            recognised = getattr(msg, "recognition", None)
            if recognised:
                return Inbound(openid, "voice", text=str(recognised), intent=await self._parse(str(recognised)))
            if self.recognizer is not None and getattr(msg, "media_id", None):
                try:
                    locale = await asyncio.to_thread(self._voice_locale, openid)
                    heard = await self.recognizer.recognize(str(msg.media_id), locale=locale)
                except Exception:
                    log.exception("voice recognition failed", extra={"action": "wechat_asr_failed"})
                    heard = None
                if heard:
                    return Inbound(openid, "voice", text=heard, intent=await self._parse(heard))
            return Inbound(openid, "voice", text="", voice_unrecognised=True)
        if msg.type == "event":
            data = msg._data
            return Inbound(openid, "event", event=str(data.get("Event", "")).lower(), event_key=str(data.get("EventKey") or ""))
        return Inbound(openid, "other")

    def _voice_locale(self, openid: str) -> str:
        """The locale of the elder bound to ``openid`` (zh for anyone else)."""
        with Session(self.engine) as session:
            loc = session.execute(
                select(Elder.locale)
                .join(WechatBinding, WechatBinding.elder_id == Elder.id)
                .where(WechatBinding.openid == openid, WechatBinding.role == "elder", WechatBinding.unbound_at.is_(None))
                .limit(1)
            ).scalar()
        return str(loc) if loc is not None else "zh-CN"

    async def _parse(self, text: str) -> object | None:
        """The zh intent of a possible check-in answer (not for digits or family commands)."""
        t = text.strip()
        if self.intent_parser is None or not t or t.isdigit() or family_command(t) is not None:
            return None
        try:
            return await asyncio.to_thread(self.intent_parser.parse, t, "zh")
        except Exception:
            log.exception("intent parsing failed", extra={"action": "wechat_nlu_failed"})
            return None

    async def prune_loop(self, every_s: float = 3600.0) -> None:
        while True:
            try:
                removed = await asyncio.to_thread(self.store.prune)
                log.info("dedup pruned", extra={"action": "wechat_dedup_pruned", "removed": removed})
            except Exception:
                log.exception("dedup prune failed", extra={"action": "wechat_dedup_prune_failed"})
            await asyncio.sleep(every_s)

    async def drain(self) -> None:
        """Wait for in-flight work (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        self.db.close()


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise wire.WireError("body too large")
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await request.content.read(16384)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise wire.WireError("body too large")
        chunks.append(chunk)
    return b"".join(chunks)


def add_routes(app: web.Application, service: CallbackService, path: str = "/wechat") -> None:
    app.router.add_get(path, service.get)
    app.router.add_post(path, service.post)


def owner_id() -> str:
    return f"{os.uname().nodename[:40]}:{os.getpid()}"


__all__ = ["CallbackService", "CustomerServiceSender", "Mode", "add_routes", "owner_id", "write_session"]
