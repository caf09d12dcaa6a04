"""Plan a whole month for N synthetic elders on SQLite and PostgreSQL; print time and peak RSS.

    .venv/bin/python bench/plan_month.py [--elders 1000000] [--backend sqlite|postgres|both]
Target: ≤ 60 s per backend for 10⁶ elders, memory flat (elders are streamed in batches).

``cpu_this_process`` is this process's CPU time (on SQLite it includes the database work; on
PostgreSQL the server's CPU comes on top) and ``load`` the 1-minute load average: on a shared,
loaded machine wall times are pessimistic, compare CPU times. ``cpu_server`` (PostgreSQL) is the
CPU of this run's server backends + the server's background processes (WAL writer, checkpointer …).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench._data import ServerCPU, database, drop, populate
from scheduler.config import load_policy
from scheduler.planner import plan_range
from scheduler.windows import LOCAL_TZ


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--elders", type=int, default=1_000_000)
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = ap.parse_args()
    proc = psutil.Process()
    for backend in (["sqlite", "postgres"] if args.backend == "both" else [args.backend]):
        with tempfile.TemporaryDirectory() as tmp:
            url, handle = database(backend, tmp)
            try:
                t0 = time.perf_counter()
                sessions = populate(url, args.elders)
                c0 = time.process_time()
                t_data = time.perf_counter() - t0
                rss0 = proc.memory_info().rss
                server = ServerCPU(handle)
                server.start()
                start, end = datetime(2026, 12, 1, tzinfo=LOCAL_TZ), datetime(2027, 1, 1, tzinfo=LOCAL_TZ)
                r = plan_range(sessions, start, end, start, load_policy())
                cpu = time.process_time() - c0
                srv, bg = server.stop()
                peak = _peak_mb()
                print(f"plan_month {backend}: elders={r.elders} checkins={r.inserted} home_tasks={r.home_tasks} "
                      f"time={r.seconds:.1f}s cpu_this_process={cpu:.1f}s cpu_server={srv:.1f}s+{bg:.1f}s load={os.getloadavg()[0]:.1f} "
                      f"(data setup {t_data:.1f}s) rss_before={rss0 / 2**20:.0f}MB "
                      f"peak_rss={peak:.0f}MB", flush=True)
            finally:
                drop(handle)


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
