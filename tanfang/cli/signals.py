"""``tanfang signals ingest FILE|-`` and ``tanfang signals register-device``."""

from __future__ import annotations

import argparse
import sys

from scheduler.queue import write_session
from scheduler.signals import SignalError, ingest_lines, register_device
from tanfang.cli import CliError
from tanfang.cli._sched import policies
from tanfang.context import build_context, utc_now
from tanfang.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("signals", help="居家设备信号：紧急按钮、智能水表")
    ss = p.add_subparsers(dest="signals_command", required=True, metavar="ACTION")
    i = ss.add_parser("ingest", help="导入信号（JSON 行或 JSON 数组；- 表示标准输入）")
    i.add_argument("file")
    i.set_defaults(handler=cmd_ingest)
    r = ss.add_parser("register-device", help="登记设备并生成令牌（只显示一次）")
    r.add_argument("--device-id", required=True)
    r.add_argument("--elder", type=int, required=True)
    r.add_argument("--kind", required=True, choices=["sos_button", "water_meter"])
    r.set_defaults(handler=cmd_register)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    pol = policies(settings)
    if args.file == "-":
        lines, source = sys.stdin.read().splitlines(), "cli:stdin"
    else:
        try:
            with open(args.file, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise CliError(f"无法读取 {args.file}：{exc.strerror}") from exc
        source = f"cli:{args.file}"[:100]
    ctx = build_context(settings)
    try:
        results = ingest_lines(ctx.sessions, lines, source=source, now=utc_now(), policies=pol)
    except SignalError as exc:
        raise CliError(str(exc)) from exc
    finally:
        ctx.close()
    for r in results:
        print(f"信号 {r.signal_id}：{r.message}" + (f"（探访任务 {r.checkin_id}）" if r.checkin_id else ""))
    return 0


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    ctx = build_context(settings)
    try:
        with write_session(ctx.sessions) as s:
            token = register_device(s, device_id=args.device_id, elder_id=args.elder, kind=args.kind, now=utc_now())
    except SignalError as exc:
        raise CliError(str(exc)) from exc
    finally:
        ctx.close()
    print(f"设备 {args.device_id} 已登记。令牌（只显示这一次，请写入设备）：\n{token}")
    return 0
