"""``tanfang serve [--role all|api|planner|dialer] [--workers N]``: run the application.

SIGINT/SIGTERM stop it gracefully (aiohttp runs the components' shutdown in reverse order: the
dialer lets calls finish or ends them politely, leases go back to the queue, the outbox flushes).

``--workers N`` (roles all/api) runs N processes on the same port (SO_REUSEPORT: the kernel
spreads connections over them). This process is the primary: it runs the role's background
parts (planner, watchdog, dialer, outbox) once; the N-1 extra processes serve requests only
(console, JSON API, WeChat callback, device signals). The primary restarts an extra worker that
dies and stops them all when it stops (they also stop if the primary is killed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from storage.migrate import is_current
from tanfang.app import build_app
from tanfang.assembly import assemble, mount_console, mount_signals, mount_wechat
from tanfang.cli import CliError
from tanfang.context import build_context
from tanfang.settings import Settings

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="启动服务（控制台、接口、调度、拨号）")
    p.add_argument("--role", choices=["all", "api", "planner", "dialer"], default="all")
    p.add_argument("--host", default=None, help="监听地址（默认取 TANFANG_HOST）")
    p.add_argument("--port", type=int, default=None, help="端口（默认取 TANFANG_PORT）")
    p.add_argument("--workers", type=int, default=1,
                   help="处理请求的进程数（仅 all/api 角色；多个进程共用端口，后台任务只在主进程运行）")
    p.add_argument("--request-worker", action="store_true", help=argparse.SUPPRESS)  # an extra process
    p.set_defaults(handler=cmd_serve)


def _die_with_parent() -> None:  # runs in the child before exec: SIGTERM when the primary dies
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn_worker(host: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tanfang", "serve", "--role", "api", "--host", host, "--port", str(port),
         "--request-worker"],
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - only sets the parent-death signal
    )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from storage.crypto import VaultError

    workers = max(1, int(args.workers))
    if workers > 1 and args.role not in ("all", "api"):
        raise CliError("--workers 只适用于 all 或 api 角色（计划和拨号进程请分别启动多个实例）")
    try:
        ctx = build_context(settings)
    except VaultError as exc:  # a bad TANFANG_SECRET_KEY: say so, no traceback
        raise CliError(f"密钥有误：{exc}") from exc
    if not is_current(ctx.engine):
        raise CliError("数据库结构不是最新版本：请先运行 tanfang db upgrade")
    host = args.host or settings.host
    port = args.port or settings.port
    if args.request_worker:  # requests only: no planner, dialer, outbox or watchdog here
        app = build_app(ctx, [mount_signals, mount_console, mount_wechat])
    else:
        app = assemble(ctx, args.role)
        if workers > 1:
            app.cleanup_ctx.append(_workers_ctx(host, port, workers - 1))
        print(f"探访服务已启动：http://{host}:{port}/  （{workers} 个进程，Ctrl-C 停止）" if workers > 1
              else f"探访服务已启动：http://{host}:{port}/  （Ctrl-C 停止）", flush=True)
    log.info("serving on %s:%s role=%s worker=%s", host, port, args.role, "extra" if args.request_worker else "primary",
             extra={"action": "serve_start"})
    try:
        web.run_app(app, host=host, port=port, print=None, handle_signals=True, reuse_port=workers > 1
                    or args.request_worker)
    finally:
        ctx.close()
    return 0


def _workers_ctx(host: str, port: int, extra: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """The primary's cleanup context: start ``extra`` request workers, restart dead ones, stop them."""

    async def run(_app: web.Application) -> AsyncIterator[None]:
        procs = [_spawn_worker(host, port) for _ in range(extra)]
        stopping = False

        async def watch() -> None:
            while not stopping:
                await asyncio.sleep(1)
                for i, p in enumerate(procs):
                    if p.poll() is not None and not stopping:
                        log.warning("request worker %s exited (%s), restarting", p.pid, p.returncode,
                                    extra={"action": "serve_worker_restart"})
                        procs[i] = _spawn_worker(host, port)

        task = asyncio.create_task(watch())
        yield
        stopping = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.to_thread(p.wait, 30)
            except subprocess.TimeoutExpired:
                p.kill()

    return run
