"""Put the WeChat parts together from plain parameters (the assembly in ``tanfang`` reads settings).

``build_runtime`` makes the callback service, the API client, the notifier and the flows;
``mount`` adds ``/wechat`` to an aiohttp app with its background work (dedup pruning) and
shutdown (drain in-flight replies, close the HTTP session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from aiohttp import web
from sqlalchemy import Engine

from bot.adapters import EscalationVisits, QueueCalls
from bot.api import ApiConfig, TokenStore, WechatApi
from bot.callback import CallbackService, add_routes, owner_id
from bot.dedup import DedupStore, write_session
from bot.dialog_adapter import DialogsCheckin
from bot.flows import BotConfig, DefaultRecorder, Flows
from bot.notifier import DigestReport, NotifierConfig, WechatNotifier, send_daily_digest
from bot.ports import CheckinEngine, CheckinRecorder, VoiceRecognizer
from bot.wire import CallbackKeys
from dialogs.engine import DialogEngine
from dialogs.nlu.intents import IntentParser
from scheduler.config import PolicySet
from scheduler.escalations import DEFAULT_CONFIG, EscalationConfig
from scheduler.notify import AlertKind, RecipientKind
from scheduler.outbox import CONSOLE_CHANNEL, enqueue_alert
from storage.crypto import Vault

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WechatConfig:
    appid: str
    secret: str
    token: str
    aes_key: str | None = None
    api_base: str = "https://api.weixin.qq.com"
    mode: Literal["plain", "compat", "safe"] | None = None  # None: safe with an AES key, else plain
    template_alert: str | None = None
    template_digest: str | None = None
    service_name: str = "探访关爱服务"
    hotline: str = "12349"
    console_url: str | None = None

    @property
    def effective_mode(self) -> Literal["plain", "compat", "safe"]:
        return self.mode or ("safe" if self.aes_key else "plain")


@dataclass
class WechatRuntime:
    config: WechatConfig
    callback: CallbackService
    api: WechatApi
    notifier: WechatNotifier
    flows: Flows


class QuotaAlerter:
    """45009 → one QUOTA alert row for the console per hour (not one per failed message)."""

    def __init__(self, engine: Engine, now: Callable[[], datetime], every_s: float = 3600.0) -> None:
        self.engine = engine
        self.now = now
        self.every_s = every_s
        self._last = -1e18

    async def __call__(self, path: str) -> None:
        if time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        await asyncio.to_thread(self._write, path)

    def _write(self, path: str) -> None:
        with write_session(self.engine) as s:
            enqueue_alert(
                s, kind=AlertKind.QUOTA, recipient_kind=RecipientKind.DUTY, recipient_id=None,
                title="微信消息额度已用完",
                body=f"微信接口 {path} 今日调用次数已达上限（45009），微信提醒暂停发送，将自动重试；紧急情况请电话联系家属。",
                now=self.now(), channels=(CONSOLE_CHANNEL,),
            )


def build_runtime(
    config: WechatConfig,
    *,
    engine: Engine,
    vault: Vault,
    now: Callable[[], datetime],
    policy: PolicySet | None = None,
    escalations: EscalationConfig = DEFAULT_CONFIG,
    checkin_engine: CheckinEngine | None = None,
    recorder: CheckinRecorder | None = None,
    recognizer: VoiceRecognizer | None = None,
) -> WechatRuntime:
    api = WechatApi(ApiConfig(config.appid, config.secret, base_url=config.api_base), now=now, tokens=TokenStore(engine))
    flows = Flows(
        vault,
        BotConfig(service_name=config.service_name, hotline=config.hotline),
        calls=QueueCalls(policy),
        visits=EscalationVisits(escalations),
        engine=checkin_engine,
        recorder=recorder or DefaultRecorder(),
    )
    keys = CallbackKeys(token=config.token, appid=config.appid, aes_key=config.aes_key)
    callback = CallbackService(
        keys, config.effective_mode, engine, flows, DedupStore(engine, vault, owner_id(), now),
        now=now, recognizer=recognizer, fallback=api,
    )
    notifier = WechatNotifier(
        api, engine,
        NotifierConfig(
            template_ids={str(AlertKind.DAILY_DIGEST): config.template_digest} if config.template_digest else {},
            default_template=config.template_alert, service_name=config.service_name, console_url=config.console_url,
        ),
        now=now, on_quota=QuotaAlerter(engine, now),
    )
    return WechatRuntime(config, callback, api, notifier, flows)


def enable_checkins(
    runtime: WechatRuntime,
    engine: DialogEngine,
    parser: IntentParser,
    escalations: EscalationConfig = DEFAULT_CONFIG,
) -> DialogsCheckin:
    """Let elders bound as themselves check in through the dialogs engine (once the NLU is loaded)."""
    adapter = DialogsCheckin(engine, parser, service_name=runtime.config.service_name,
                             hotline=runtime.config.hotline, escalations=escalations)
    runtime.callback.intent_parser = parser
    runtime.flows.engine = adapter
    runtime.flows.recorder = adapter
    return adapter


def mount(app: web.Application, runtime: WechatRuntime, path: str = "/wechat") -> None:
    add_routes(app, runtime.callback, path)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        prune = asyncio.create_task(runtime.callback.prune_loop())
        yield
        prune.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await prune
        await runtime.callback.drain()
        runtime.callback.close()
        await runtime.api.close()

    app.cleanup_ctx.append(lifecycle)


async def daily_digest_job(runtime: WechatRuntime, engine: Engine, now: Callable[[], datetime]) -> DigestReport:
    """The scheduled daily 平安 digest (safe to run in several processes or twice a day: each
    follower and elder gets at most one per day, see ``send_daily_digest``)."""
    report = await send_daily_digest(engine, runtime.api, runtime.flows, now=now(),
                                     template_id=runtime.config.template_digest)
    log.info("daily digest job", extra={"action": "wechat_digest_job", "sent": report.sent,
                                         "skipped": report.skipped, "failed": report.failed})
    return report
