"""``tanfang backup OUT`` and ``tanfang restore IN`` (SQLite; PostgreSQL uses pg_dump, see README)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy.engine import make_url

from storage.backup import BackupError, backup_sqlite, restore_sqlite
from storage.db import make_engine
from storage.migrate import head_revisions
from tanfang.cli import CliError
from tanfang.settings import Settings

PG_HINT = "PostgreSQL 数据库请用 pg_dump / pg_restore 备份和恢复（见 README“备份与恢复”）"


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("backup", help="在线备份 SQLite 数据库（服务运行时也可以）")
    b.add_argument("out", type=Path, help="备份文件路径，例如 backup/tanfang-20261120.db")
    b.set_defaults(handler=cmd_backup)
    r = sub.add_parser("restore", help="从备份恢复 SQLite 数据库（先检查完整性和版本）")
    r.add_argument("backup", type=Path, help="备份文件路径")
    r.add_argument("--force", action="store_true", help="即使数据库正被其他进程使用也恢复（先停服务更安全）")
    r.set_defaults(handler=cmd_restore)


def _sqlite_path(settings: Settings) -> Path:
    url = make_url(settings.db_url)
    if url.get_backend_name() != "sqlite":
        raise CliError(PG_HINT, 2)
    if not url.database or url.database == ":memory:":
        raise CliError("内存数据库无法备份", 2)
    return Path(url.database)


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    db = _sqlite_path(settings)
    try:
        info = backup_sqlite(db, args.out)
    except BackupError as exc:
        raise CliError(f"备份失败：{exc}", 1) from exc
    rows = sum(info.tables.values())
    print(f"已备份到 {info.path}（{info.bytes / 1e6:.1f} MB，{len(info.tables)} 张表共 {rows} 行，"
          f"版本 {', '.join(info.revisions)}，完整性检查通过）")
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    db = _sqlite_path(settings)
    engine = make_engine(settings.db_url)
    try:
        heads = head_revisions(engine)
    finally:
        engine.dispose()
    try:
        info = restore_sqlite(args.backup, db, expected_revisions=heads, force=args.force)
    except BackupError as exc:
        raise CliError(f"未恢复：{exc}", 1) from exc
    print(f"已从 {args.backup} 恢复到 {db}（{len(info.tables)} 张表共 {sum(info.tables.values())} 行，"
          f"版本 {', '.join(info.revisions)}，完整性检查通过）")
    return 0
