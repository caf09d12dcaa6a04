"""Which components ``tanfang serve`` mounts, per role. The one place the parts are wired."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Literal

from aiohttp import web

from tanfang.app import Component, HealthResult, add_health_check, build_app
from tanfang.context import Context

if TYPE_CHECKING:
    from collections.abc import AsyncIterator as _AsyncIterator
    from collections.abc import Callable

    from bot.service import WechatRuntime

log = logging.getLogger(__name__)

DIGEST_SCHEDULER: web.AppKey[object] = web.AppKey("wechat_digest_scheduler", object)

Role = Literal["all", "api", "planner", "dialer"]


def mount_planner(app: web.Application, ctx: Context) -> None:
    """The single-active planner (APScheduler jobs: plan tick, CAP poller) as a background task."""
    import asyncio
    import os
    import socket
    from collections.abc import AsyncIterator

    from scheduler.config import load_policy
    from scheduler.service import PlannerConfig, PlannerService

    s = ctx.settings
    load_policy(s.policy_file)  # a bad policy file stops start-up here, naming the key
    config = PlannerConfig(db_url=s.db_url, policy_file=str(s.policy_file) if s.policy_file else None,
                           plan_interval_s=s.plan_interval_s, horizon_hours=s.plan_horizon_hours,
                           cap_source=s.cap_source, cap_poll_s=s.cap_poll_interval_s,
                           owner=f"{socket.gethostname()}:{os.getpid()}",
                           recordings_dir=str(s.recordings_dir),
                           recording_retention_days=s.recording_retention_days,
                           transcript_retention_days=s.transcript_retention_days)
    service = PlannerService(ctx.engine, config)

    async def run(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(service.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def health() -> HealthResult:
        return HealthResult(True, "本实例正在计划" if service.active else "待命（另一实例持有计划锁）")

    app.cleanup_ctx.append(run)
    add_health_check(app, "planner", health)


def mount_signals(app: web.Application, ctx: Context) -> None:
    """``POST /api/signals`` for home devices (per-device token, no console login)."""
    from scheduler.config import load_policy
    from scheduler.signals import signals_routes

    app.add_routes(signals_routes(ctx.sessions, load_policy(ctx.settings.policy_file), ctx.now))


def mount_console(app: web.Application, ctx: Context) -> None:
    """The staff console and its JSON API (/, /escalations, /elders, ..., /api/...)."""
    from console.app import mount
    from console.config import ConsoleConfig
    from scheduler.config import load_policy
    from tanfang.telephony import escalation_config

    s = ctx.settings
    config = ConsoleConfig(
        recordings_dir=s.recordings_dir, cookie_secure=s.cookie_secure, service_name=s.service_name,
        timezone=s.timezone, upload_dir=s.data_dir / "uploads", policies=load_policy(s.policy_file),
        escalations=escalation_config(s),
        login_max_failures=s.login_max_failures, login_lockout_minutes=s.login_lockout_minutes,
        consent_deletion_days=s.consent_deletion_days,
    )
    mount(app, sessions=ctx.sessions, vault=ctx.vault, now=ctx.now, config=config)


def mount_outbox(app: web.Application, ctx: Context) -> None:
    """The alert dispatcher (console channel; other components register theirs in app[NOTIFIERS]).

    On shutdown it runs once more (bounded) so alerts written by the last calls still go out;
    whatever cannot be delivered stays pending in the database for the next start.
    """
    import asyncio
    from collections.abc import AsyncIterator

    from scheduler.outbox import NOTIFIERS, ConsoleNotifier, NotifierRegistry, OutboxDispatcher

    registry = app.get(NOTIFIERS) or NotifierRegistry()
    app[NOTIFIERS] = registry
    if "console" not in registry.channels:
        registry.register(ConsoleNotifier())
    dispatcher = OutboxDispatcher(ctx.sessions, registry, ctx.now)

    async def run(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(dispatcher.run_forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await asyncio.wait_for(dispatcher.run_once(), timeout=10)
        except Exception:  # undelivered alerts stay pending for the next start
            log.warning("final outbox flush incomplete", extra={"action": "outbox_final_flush"})

    app.cleanup_ctx.append(run)


def mount_escalation_watchdog(app: web.Application, ctx: Context) -> None:
    """Every minute: raise late acknowledgements to the supervisor, move emergency contact calls on."""
    from collections.abc import AsyncIterator

    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from scheduler.escalations import run_watchdog
    from tanfang.telephony import escalation_config

    config = escalation_config(ctx.settings)

    async def run(_app: web.Application) -> AsyncIterator[None]:
        sched = AsyncIOScheduler(timezone="UTC")
        sched.add_job(run_watchdog, "interval", seconds=60, args=[ctx.sessions, ctx.now, config],
                      id="escalation_watchdog", max_instances=1, coalesce=True)
        sched.start()
        yield
        sched.shutdown(wait=False)

    app.cleanup_ctx.append(run)


def mount_wechat(app: web.Application, ctx: Context) -> None:
    """``/wechat`` (callback) and the WeChat notifier, when TANFANG_WECHAT_* are set."""
    import asyncio
    from collections.abc import AsyncIterator

    from bot.service import WechatConfig, build_runtime, mount
    from scheduler.config import load_policy
    from scheduler.outbox import NOTIFIERS, NotifierRegistry
    from tanfang.telephony import escalation_config

    s = ctx.settings
    if not (s.wechat_appid and s.wechat_secret and s.wechat_token):
        async def off() -> HealthResult:
            return HealthResult(True, "未配置微信公众号（TANFANG_WECHAT_APPID/_SECRET/_TOKEN）", degraded=True)

        add_health_check(app, "wechat", off)
        return
    config = WechatConfig(
        appid=s.wechat_appid, secret=s.wechat_secret, token=s.wechat_token, aes_key=s.wechat_aes_key,
        api_base=s.wechat_api_base, mode=s.wechat_mode, template_alert=s.wechat_template_alert,
        template_digest=s.wechat_template_digest, service_name=s.service_name, hotline=s.hotline,
        console_url=s.public_url,
    )
    runtime = build_runtime(config, engine=ctx.engine, vault=ctx.vault, now=ctx.now,
                            policy=load_policy(s.policy_file),
                            escalations=escalation_config(s))
    mount(app, runtime)
    from bot.voice import VoskVoice
    from tanfang.telephony import asr_models

    runtime.callback.recognizer = VoskVoice(runtime.api, asr_models(s, load=False))  # voice w/o Recognition
    escalations = escalation_config(s)

    async def checkins(_app: web.Application) -> AsyncIterator[None]:
        # elders' check-ins on WeChat need the NLU model, which may take a while to load (or
        # train): load it in the background; families are served meanwhile
        import threading

        from bot.service import enable_checkins
        from dialogs.engine import DialogEngine
        from dialogs.script import load_scripts
        from tanfang.nlu import build_intent_parser

        loop = asyncio.get_running_loop()

        def load() -> None:  # a daemon thread: shutting down never waits for a model being trained
            try:
                parser = build_intent_parser(s)
            except Exception:
                logging.getLogger(__name__).exception("NLU for WeChat check-ins failed to load",
                                                      extra={"action": "wechat_nlu_load_failed"})
                return
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(enable_checkins, runtime, DialogEngine(load_scripts()), parser, escalations)

        threading.Thread(target=load, name="wechat-nlu-load", daemon=True).start()
        yield

    app.cleanup_ctx.append(checkins)
    registry = app.get(NOTIFIERS) or NotifierRegistry()
    app[NOTIFIERS] = registry
    registry.register(runtime.notifier)

    async def health() -> HealthResult:
        return HealthResult(True, f"微信回调已启用（{config.effective_mode} 模式）")

    add_health_check(app, "wechat", health)
    app.cleanup_ctx.append(digest_schedule(app, runtime, ctx))


def digest_schedule(app: web.Application, runtime: WechatRuntime,
                    ctx: Context) -> Callable[[web.Application], _AsyncIterator[None]]:
    """The opt-in daily 平安 digest at TANFANG_WECHAT_DIGEST_TIME (local time, TANFANG_TIMEZONE).

    Every api process schedules it: ``send_daily_digest`` claims each follower's day slot with a
    primary-key insert before sending, so however many processes run it (or a restart runs it
    again), each family member gets at most one digest per elder per day. The scheduler is kept
    in ``app[DIGEST_SCHEDULER]`` so its next run can be checked."""
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from bot.service import daily_digest_job

    hour, minute = (int(x) for x in ctx.settings.wechat_digest_time.split(":"))
    sched = AsyncIOScheduler(timezone=ctx.settings.timezone)
    sched.add_job(daily_digest_job, "cron", hour=hour, minute=minute, args=[runtime, ctx.engine, ctx.now],
                  id="wechat_daily_digest", max_instances=1, coalesce=True, misfire_grace_time=3600)
    app[DIGEST_SCHEDULER] = sched

    async def run(_app: web.Application) -> _AsyncIterator[None]:
        sched.start()
        yield
        sched.shutdown(wait=False)

    return run


def components_for(role: Role) -> list[Component]:
    """api: signals, console + JSON API, WeChat callback, outbox; planner: planner + escalation
    watchdog; dialer: the dialer worker (only with a trunk or dial template); all: everything.

    Order matters: shutdown runs in reverse, so the dialer stops first (its last calls write their
    alerts), then the watchdog and planner, then the outbox flushes, then WeChat closes."""
    components: list[Component] = []
    if role in ("all", "api"):
        components.append(mount_signals)
        components.append(mount_console)
        components.append(mount_wechat)  # before the outbox: registers the "wechat" notifier
        components.append(mount_outbox)
    if role in ("all", "planner"):
        components.append(mount_planner)
        components.append(mount_escalation_watchdog)
    if role in ("all", "dialer"):
        components.append(mount_dialer)
    return components


def mount_dialer(app: web.Application, ctx: Context) -> None:
    """The IVR dialer worker, only when a SIP trunk (or a dial template) is configured."""
    if not (ctx.settings.sip_trunk or ctx.settings.sip_dial_template):
        return
    from tanfang.telephony import mount_dialer as mount

    mount(app, ctx)


def assemble(ctx: Context, role: Role = "all") -> web.Application:
    return build_app(ctx, components_for(role))
