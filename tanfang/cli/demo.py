"""``tanfang demo``: the README's first command — a working Tanfang on the sample county.

Migrates the embedded SQLite database, imports the sample region tree and ledger (idempotent:
running it again changes nothing), creates a demo console login, then (unless ``--no-serve``)
starts the demo village of baresip phones and a local WeChat stand-in, serves the application and
runs a real round of check-ins (``tanfang.demo.run``), and keeps serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from console.auth import hash_password
from storage.db import transaction
from storage.enums import StaffRole
from storage.ledger import import_ledger
from storage.migrate import upgrade
from storage.models import Region, Staff
from storage.regions import import_regions, load_region_file
from tanfang.cli import CliError
from tanfang.context import Context, build_context
from tanfang.settings import Settings

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
COUNTY = "230183"
DEMO_USER = "demo"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("demo", help="演示：导入示例县的台帐，启动演示村的电话，跑一轮真实的探访")
    p.add_argument("--no-serve", action="store_true", help="只准备数据，不启动服务")
    p.add_argument("--port", type=int, default=None, help="控制台端口（默认取 TANFANG_PORT，即 8080）")
    p.add_argument("--exit-after-round", action="store_true", help="这一轮探访结束后就停止（用于测试）")
    p.set_defaults(handler=cmd_demo)


def prepare(ctx: Context, say: Callable[[str], None] = print) -> str:
    """Migrate, import the samples, ensure the demo login; returns the demo password."""
    upgrade(ctx.engine)
    say("✓ 数据库已迁移到最新版本")
    with transaction(ctx.sessions) as s:
        r = import_regions(s, load_region_file(SAMPLES / "regions.yaml"))
    say(f"✓ 区划：新建 {r.created}，更新 {r.updated}，未变 {r.unchanged}")
    report = import_ledger(
        SAMPLES / "ledger_sample.xlsx", sessions=ctx.sessions, vault=ctx.vault, now=ctx.now, county_code=COUNTY
    )
    if not report.ok:
        raise CliError("示例台帐导入失败：\n" + "\n".join(str(e) for e in report.errors))
    say(f"✓ 示例台帐：新建 {report.created}，更新 {report.updated}，未变 {report.unchanged}")
    return _demo_login(ctx)


def _demo_login(ctx: Context) -> str:
    path = ctx.settings.data_dir / "demo-login.txt"
    with transaction(ctx.sessions) as s:
        staff = s.scalar(select(Staff).where(Staff.username == DEMO_USER))
        if staff is not None and path.exists():
            return path.read_text(encoding="utf-8").strip()
        password = secrets.token_urlsafe(9)
        county = s.scalar(select(Region).where(Region.code == COUNTY))
        if county is None:
            raise CliError(f"区划 {COUNTY} 不存在")
        if staff is None:
            staff = Staff(name="演示管理员", role=StaffRole.ADMIN, region_id=county.id, username=DEMO_USER)
            s.add(staff)
        staff.password_hash = hash_password(password)
        staff.active = True
    path.write_text(password + "\n", encoding="utf-8")
    path.chmod(0o600)
    return password


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    ctx = build_context(settings)
    try:
        password = prepare(ctx)
    finally:
        ctx.close()
    if args.port:
        settings = settings.model_copy(update={"port": args.port})
    url = f"http://{settings.host}:{settings.port}/"
    print(f"\n控制台：{url}\n演示账号：{DEMO_USER}   密码：{password}\n（密码也保存在 {settings.data_dir / 'demo-login.txt'}）\n",
          flush=True)
    if args.no_serve:
        return 0
    import asyncio

    from tanfang.demo.run import main

    try:
        result = asyncio.run(main(settings, password=password, user=DEMO_USER, exit_after_round=args.exit_after_round))
    except RuntimeError as exc:
        raise CliError(str(exc)) from exc
    return 0 if result.finished or not args.exit_after_round else 1
