"""Processes of the chaos test: ``python -m tests.reliability.chaos_proc planner|dialer ...``.

They share one accelerated fake clock: ``now = T0 + (time.time() - wall0) * speed``. The vault
secret comes in ``TANFANG_CHAOS_VAULT``. The test kills them with SIGKILL at random moments.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path


class SharedClock:
    def __init__(self, t0: datetime, wall0: float, speed: float) -> None:
        self.t0, self.wall0, self.speed = t0, wall0, speed

    def __call__(self) -> datetime:
        return self.t0 + timedelta(seconds=(time.time() - self.wall0) * self.speed)

    def seconds(self) -> float:
        return self().timestamp()


def _clock(args: argparse.Namespace) -> SharedClock:
    return SharedClock(datetime.fromisoformat(args.t0), args.wall0, args.speed)


def planner(args: argparse.Namespace) -> None:
    from scheduler.config import load_policy
    from scheduler.planner import tick
    from storage.db import make_engine, make_session_factory

    clock = _clock(args)
    sessions = make_session_factory(make_engine(args.db))
    policies = load_policy(Path(args.policy))
    ready = Path(args.policy).with_name("planner.ready")
    first = True
    while True:
        if first:
            ready.write_text(str(os.getpid()))
            first = False
        try:
            tick(sessions, clock(), policies, horizon=timedelta(hours=12), batch=args.batch)
        except Exception as exc:  # the database may be away; a real planner retries on its next tick
            print(f"planner tick failed: {type(exc).__name__}", flush=True)
        time.sleep(0.3)


async def _dialer(args: argparse.Namespace) -> None:
    from dialogs.engine import DialogEngine
    from dialogs.script import load_scripts
    from ivr.dialer import Dialer, DialerConfig
    from ivr.dialplan import DialPlan
    from ivr.sip import SipConfig, UserAgent
    from ivr.testing.fastrunner import FastRunner
    from scheduler.config import load_policy
    from storage.crypto import Vault
    from storage.db import make_engine, make_session_factory

    clock = _clock(args)
    sessions = make_session_factory(make_engine(args.db))
    ua = UserAgent(SipConfig(invite_timeout_s=2.0))
    await ua.start()
    dialer = Dialer(
        sessions=sessions, runner=FastRunner(ua, now=clock), engine=DialogEngine(load_scripts()),
        dial_plan=DialPlan(f"sip:{{number}}@127.0.0.1:{args.peer_port}"),
        vault=Vault(os.environ["TANFANG_CHAOS_VAULT"]), policy=load_policy(Path(args.policy)), now=clock,
        monotonic=clock.seconds,
        config=DialerConfig(worker=f"{args.slot}:{os.getpid()}", line_capacity=args.lines,
                            lease=timedelta(seconds=args.lease_real_s * args.speed),
                            heartbeat_s=args.lease_real_s / 4, poll_s=0.05,
                            lease_margin=timedelta(seconds=30), spool_dir=Path(args.spool)))
    ready = Path(args.spool).with_suffix(".ready")

    async def mark_ready() -> None:
        await asyncio.sleep(0.2)  # the loop is running: the test may kill us from now on
        await asyncio.to_thread(ready.write_text, str(os.getpid()))

    marker = asyncio.create_task(mark_ready())
    await dialer.run()
    await marker


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["planner", "dialer"])
    ap.add_argument("--db", required=True)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--t0", required=True)
    ap.add_argument("--wall0", type=float, required=True)
    ap.add_argument("--speed", type=float, required=True)
    ap.add_argument("--slot", default="d1")
    ap.add_argument("--peer-port", type=int, default=0)
    ap.add_argument("--spool", default="")
    ap.add_argument("--lines", type=int, default=20)
    ap.add_argument("--batch", type=int, default=500)
    # The lease in REAL seconds: it must outlast a worker's restart (≈ 5 s here), as 5 minutes do in
    # production; at 120× a 5-minute fake lease would be 2.5 s and expire before the spool is replayed.
    ap.add_argument("--lease-real-s", type=float, default=20.0)
    args = ap.parse_args()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test may ask for stacks before a kill
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {args.role} {args.slot} %(name)s %(message)s")
    if args.role == "planner":
        planner(args)
    else:
        asyncio.run(_dialer(args))


if __name__ == "__main__":
    main()
