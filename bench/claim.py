"""Claims/s with 8 worker threads (own connections) on PostgreSQL; counts double claims.

    .venv/bin/python bench/claim.py [--items 10000] [--workers 8] [--batch 10]
Target: ≥ 2,000 claims/s, 0 double claims.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select

from bench._data import database, drop, populate
from scheduler.config import load_policy
from scheduler.queue import Queue
from scheduler.windows import LOCAL_TZ
from storage.db import make_engine, make_session_factory
from storage.models import CheckIn, Elder

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=LOCAL_TZ)


def seed(url: str, items: int) -> None:
    sessions = populate(url, items)
    with sessions() as s, s.begin():
        ids = list(s.scalars(select(Elder.id)))
        s.connection().execute(insert(CheckIn), [
            {"elder_id": e, "slot": "bench", "kind": "routine", "status": "due", "priority": i % 7, "due_at": NOW,
             "next_attempt_at": NOW, "ignore_call_window": False, "reasons": [], "dialog_flags": {}, "attempts": 0,
             "version": 0, "created_at": NOW, "updated_at": NOW} for i, e in enumerate(ids)])


def run(url: str, workers: int, batch: int) -> tuple[float, list[int]]:
    policy = load_policy()
    claimed: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        engine = make_engine(url, pool_size=1, max_overflow=0)
        q = Queue(make_session_factory(engine), policy)
        while True:
            got = q.claim(f"w{n}", batch, timedelta(minutes=5), NOW)
            if not got:
                break
            with lock:
                claimed.extend(c.id for c in got)
        engine.dispose()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, claimed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url, handle = database("postgres", tmp)
        try:
            seed(url, args.items)
            secs, claimed = run(url, args.workers, args.batch)
            doubles = len(claimed) - len(set(claimed))
            print(f"claim postgres: workers={args.workers} batch={args.batch} claimed={len(claimed)}/{args.items} "
                  f"time={secs:.2f}s rate={len(claimed) / secs:.0f}/s double_claims={doubles}")
        finally:
            drop(handle)


if __name__ == "__main__":
    main()
