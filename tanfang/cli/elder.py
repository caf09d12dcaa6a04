"""``tanfang elder consent ID --grant|--withdraw`` and ``tanfang elder export ID --out FILE.json``."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path

from scheduler.privacy import PrivacyError, export_elder, set_consent
from scheduler.queue import write_session
from storage.enums import ConsentStatus
from tanfang.cli import CliError
from tanfang.context import build_context
from tanfang.settings import Settings

ACTOR = "cli"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("elder", help="老人个人信息：知情同意、撤回同意、导出个人信息副本")
    es = p.add_subparsers(dest="elder_command", required=True, metavar="ACTION")
    c = es.add_parser("consent", help="登记同意或撤回同意（撤回：立即停止自动电话，并按期删除个人信息）")
    c.add_argument("elder_id", type=int, metavar="ID", help="老人编号")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--grant", action="store_true", help="老人同意接受电话探访")
    g.add_argument("--withdraw", action="store_true", help="老人撤回同意")
    c.add_argument("--by", help="由谁登记/转达（如：本人电话告知 村网格员李某）")
    c.add_argument("--note", help="备注")
    c.set_defaults(handler=cmd_consent)
    x = es.add_parser("export", help="导出该老人的全部个人信息（查阅、复制请求；写入审计日志）")
    x.add_argument("elder_id", type=int, metavar="ID", help="老人编号")
    x.add_argument("--out", type=Path, required=True, help="输出的 .json 文件")
    x.set_defaults(handler=cmd_export)


def cmd_consent(args: argparse.Namespace, settings: Settings) -> int:
    status = ConsentStatus.GRANTED if args.grant else ConsentStatus.WITHDRAWN
    ctx = build_context(settings)
    try:
        with write_session(ctx.sessions) as s:
            change = set_consent(s, args.elder_id, status, ctx.now(), actor=ACTOR, by=args.by, note=args.note,
                                 deletion_after=timedelta(days=settings.consent_deletion_days))
    except PrivacyError as exc:
        raise CliError(str(exc)) from exc
    finally:
        ctx.close()
    if change.status is ConsentStatus.WITHDRAWN:
        assert change.deletion_due_at is not None
        when = change.deletion_due_at.astimezone().strftime("%Y-%m-%d")
        print(f"已登记老人 {change.elder_id} 撤回同意：停止自动电话，取消待拨 {change.cancelled_checkins} 个；"
              f"个人信息将于 {when} 删除（期间重新登记同意可撤销删除）。")
    else:
        print(f"已登记老人 {change.elder_id} 同意接受电话探访。")
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    if args.out.suffix.lower() != ".json":
        raise CliError(f"输出文件应以 .json 结尾：{args.out}")
    ctx = build_context(settings)
    try:
        with write_session(ctx.sessions) as s:
            data = export_elder(s, ctx.vault, args.elder_id, ctx.now(), actor=ACTOR)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_name(args.out.name + ".part")
            tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
            tmp.chmod(0o600)
            tmp.replace(args.out)
    except PrivacyError as exc:
        raise CliError(str(exc)) from exc
    finally:
        ctx.close()
    print(f"已导出老人 {args.elder_id} 的个人信息到 {args.out}（含完整证件号和电话，请妥善保管；本次导出已记入审计日志）")
    return 0
