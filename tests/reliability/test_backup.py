"""``tanfang backup`` / ``tanfang restore`` on SQLite: an online backup taken while the app writes is
consistent (no half transaction), restore checks integrity and the migration revision, refuses to
replace a database another process has open unless ``--force``, and the restored database has the
same row counts and decrypts to the same personal data."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scheduler.config import load_policy
from scheduler.queue import Queue, RequestKind
from storage.backup import inspect
from storage.crypto import Vault
from storage.db import make_engine, make_session_factory
from storage.models import CheckIn, CheckInTransition, Elder
from tanfang.cli import main
from tanfang.settings import Settings
from tests.reliability.world import make_elders

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def test_online_backup_then_verified_restore(settings_env: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade"]) == 0
    settings = Settings()
    vault = Vault(os.environ["TANFANG_SECRET_KEY"])
    engine = make_engine(settings.db_url)
    sessions = make_session_factory(engine)
    elders = make_elders(sessions, vault, 300, T0)
    queue = Queue(sessions, load_policy())
    stop = threading.Event()
    written = [0]

    def app_writes() -> None:  # the service keeps queueing calls (check-in + transition per transaction)
        i = 0
        while not stop.is_set():
            r = queue.request_call(elders[i % len(elders)], RequestKind.SIGNAL, T0, reason="设备报警", source="test",
                                   ignore_call_window=True, priority=5 + i)
            # past the 300th call an elder's open request is reused (updated, not a new row)
            written[0] += int(r.created)
            i += 1

    writer = threading.Thread(target=app_writes)
    writer.start()
    try:
        time.sleep(0.3)
        out = tmp_path / "backups" / "tanfang.db"
        assert main(["backup", str(out)]) == 0
        time.sleep(0.2)
    finally:
        stop.set()
        writer.join()
    assert "已备份到" in capsys.readouterr().out
    info = inspect(out)
    # consistent: the copy holds whole transactions only — every queued call has its transition
    with sqlite3.connect(out) as c:
        orphans = c.execute("SELECT count(*) FROM checkins WHERE id NOT IN "
                            "(SELECT checkin_id FROM checkin_transitions)").fetchone()[0]
    assert orphans == 0 and 0 < info.tables["checkins"] <= written[0]  # a prefix of what the app wrote

    # restore refuses while another process has the database open
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1]); "
                               "c.execute('select 1 from elders').fetchall(); print('open', flush=True); "
                               "time.sleep(60)", str(settings.data_dir / "tanfang.db")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"open"
        engine.dispose()
        assert main(["restore", str(out)]) == 1
        assert "正在被进程" in capsys.readouterr().err
        with make_session_factory(make_engine(settings.db_url))() as s:
            assert s.scalar(select(func.count()).select_from(CheckIn)) == written[0]  # untouched
        assert main(["restore", "--force", str(out)]) == 0
    finally:
        holder.kill()
        holder.wait()
    restored = make_engine(settings.db_url)
    with make_session_factory(restored)() as s:
        assert s.scalar(select(func.count()).select_from(CheckIn)) == info.tables["checkins"]
        assert s.scalar(select(func.count()).select_from(CheckInTransition)) == info.tables["checkin_transitions"]
        sample = s.scalars(select(Elder).where(Elder.id.in_(elders[::37])).order_by(Elder.id)).all()
        assert [vault.decrypt(e.phones[0].number_enc) for e in sample] == [f"139{i:08d}" for i in range(0, 300, 37)]
        assert [vault.decrypt(e.id_number_enc) for e in sample] == [f"23018319400101{i:04d}" for i in range(0, 300, 37)]
    assert inspect(settings.data_dir / "tanfang.db").tables == info.tables
    restored.dispose()
    print(f"\nbackup: {info.bytes / 1e6:.2f} MB, {sum(info.tables.values())} rows, taken while {written[0]} "
          f"calls were being queued; restore refused while in use, forced restore matches row counts")


def test_restore_refuses_damaged_or_foreign_backups(settings_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade"]) == 0
    good = tmp_path / "good.db"
    assert main(["backup", str(good)]) == 0
    wrong_rev = tmp_path / "old.db"
    wrong_rev.write_bytes(good.read_bytes())
    with sqlite3.connect(wrong_rev) as c:
        c.execute("UPDATE alembic_version SET version_num = '0001_foundation'")
    damaged = tmp_path / "damaged.db"
    data = bytearray(good.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = b"\xff" * 4096
    damaged.write_bytes(bytes(data))
    not_db = tmp_path / "notes.txt"
    not_db.write_text("这不是数据库", encoding="utf-8")
    capsys.readouterr()
    assert main(["restore", str(wrong_rev)]) == 1
    assert "版本" in capsys.readouterr().err
    assert main(["restore", str(damaged)]) == 1
    err = capsys.readouterr().err
    assert "完整性" in err or "不是有效" in err
    assert main(["restore", str(not_db)]) == 1
    assert main(["restore", str(tmp_path / "missing.db")]) == 1
    assert "不存在" in capsys.readouterr().err
