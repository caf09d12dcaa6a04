"""ivr.realtime: GC freeze, SCHED_RR for the loop thread only, worker threads back at the normal policy."""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import pytest

from ivr.realtime import background_executor, tune_process


def test_freeze_gc_moves_startup_objects_out_of_the_collector() -> None:
    keep = [object() for _ in range(1000)]
    try:
        out = tune_process(freeze_gc=True)
        assert out.gc_frozen >= len(keep)
        assert out.realtime is False and out.notes == []
    finally:
        gc.unfreeze()


def _in_thread(fn):  # type: ignore[no-untyped-def]
    """Run ``fn`` in a fresh thread (scheduling changes stay there) and return its result."""
    box: list[object] = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join()
    return box[0]


@pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux scheduling API")
def test_realtime_thread_and_demoted_workers() -> None:
    def body() -> tuple[bool, list[str], int, int]:
        loop = asyncio.new_event_loop()
        try:
            out = tune_process(freeze_gc=False, realtime=True, loop=loop)
            if not out.realtime:  # not root / no CAP_SYS_NICE: said so, nothing else changed
                return False, out.notes, os.sched_getscheduler(0), -1
            pool = background_executor(1)
            worker = pool.submit(os.sched_getscheduler, 0).result()
            rt_pool = background_executor(1, rt_priority=5)
            rt_worker = rt_pool.submit(lambda: (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)).result()
            default = loop.run_until_complete(loop.run_in_executor(None, os.sched_getscheduler, 0))
            pool.shutdown()
            rt_pool.shutdown()
            assert rt_worker == (os.SCHED_RR, 5)
            return True, out.notes, worker, default
        finally:
            loop.close()

    realtime, notes, worker, default = _in_thread(body)
    if not realtime:
        assert notes and "SCHED_RR" in notes[0]
        return
    assert worker == os.SCHED_OTHER  # Vosk threads do not inherit the loop's real-time policy
    assert default == os.SCHED_OTHER
