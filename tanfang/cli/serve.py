"""``tanfang serve [--role all|api|planner|dialer]``: run the application.

SIGINT/SIGTERM stop it gracefully (aiohttp runs the components' shutdown in reverse order: the
dialer lets calls finish or ends them politely, leases go back to the queue, the outbox flushes).
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from storage.migrate import is_current
from tanfang.assembly import assemble
from tanfang.cli import CliError
from tanfang.context import build_context
from tanfang.settings import Settings

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="启动服务（控制台、接口、调度、拨号）")
    p.add_argument("--role", choices=["all", "api", "planner", "dialer"], default="all")
    p.add_argument("--host", default=None, help="监听地址（默认取 TANFANG_HOST）")
    p.add_argument("--port", type=int, default=None, help="端口（默认取 TANFANG_PORT）")
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from storage.crypto import VaultError

    try:
        ctx = build_context(settings)
    except VaultError as exc:  # a bad TANFANG_SECRET_KEY: say so, no traceback
        raise CliError(f"密钥有误：{exc}") from exc
    if not is_current(ctx.engine):
        raise CliError("数据库结构不是最新版本：请先运行 tanfang db upgrade")
    app = assemble(ctx, args.role)
    host = args.host or settings.host
    port = args.port or settings.port
    print(f"探访服务已启动：http://{host}:{port}/  （Ctrl-C 停止）", flush=True)
    log.info("serving on %s:%s role=%s", host, port, args.role, extra={"action": "serve_start"})
    try:
        web.run_app(app, host=host, port=port, print=None, handle_signals=True)
    finally:
        ctx.close()
    return 0
