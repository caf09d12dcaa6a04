"""Process tuning for the media loop: freeze the start-up heap for the GC, optionally run the event
loop thread with SCHED_RR (as media servers do: ``asterisk -p``, ``freeswitch -rp``) or a nice value.

Why: every 20 ms the shared media clock (``ivr.media.clock``) sends a frame for every playing prompt.
A full (generation 2) collection walks every object of the process — models, scripts, SQLAlchemy
metadata loaded at start-up — and stalls the loop for tens of milliseconds; ``gc.freeze()`` after
start-up moves those objects out of the collector's sight. On a shared host, other processes'
load makes the loop miss ticks; SCHED_RR (root or CAP_SYS_NICE) puts it ahead of them. The kernel's
real-time throttling (``sched_rt_runtime_us``, 95 % by default) keeps the machine usable.

Threads inherit the scheduling policy of the thread that creates them, so once the loop thread is
real-time, CPU-heavy helpers (Vosk) must run in :func:`background_executor`, whose threads put
themselves back to the normal policy: otherwise they would compete with the loop as equals.

Call :func:`tune_process` once after start-up (models loaded, scripts parsed, database engine
created), from the thread that runs the event loop, before calls are placed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

RT_PRIORITY = 10


@dataclass
class Tuning:
    """What :func:`tune_process` did (``notes`` says what it could not do, and why)."""

    gc_frozen: int = 0  # objects moved to the permanent generation
    realtime: bool = False
    nice: int | None = None
    notes: list[str] = field(default_factory=list)


def _background_thread_init(nice: int, rt_priority: int | None) -> None:
    """Runs in each new worker thread: normal policy (or SCHED_RR below the loop), then ``nice``."""
    if hasattr(os, "sched_setscheduler"):
        try:  # per thread on Linux
            if rt_priority is not None and os.sched_getscheduler(0) == os.SCHED_RR:
                os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(rt_priority))
                return
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def background_executor(max_workers: int | None = None, *, nice: int = 0, rt_priority: int | None = None,
                        name: str = "background") -> ThreadPoolExecutor:
    """A thread pool whose threads never compete with a real-time loop thread as equals.

    Threads run at the normal policy and ``nice``; or, with ``rt_priority`` (below the loop's) and a
    real-time creating thread, at SCHED_RR ``rt_priority``: the loop still preempts them, the host's
    other work does not (use that for Vosk when turn latency matters on a loaded host). Pass it to
    ``CallRunner(asr_executor=...)``; :func:`tune_process` makes one the loop's default executor.
    """
    return ThreadPoolExecutor(max_workers=max_workers or os.cpu_count() or 2, thread_name_prefix=name,
                              initializer=_background_thread_init, initargs=(nice, rt_priority))


def tune_process(*, freeze_gc: bool = True, realtime: bool = False, rt_priority: int = RT_PRIORITY,
                 nice: int | None = None, loop: asyncio.AbstractEventLoop | None = None) -> Tuning:
    """Tune the calling thread / process for the media loop; never raises (what failed is in ``notes``).

    ``freeze_gc``: ``gc.collect()`` then ``gc.freeze()``. ``realtime``: SCHED_RR at ``rt_priority`` for
    the calling thread (threads it starts later inherit it: pass ``loop`` so its default executor
    becomes a :func:`background_executor`). ``nice``: a nice value for the calling thread when not
    real-time (negative needs privileges).
    """
    out = Tuning()
    if realtime:
        if not hasattr(os, "sched_setscheduler"):
            out.notes.append("SCHED_RR not supported on this platform")
        else:
            try:
                os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(rt_priority))
                out.realtime = True
                if loop is not None:
                    loop.set_default_executor(background_executor(name="loop-default"))
            except (OSError, PermissionError) as exc:
                out.notes.append(f"SCHED_RR refused ({exc}); running at the normal policy")
    if nice is not None and not out.realtime:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
            out.nice = nice
        except OSError as exc:
            out.notes.append(f"nice {nice} refused ({exc})")
    if freeze_gc:
        gc.collect()
        gc.freeze()
        out.gc_frozen = gc.get_freeze_count()
    logger.info("process tuned", extra={"action": "realtime.tune", "realtime": out.realtime,
                                        "gc_frozen": out.gc_frozen, "notes": "; ".join(out.notes)})
    return out
