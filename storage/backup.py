"""Online backup and verified restore of the SQLite database.

``backup_sqlite`` copies a live database with SQLite's online backup API (a consistent snapshot
even while the app writes: pages changed during the copy make it restart that step), into a
temporary file that is checked (``PRAGMA integrity_check``), fsynced and then renamed into place.
``restore_sqlite`` checks the backup the same way and its Alembic revision against the code's,
refuses to replace a database another process has open unless forced, removes the target's stale
WAL files and swaps the file in atomically. PostgreSQL is backed up with pg_dump (see README).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil


class BackupError(Exception):
    """A clear, final reason (Chinese) why a backup or restore was refused or failed."""


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    revisions: tuple[str, ...]
    tables: dict[str, int]  # row counts
    bytes: int


def _connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def inspect(path: Path) -> BackupInfo:
    """Integrity check, Alembic revision and row counts of a SQLite file; raises BackupError if damaged."""
    if not path.is_file():
        raise BackupError(f"文件不存在：{path}")
    try:
        conn = _connect(path, readonly=True)
    except sqlite3.Error as exc:
        raise BackupError(f"无法打开 {path}：{exc}") from exc
    try:
        try:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{path} 不是有效的 SQLite 数据库：{exc}") from exc
        if result != ["ok"]:
            raise BackupError(f"{path} 完整性检查未通过：{'；'.join(result[:5])}")
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        if "alembic_version" not in names:
            raise BackupError(f"{path} 不是探访系统的数据库（没有迁移版本表 alembic_version）")
        revisions = tuple(sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version")))
        tables = {n: int(conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names}
    finally:
        conn.close()
    return BackupInfo(path, revisions, tables, path.stat().st_size)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(src: Path, dst_tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        dst_tmp.unlink()
    source = _connect(src)
    dest = sqlite3.connect(dst_tmp)
    try:
        source.backup(dest, pages=1024)  # steps of 1024 pages; the app may write in between
        dest.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
    finally:
        dest.close()
        source.close()
    _fsync(dst_tmp)


def backup_sqlite(db: Path, out: Path) -> BackupInfo:
    """Consistent online copy of ``db`` to ``out`` (never a half-written ``out``)."""
    if not db.is_file():
        raise BackupError(f"数据库文件不存在：{db}")
    if out.resolve() == db.resolve():
        raise BackupError("备份文件不能是数据库本身")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    try:
        _copy(db, tmp)
        info = inspect(tmp)
        os.replace(tmp, out)
        _fsync(out.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return BackupInfo(out, info.revisions, info.tables, out.stat().st_size)


def users_of(db: Path) -> list[int]:
    """PIDs of other processes that have the database (or its WAL) open."""
    names = {str(db.resolve()), str(db.resolve()) + "-wal", str(db.resolve()) + "-shm"}
    me = os.getpid()
    pids = []
    for p in psutil.process_iter(["pid"]):
        if p.info["pid"] == me:
            continue
        with contextlib.suppress(psutil.Error):
            if any(f.path in names for f in p.open_files()):
                pids.append(p.info["pid"])
    return pids


def restore_sqlite(backup: Path, db: Path, *, expected_revisions: Iterable[str], force: bool = False) -> BackupInfo:
    """Replace ``db`` by the verified ``backup`` (see the module docstring)."""
    info = inspect(backup)
    expected = tuple(sorted(expected_revisions))
    if info.revisions != expected:
        raise BackupError(f"备份的数据库版本 {', '.join(info.revisions) or '（空）'} 与本程序的版本 "
                          f"{', '.join(expected)} 不一致：请用对应版本的程序恢复，或恢复后运行 tanfang db upgrade")
    if db.exists() and not force:
        pids = users_of(db)
        if pids:
            raise BackupError(f"数据库正在被进程 {', '.join(map(str, pids))} 使用：请先停止服务，"
                              "或确认后加 --force 强制恢复")
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(db.name + ".restore")
    try:
        _copy(backup, tmp)
        inspect(tmp)
        for suffix in ("-wal", "-shm"):  # the old database's WAL must not be applied to the new file
            with contextlib.suppress(FileNotFoundError):
                Path(str(db) + suffix).unlink()
        os.replace(tmp, db)
        _fsync(db.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return inspect(db)
