"""``tanfang db upgrade|current``."""

from __future__ import annotations

import argparse

from storage.db import make_engine
from storage.migrate import current_revisions, head_revisions, upgrade
from tanfang.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="数据库：迁移到最新结构 / 查看版本")
    dsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dsub.add_parser("upgrade", help="运行数据库迁移（可重复运行）")
    up.set_defaults(handler=cmd_upgrade)
    cur = dsub.add_parser("current", help="显示当前数据库版本")
    cur.set_defaults(handler=cmd_current)


def cmd_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    try:
        upgrade(engine)
        print(f"数据库已是最新版本：{', '.join(sorted(current_revisions(engine)))}")
    finally:
        engine.dispose()
    return 0


def cmd_current(args: argparse.Namespace, settings: Settings) -> int:
    engine = make_engine(settings.db_url)
    try:
        cur, heads = current_revisions(engine), head_revisions(engine)
        print(f"当前版本：{', '.join(sorted(cur)) or '（空库）'}；最新版本：{', '.join(sorted(heads))}")
        return 0 if cur == heads else 1
    finally:
        engine.dispose()
