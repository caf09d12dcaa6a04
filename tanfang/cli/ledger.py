"""``tanfang ledger import|template|export`` — the county ledger (台帐) on the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from storage.ledger.importer import LedgerImportReport, import_ledger
from storage.ledger.template import export_ledger, write_template
from tanfang.cli import CliError
from tanfang.cli.regions import migrated_context
from tanfang.settings import Settings

PROGRESS_MIN_ROWS = 2000  # show a bar for files this large even when stderr is not a terminal
MAX_LISTED_ERRORS = 200


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ledger", help="老人台帐：导入 / 模板 / 导出")
    lsub = p.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")

    imp = lsub.add_parser("import", help="导入台帐（.xlsx 或 .csv）；任一行有误则全部不导入")
    imp.add_argument("file", type=Path, help="台帐文件")
    imp.add_argument("--dry-run", action="store_true", help="只校验并统计，不写入数据库")
    imp.add_argument("--json", action="store_true", help="以 JSON 输出结果")
    imp.add_argument("--county", metavar="CODE", help="乡镇、村名在此县区下匹配（如 230183）")
    imp.set_defaults(handler=cmd_import)

    tpl = lsub.add_parser("template", help="生成带填写说明的空白台帐模板")
    tpl.add_argument("out", type=Path, help="输出文件，如 台帐模板.xlsx")
    tpl.set_defaults(handler=cmd_template)

    exp = lsub.add_parser("export", help="按模板格式导出台帐（默认号码脱敏）")
    exp.add_argument("out", type=Path, help="输出文件 .xlsx")
    exp.add_argument("--region", metavar="CODE", help="只导出该区划及其下级的老人")
    exp.add_argument("--reveal", action="store_true", help="导出完整身份证号和电话（请妥善保管文件）")
    exp.set_defaults(handler=cmd_export)


class _Bar:
    """A tqdm bar on stderr, shown on a terminal or for large files only."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if not self.enabled and not (total and total >= PROGRESS_MIN_ROWS):
            return
        bar = self._bars.get(stage)
        if bar is None:
            from tqdm import tqdm

            bar = self._bars[stage] = tqdm(total=total, desc=stage, unit="行", file=sys.stderr, leave=False)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def format_report(report: LedgerImportReport, name: str) -> str:
    if report.errors:
        lines = [f"导入失败：{name} 有 {len(report.errors)} 处错误，未写入任何数据。请修改后重新导入。"]
        for e in report.errors[:MAX_LISTED_ERRORS]:
            lines.append(f"  {e}")
        if len(report.errors) > MAX_LISTED_ERRORS:
            lines.append(f"  ……另有 {len(report.errors) - MAX_LISTED_ERRORS} 处错误（用 --json 查看全部）")
        return "\n".join(lines)
    verb = "试运行（未写入）" if report.dry_run else "导入完成"
    return (
        f"{verb}：{name}（{report.source}）共 {report.rows} 行；"
        f"新建 {report.created}，更新 {report.updated}，未变 {report.unchanged}。"
    )


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.file
    if not path.is_file():
        raise CliError(f"找不到台帐文件：{path}", 2)
    ctx = migrated_context(settings)
    bar = _Bar(sys.stderr.isatty())
    try:
        report = import_ledger(
            path,
            sessions=ctx.sessions,
            vault=ctx.vault,
            now=ctx.now,
            county_code=args.county,
            dry_run=args.dry_run,
            progress=bar,
        )
    finally:
        bar.close()
        ctx.close()
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        print(format_report(report, path.name))
    return 1 if report.errors else 0


def cmd_template(args: argparse.Namespace, settings: Settings) -> int:
    out: Path = args.out
    if out.suffix.lower() != ".xlsx":
        raise CliError("模板文件名应以 .xlsx 结尾", 2)
    write_template(out)
    print(f"模板已生成：{out}（第二个工作表是填写说明）")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    out: Path = args.out
    if out.suffix.lower() != ".xlsx":
        raise CliError("导出文件名应以 .xlsx 结尾", 2)
    ctx = migrated_context(settings)
    try:
        result = export_ledger(out, ctx.sessions, vault=ctx.vault, region_code=args.region, reveal=args.reveal)
    except LookupError as exc:
        raise CliError(str(exc), 1) from exc
    finally:
        ctx.close()
    note = "含完整身份证号和电话，请妥善保管" if result.revealed else "号码已脱敏"
    print(f"已导出 {result.rows} 位老人到 {out}（{note}）")
    return 0
