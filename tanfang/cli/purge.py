"""``tanfang purge [--dry-run]``: the retention purge (recordings, transcripts) and due erasures,
the same work as the planner's daily job, plus a sweep of recording files nobody references."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

from ivr.media.recording import purge_recordings
from scheduler.privacy import Retention, purge
from scheduler.queue import write_session
from tanfang.context import build_context
from tanfang.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("purge", help="按保留期限删除录音和通话文字记录，删除撤回同意已到期老人的个人信息")
    p.add_argument("--dry-run", action="store_true", help="只统计将删除的内容，不删除")
    p.add_argument("--json", action="store_true", help="以 JSON 打印结果")
    p.set_defaults(handler=cmd_purge)


def retention_of(settings: Settings) -> Retention:
    return Retention(recordings_dir=settings.recordings_dir, recording_days=settings.recording_retention_days,
                     transcript_days=settings.transcript_retention_days)


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    ctx = build_context(settings)
    try:
        now = ctx.now()
        with write_session(ctx.sessions) as s:
            rep = purge(s, now, retention_of(settings), dry_run=args.dry_run, actor="cli")
        swept = 0
        if not args.dry_run:  # files left behind by crashed calls or deleted rows
            swept = purge_recordings(settings.recordings_dir, timedelta(days=settings.recording_retention_days),
                                     now).files
    finally:
        ctx.close()
    if args.json:
        print(json.dumps(rep.as_json() | {"orphan_files": swept}, ensure_ascii=False))
    else:
        print(rep.summary() + (f"；清理无记录的过期录音文件 {swept} 个" if swept else "") + "。")
    return 0
