"""``tanfang regions import FILE.yaml`` / ``tanfang regions list [--under CODE]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from storage.db import transaction
from storage.migrate import is_current
from storage.regions import RegionFileError, import_regions, list_regions, load_region_file
from tanfang.cli import CliError
from tanfang.context import Context, build_context
from tanfang.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("regions", help="行政区划：导入区划文件 / 列出区划")
    rsub = p.add_subparsers(dest="regions_command", required=True, metavar="ACTION")
    imp = rsub.add_parser("import", help="从 YAML 文件导入区划树（可重复运行）")
    imp.add_argument("file", type=Path, help="区划文件，如 samples/regions.yaml")
    imp.set_defaults(handler=cmd_import)
    lst = rsub.add_parser("list", help="列出已导入的区划")
    lst.add_argument("--under", metavar="CODE", help="只列出该区划及其下级")
    lst.set_defaults(handler=cmd_list)


def migrated_context(settings: Settings) -> Context:
    """The application context, after checking the database schema is current."""
    ctx = build_context(settings)
    try:
        current = is_current(ctx.engine)
    except Exception as exc:  # unreachable server, bad URL: say so in words
        ctx.close()
        raise CliError(f"无法连接数据库：{type(exc).__name__}：{exc}", 2) from exc
    if not current:
        ctx.close()
        raise CliError("数据库尚未初始化或不是最新结构：请先运行 tanfang db upgrade", 2)
    return ctx


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.file
    if not path.is_file():
        raise CliError(f"找不到区划文件：{path}", 2)
    try:
        roots = load_region_file(path)
    except RegionFileError as exc:
        raise CliError(str(exc), 1) from exc
    ctx = migrated_context(settings)
    try:
        with transaction(ctx.sessions) as session:
            result = import_regions(session, roots)
    except RegionFileError as exc:
        raise CliError(str(exc), 1) from exc
    finally:
        ctx.close()
    print(f"区划已导入：新建 {result.created}，更新 {result.updated}，未变 {result.unchanged}")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    ctx = migrated_context(settings)
    try:
        with ctx.sessions() as session:
            regions = list_regions(session, args.under)
    finally:
        ctx.close()
    if not regions:
        print("（没有区划：请先运行 tanfang regions import FILE.yaml）" if not args.under else f"没有代码为 {args.under} 的区划")
        return 0 if not args.under else 1
    for r in regions:
        print(f"{'  ' * r.level.depth}{r.code}  {r.name}（{r.level.label}）")
    return 0
