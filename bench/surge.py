"""A red cold-wave alert over a city of N elders: time to re-plan (CAP import → surge calls written).

    .venv/bin/python bench/surge.py [--elders 100000] [--backend sqlite|postgres|both]
Target: ≤ 5 s for 10⁵ elders. The city's routine calls for the next 48 h are planned first (as the
tick would have done), then the red alert ``samples/cap/01_cold_wave_red.xml`` (尚志市, 3 days) is
imported: the event is stored and every covered elder re-planned (daily surge calls, twice daily
for high risk, winter safety questions; superseded routine calls cancelled). Prints the time and
the peak RSS of this process.

``cpu_this_process`` is this process's CPU time (on SQLite it includes the database work; on
PostgreSQL the server's CPU comes on top) and ``load`` the 1-minute load average: on a shared,
loaded machine wall times are pessimistic, compare CPU times. ``cpu_server`` (PostgreSQL) is the
CPU of this run's server backends + the server's background processes (WAL writer, checkpointer …).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._data import ServerCPU, database, drop, populate
from scheduler.config import load_policy
from scheduler.events import import_cap
from scheduler.planner import plan_range
from scheduler.windows import LOCAL_TZ

CAP = Path(__file__).resolve().parent.parent / "samples" / "cap" / "01_cold_wave_red.xml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--elders", type=int, default=100_000)
    ap.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    args = ap.parse_args()
    policies = load_policy()
    now = datetime(2026, 12, 3, 7, 30, tzinfo=LOCAL_TZ)
    for backend in (["sqlite", "postgres"] if args.backend == "both" else [args.backend]):
        with tempfile.TemporaryDirectory() as tmp:
            url, handle = database(backend, tmp)
            try:
                sessions = populate(url, args.elders, township="230183100")  # 尚志镇, in 尚志市
                base = plan_range(sessions, now, now + timedelta(hours=48), now, policies)
                server = ServerCPU(handle)
                server.start()
                t0, c0 = time.perf_counter(), time.process_time()
                res = import_cap(sessions, CAP.read_bytes(), now, policies)
                secs, cpu = time.perf_counter() - t0, time.process_time() - c0
                srv, bg = server.stop()
                r = res.replan
                assert r is not None and res.action == "created", res.message
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(f"surge {backend}: elders={r.elders} routine_before={base.inserted} surge_new={r.inserted} "
                      f"cancelled={r.cancelled} time={secs:.2f}s (target ≤ 5 s) cpu_this_process={cpu:.2f}s "
                      f"cpu_server={srv:.2f}s+{bg:.2f}s load={os.getloadavg()[0]:.1f} peak_rss={peak:.0f}MB", flush=True)
            finally:
                drop(handle)


if __name__ == "__main__":
    main()
