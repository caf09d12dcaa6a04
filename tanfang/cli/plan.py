"""``tanfang plan [--dry-run] [--region CODE] [--at TIME] [--hours H] [--json]``."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

from sqlalchemy import select

from scheduler.planner import plan_range, tick
from scheduler.policy import PlannedCheckIn
from scheduler.windows import LOCAL_TZ
from storage.models import Region
from tanfang.cli import CliError
from tanfang.cli._sched import parse_time, policies
from tanfang.context import build_context
from tanfang.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("plan", help="探访计划：查看将到期的探访及原因，或写入队列")
    p.add_argument("--dry-run", action="store_true", help="只显示，不写入")
    p.add_argument("--region", help="只看某行政区划（代码）及其下级")
    p.add_argument("--at", help="按此时间计算（默认现在；无时区按北京时间）")
    p.add_argument("--hours", type=int, default=48, help="向前看多少小时（默认 48）")
    p.add_argument("--json", action="store_true", help="输出 JSON")
    p.set_defaults(handler=cmd_plan)


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    pol = policies(settings)
    now = parse_time(args.at, "--at ")
    ctx = build_context(settings)
    try:
        paths = None
        if args.region:
            with ctx.sessions() as s:
                path = s.scalar(select(Region.path).where(Region.code == args.region))
            if path is None:
                raise CliError(f"行政区划代码不存在：{args.region}")
            paths = [path]
        horizon = timedelta(hours=args.hours)
        if not args.dry_run:
            if paths:
                result = plan_range(ctx.sessions, now, now + horizon, now, pol, region_paths=paths)
            else:
                result = tick(ctx.sessions, now, pol, horizon=horizon)
            print(result.summary())
            return 0
        found: list[PlannedCheckIn] = []
        plan_range(ctx.sessions, now, now + horizon, now, pol, region_paths=paths, dry_run=True, sink=found.append)
        found.sort(key=lambda p: (p.due_at, p.priority, p.elder_id))
        if args.json:
            print(json.dumps([{"elder": p.elder_id, "due_at": p.due_at.isoformat(), "priority": p.priority,
                               "reasons": list(p.reasons)} for p in found], ensure_ascii=False, indent=1))
            return 0
        for p in found:
            print(f"{p.due_at.astimezone(LOCAL_TZ):%Y-%m-%d %H:%M}  老人 {p.elder_id:>7}  优先级 {p.priority:>2}  "
                  f"{'；'.join(p.reasons)}")
        print(f"共 {len(found)} 条（试运行，未写入）")
        return 0
    finally:
        ctx.close()
