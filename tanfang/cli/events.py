"""``tanfang events list|declare|end|import-cap|festivals``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scheduler.cap import CapError
from scheduler.events import EventError, declare, end_event, import_cap, list_events
from scheduler.festivals import festivals
from scheduler.windows import LOCAL_TZ
from storage.enums import EventKind
from tanfang.cli import CliError
from tanfang.cli._sched import parse_time, policies
from tanfang.context import build_context, utc_now
from tanfang.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("events", help="加密探访事件：极端天气预警、封控、节日")
    es = p.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    ls = es.add_parser("list", help="列出生效中和未开始的事件")
    ls.add_argument("--all", action="store_true", help="也列出已结束/已取消的")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_list)
    d = es.add_parser("declare", help="登记事件（如封控）")
    d.add_argument("--kind", required=True, choices=["lockdown", "weather"])
    d.add_argument("--region", required=True, action="append", help="行政区划代码（可重复）")
    d.add_argument("--from", dest="start", required=True, help="开始时间")
    d.add_argument("--to", dest="end", required=True, help="结束时间")
    d.add_argument("--title")
    d.add_argument("--level", choices=["red", "orange", "yellow", "blue"])
    d.add_argument("--by", default="cli")
    d.set_defaults(handler=cmd_declare)
    e = es.add_parser("end", help="提前结束事件")
    e.add_argument("id", type=int)
    e.add_argument("--at", help="结束时间（默认现在）")
    e.add_argument("--by", default="cli")
    e.set_defaults(handler=cmd_end)
    c = es.add_parser("import-cap", help="导入 CAP 1.2 预警 XML（预警/更新/解除）")
    c.add_argument("files", nargs="+", type=Path)
    c.add_argument("--at", help="按此时间处理（默认现在）")
    c.set_defaults(handler=cmd_import)
    f = es.add_parser("festivals", help="某年的节日日期（农历）")
    f.add_argument("--year", type=int, required=True)
    f.add_argument("--json", action="store_true")
    f.set_defaults(handler=cmd_festivals)


def cmd_festivals(args: argparse.Namespace, settings: Settings) -> int:
    if not 1901 <= args.year <= 2099:
        raise CliError("年份应在 1901–2099 之间")
    days = festivals(args.year)
    if args.json:
        print(json.dumps({k: v.isoformat() for k, v in days.items()}, ensure_ascii=False))
    else:
        for k, v in days.items():
            print(f"{k}\t{v.isoformat()}")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    ctx = build_context(settings)
    try:
        evs = list_events(ctx.sessions, utc_now(), include_past=args.all)
    finally:
        ctx.close()
    if args.json:
        print(json.dumps([{"id": e.id, "kind": e.kind.value, "title": e.title, "level": e.level,
                           "starts_at": e.starts_at.isoformat(), "ends_at": e.ends_at.isoformat(),
                           "state": e.state, "regions": e.regions, "source": e.source} for e in evs],
                         ensure_ascii=False, indent=1))
        return 0
    if not evs:
        print("没有生效中的事件。")
    for e in evs:
        print(f"#{e.id}  [{e.state}] {e.title}  {e.starts_at.astimezone(LOCAL_TZ):%m-%d %H:%M} 至 "
              f"{e.ends_at.astimezone(LOCAL_TZ):%m-%d %H:%M}  区域：{'、'.join(e.regions)}")
    return 0


def cmd_declare(args: argparse.Namespace, settings: Settings) -> int:
    pol = policies(settings)
    ctx = build_context(settings)
    try:
        event_id, res = declare(ctx.sessions, kind=EventKind(args.kind), region_codes=args.region,
                                starts_at=parse_time(args.start, "--from "), ends_at=parse_time(args.end, "--to "),
                                now=utc_now(), policies=pol, by=args.by, title=args.title, level=args.level)
    except EventError as exc:
        raise CliError(str(exc)) from exc
    finally:
        ctx.close()
    print(f"已登记事件 #{event_id}；重新计划：{res.summary()}")
    return 0


def cmd_end(args: argparse.Namespace, settings: Settings) -> int:
    pol = policies(settings)
    ctx = build_context(settings)
    try:
        res = end_event(ctx.sessions, args.id, now=parse_time(args.at), policies=pol, by=args.by)
    except EventError as exc:
        raise CliError(str(exc)) from exc
    finally:
        ctx.close()
    print(f"事件 #{args.id} 已结束；重新计划：{res.summary()}")
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    pol = policies(settings)
    now = parse_time(args.at)
    ctx = build_context(settings)
    failed = 0
    try:
        for path in args.files:
            try:
                res = import_cap(ctx.sessions, path.read_bytes(), now, pol)
            except OSError as exc:
                print(f"{path}：无法读取（{exc.strerror}）")
                failed += 1
                continue
            except CapError as exc:
                print(f"{path}：拒绝导入：{exc}")
                failed += 1
                continue
            extra = f"；{res.replan.summary()}" if res.replan else ""
            print(f"{path}：{res.message}{extra}")
    finally:
        ctx.close()
    return 1 if failed else 0
