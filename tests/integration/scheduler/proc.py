"""Child processes for the multi-process tests (run as ``python -m tests.integration.scheduler.proc``).

    claim URL N LEASE_S NOW_ISO [--hold]   claim N items, print their ids as JSON, then wait to be
                                           killed (--hold: inside the open claim transaction)
    plan URL START_ISO END_ISO             wait for "go" on stdin, plan the range, print the result
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta

from scheduler.config import load_policy
from scheduler.planner import plan_range
from scheduler.queue import claim, write_session
from storage.db import make_engine, make_session_factory


def main(argv: list[str]) -> None:
    cmd, url = argv[0], argv[1]
    sessions = make_session_factory(make_engine(url))
    if cmd == "claim":
        n, lease, now = int(argv[2]), timedelta(seconds=float(argv[3])), datetime.fromisoformat(argv[4])
        if "--hold" in argv:
            s = sessions()
            s.begin()
            got = claim(s, "doomed", n, lease, now, policy=load_policy())
            print(json.dumps([c.id for c in got]), flush=True)  # locks held, nothing committed
        else:
            with write_session(sessions) as s:
                got = claim(s, "doomed", n, lease, now, policy=load_policy())
            print(json.dumps([c.id for c in got]), flush=True)
        time.sleep(600)  # "dialling" until killed
    elif cmd == "plan":
        start, end = datetime.fromisoformat(argv[2]), datetime.fromisoformat(argv[3])
        policies = load_policy()
        sys.stdin.readline()
        r = plan_range(sessions, start, end, start, policies, batch=500)
        print(json.dumps({"planned": r.planned, "inserted": r.inserted, "home_tasks": r.home_tasks}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
