"""``tanfang report monthly --month 2026-11 [--region CODE] --out FILE.xlsx``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sqlalchemy import select

from console.report import ReportError, month_bounds, monthly_report, write_xlsx
from storage.models.region import Region
from tanfang.cli import CliError
from tanfang.context import build_context
from tanfang.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("report", help="报表：月度探访情况（Excel）")
    rs = p.add_subparsers(dest="report_command", required=True, metavar="KIND")
    m = rs.add_parser("monthly", help="月度报表：探访率（按地区、类别）、远程/上门、失能老人上门覆盖、升级事项")
    m.add_argument("--month", required=True, help="月份，如 2026-11")
    m.add_argument("--region", help="行政区划代码（默认：最高一级）")
    m.add_argument("--out", type=Path, help="输出的 .xlsx 文件")
    m.add_argument("--json", action="store_true", help="同时在标准输出打印 JSON")
    m.set_defaults(handler=cmd_monthly)


def cmd_monthly(args: argparse.Namespace, settings: Settings) -> int:
    try:
        month_bounds(args.month)
    except ReportError as exc:
        raise CliError(str(exc)) from exc
    if args.out is None and not args.json:
        raise CliError("请用 --out FILE.xlsx 指定输出文件（或用 --json 打印）")
    if args.out is not None and args.out.suffix.lower() != ".xlsx":
        raise CliError(f"输出文件应以 .xlsx 结尾：{args.out}")
    ctx = build_context(settings)
    try:
        with ctx.sessions() as s:
            if args.region:
                region = s.scalar(select(Region).where(Region.code == args.region))
                if region is None:
                    raise CliError(f"行政区划代码不存在：{args.region}")
            else:
                region = s.scalar(select(Region).where(Region.parent_id.is_(None)).order_by(Region.id))
                if region is None:
                    raise CliError("还没有导入行政区划（tanfang regions import）")
            rep = monthly_report(s, args.month, region, ctx.now())
    finally:
        ctx.close()
    if args.out is not None:
        write_xlsx(rep, args.out)
        print(f"已生成 {args.out}：{rep.region_name} {rep.month}，在册 {rep.overall.total} 人，"
              f"探访率 {rep.overall.rate * 100:.1f}%，失能老人上门覆盖 {rep.disabled_home.rate * 100:.1f}%")
    if args.json:
        print(json.dumps(rep.as_json(), ensure_ascii=False))
    return 0
