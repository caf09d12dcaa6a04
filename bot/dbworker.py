"""Database work of the callback, done by dedicated threads in batches (group commit).

Under load, many messages wait at once; a worker takes all that are waiting (up to
``max_batch``), runs them in one write transaction and commits once. If any of them fails, the
batch is rolled back and each job runs again in its own transaction, so one bad message never
takes the others down (jobs must be pure database work, safe to run again after a rollback). On SQLite one thread is the single writer (no
busy-wait sleeps between our own threads); on PostgreSQL several threads work in parallel.
Fewer thread hand-offs and commits per message is what keeps the event loop responsive.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bot.dedup import write_session

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Job:
    fn: Callable[[Session], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class DbWorker:
    def __init__(self, engine: Engine, *, threads: int | None = None, max_batch: int = 32) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.threads = threads or (1 if engine.dialect.name == "sqlite" else 4)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._started: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.batches = 0
        self.jobs = 0

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            for i in range(self.threads):
                t = threading.Thread(target=self._loop, name=f"wechat-db-{i}", daemon=True)
                t.start()
                self._started.append(t)

    async def run(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` inside a write transaction; its result once committed."""
        self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, loop, future))
        return await future

    def close(self) -> None:
        for _ in self._started:
            self._queue.put(None)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        outcomes = self._try_together(batch) if len(batch) > 1 else None
        if outcomes is None:  # one job, or one of them failed: each in its own transaction
            outcomes = [self._alone(job) for job in batch]
        self.batches += 1
        self.jobs += len(batch)
        for job, ok, value in outcomes:
            try:
                job.loop.call_soon_threadsafe(_settle, job.future, ok, value)
            except RuntimeError:  # the loop is closed (shutdown): nobody waits any more
                pass

    def _try_together(self, batch: list[_Job]) -> list[tuple[_Job, bool, Any]] | None:
        try:
            with write_session(self.engine) as session:
                results = [(job, True, job.fn(session)) for job in batch]
        except Exception:
            return None
        return results

    def _alone(self, job: _Job) -> tuple[_Job, bool, Any]:
        try:
            with write_session(self.engine) as session:
                return job, True, job.fn(session)
        except Exception as exc:
            return job, False, exc


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
