"""``tanfang audit verify``: walk the audit log's hash chain; exit 1 naming the first bad row."""

from __future__ import annotations

import argparse

from storage.models.escalation import verify_audit_chain
from tanfang.context import build_context
from tanfang.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("audit", help="审计日志")
    s = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    v = s.add_parser("verify", help="校验审计日志的哈希链（发现改动或删除时退出码为 1）")
    v.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    ctx = build_context(settings)
    try:
        with ctx.sessions() as s:
            ok, n, detail = verify_audit_chain(s)
    finally:
        ctx.close()
    if ok:
        print(f"审计日志完整：共 {n} 条，哈希链校验通过。")
        return 0
    print(f"审计日志已被篡改：{detail}（校验到第 {n} 条时发现）。")
    return 1
