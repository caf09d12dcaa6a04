"""Import a generated 10,000-row ledger workbook into a fresh SQLite database; print rows/s and memory.

    .venv/bin/python bench/ledger_import.py [--rows 10000] [--tracemalloc] [--database-url URL]

Target: ≤ 10 s for 10,000 rows on SQLite (read + validate + write, one transaction). Also times
the re-import of the same file (every row matched by its ID number's blind index, all unchanged).
Memory: peak RSS of the process (or the Python heap peak with --tracemalloc, which is slower).
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openpyxl import Workbook

from storage.crypto import Vault, generate_secret
from storage.db import make_engine, make_session_factory, transaction
from storage.ledger.columns import COLUMNS, Field
from storage.ledger.idcard import make_id
from storage.ledger.importer import import_ledger
from storage.migrate import upgrade
from storage.regions import import_regions, load_region_file

REPO = Path(__file__).resolve().parent.parent
VILLAGES = {"亚布力镇": ["亚布力社区", "青云村", "东兴村", "红旗村"], "河东朝鲜族乡": ["河东村", "朝阳村", "新兴村", "光明村"]}
CATS = ["独居", "空巢", "留守", "独居、失能", "重残", "计划生育特殊家庭", "空巢、留守"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """A workbook as Excel writes it: shared strings and a <dimension> element (openpyxl's
    write-only mode omits the latter, which makes every reader scan the sheet twice)."""
    rng = random.Random(seed)
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "台帐"
    ws.append(["尚志市特殊困难老人台帐（基准测试，虚构数据）"])
    ws.append([c.header for c in COLUMNS])
    start = date(1930, 1, 1)
    for i in range(rows):
        born = start + timedelta(days=i % 11000)
        seq = (i // 11000) * 2 + rng.randrange(2)
        town = "亚布力镇" if i % 2 else "河东朝鲜族乡"
        values = {
            Field.NAME: f"老人{i:05d}",
            Field.ID_NUMBER: make_id("230183", born, seq),
            Field.BIRTH_DATE: born.isoformat(),
            Field.PHONE: f"137{i:08d}" if i % 10 else f"0451-6{i:07d}",
            Field.ADDRESS: f"{town}{i % 9 + 1}组{i % 60 + 1}号",
            Field.TOWNSHIP: town,
            Field.VILLAGE: VILLAGES[town][i % 4],
            Field.CATEGORY: CATS[i % len(CATS)],
            Field.LOCALE: "朝鲜语" if town == "河东朝鲜族乡" and i % 3 == 0 else "普通话",
            Field.CONTACT_NAME: f"子女{i:05d}",
            Field.CONTACT_PHONE: f"136{i:08d}",
            Field.CONTACT_RELATION: "儿子" if i % 2 else "女儿",
            Field.CONSENT: "是",
        }
        ws.append([values.get(c.field) for c in COLUMNS])
    wb.save(path)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--tracemalloc", action="store_true", help="measure the Python heap peak (slower)")
    ap.add_argument("--database-url", help="default: a fresh SQLite file in a temp dir")
    ap.add_argument("--generate", metavar="PATH", help=argparse.SUPPRESS)  # child process: write the workbook only
    args = ap.parse_args()
    if args.generate:
        generate(Path(args.generate), args.rows)
        return

    with tempfile.TemporaryDirectory() as tmp:
        book = Path(tmp) / "ledger.xlsx"
        t0 = time.perf_counter()
        # In a child process, so the peak RSS printed below is the import's, not the generator's.
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--generate", str(book)], check=True)
        print(f"generated {args.rows} rows in {time.perf_counter() - t0:.1f} s ({book.stat().st_size // 1024} KiB)")
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = make_engine(url)
        upgrade(engine)
        sessions = make_session_factory(engine)
        with transaction(sessions) as s:
            import_regions(s, load_region_file(REPO / "samples" / "regions.yaml"))
        vault = Vault(generate_secret())
        rss_before = peak_rss_mb()

        def now() -> datetime:
            return datetime.now(UTC)

        for label in ("first import", "re-import"):
            if args.tracemalloc:
                tracemalloc.start()
            t0, c0 = time.perf_counter(), time.process_time()
            report = import_ledger(book, sessions=sessions, vault=vault, now=now)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            if label == "first import":
                first = elapsed
            heap = ""
            if args.tracemalloc:
                heap = f", heap peak {tracemalloc.get_traced_memory()[1] / 2**20:.1f} MiB"
                tracemalloc.stop()
            assert report.ok, report.errors[:5]
            print(
                f"{label}: {report.rows} rows in {elapsed:.2f} s (CPU {cpu:.2f} s) = {report.rows / elapsed:,.0f} rows/s "
                f"(created {report.created}, updated {report.updated}, unchanged {report.unchanged}); "
                f"peak RSS {peak_rss_mb():.0f} MiB (before import {rss_before:.0f} MiB){heap}"
            )
        engine.dispose()
    verdict = "OK" if first <= 10 else "MISSED"
    if args.tracemalloc:
        verdict += " (timing inflated by --tracemalloc)"
    print(f"target: first import of 10,000 rows <= 10 s on SQLite -> {verdict} ({first:.2f} s)")


if __name__ == "__main__":
    main()
