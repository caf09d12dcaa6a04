"""Database work of the callback, done by dedicated threads in batches (group commit).

Under load, many messages wait at once; a worker takes all that are waiting (up to
``max_batch``), runs them in one write transaction and commits once. If any of them fails, the
batch is rolled back and each job runs again in its own transaction, so one bad message never
takes the others down (jobs must be pure database work, safe to run again after a rollback). On SQLite one thread is the single writer (no
busy-wait sleeps between our own threads); on PostgreSQL several threads work in parallel.
Fewer thread hand-offs and commits per message is what keeps the event loop responsive.

On SQLite the work is by default done *inline*, on the event loop's own thread, in micro-batches
(all jobs queued during one loop iteration share one transaction): a worker thread contending for
the GIL with a busy event loop waits up to the interpreter's switch interval (5 ms) at every
SQLite call, which costs more than the work itself. Inline batches use a short busy timeout
(``inline_busy_ms``); if another writer holds the database lock, the batch moves to the worker
thread instead of blocking the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Job:
    fn: Callable[[Session], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class DbWorker:
    def __init__(
        self,
        engine: Engine,
        *,
        threads: int | None = None,
        max_batch: int = 32,
        inline: bool | None = None,
        inline_busy_ms: int = 50,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.inline = engine.dialect.name == "sqlite" if inline is None else inline
        self.inline_busy_ms = inline_busy_ms
        self._pending: list[_Job] = []
        self._short: Engine | None = None
        self._flush_scheduled = False
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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(fn, loop, future)
        if self.inline:
            self._pending.append(job)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush_inline)
        else:
            self._start()
            self._queue.put(job)
        return await future

    def _flush_inline(self) -> None:
        self._flush_scheduled = False
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                outcomes = self._inline_batch(batch)
            except OperationalError:  # locked by another writer: let a thread wait for it
                log.info("database busy, batch to worker thread", extra={"action": "wechat_db_busy"})
                self._start()
                for job in batch:
                    self._queue.put(job)
                continue
            self.batches += 1
            self.jobs += len(batch)
            for job, ok, value in outcomes:
                _settle(job.future, ok, value)

    def _inline_engine(self) -> Engine:
        """The same database with a short busy timeout: the loop never waits long for a lock."""
        if self._short is None:
            short = create_engine(self.engine.url, poolclass=self.engine.pool.__class__)
            busy_ms = int(self.inline_busy_ms)

            @event.listens_for(short, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute(f"PRAGMA busy_timeout={busy_ms}")
                cur.close()

            @event.listens_for(short, "begin")
            def _begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

            self._short = short
        return self._short

    def _inline_batch(self, batch: list[_Job]) -> list[tuple[_Job, bool, Any]]:
        with self._inline_engine().connect() as conn:
            together = self._on(conn, batch) if len(batch) > 1 else None
            if together is not None:
                return together
            return [self._on_one(conn, job) for job in batch]

    def _on_one(self, conn: Connection, job: _Job) -> tuple[_Job, bool, Any]:
        try:
            res = self._on(conn, [job], raise_errors=True)
        except OperationalError as exc:
            if _locked(exc):
                raise
            return job, False, exc
        except Exception as exc:
            return job, False, exc
        assert res is not None
        return res[0]

    def _on(self, conn: Connection, batch: list[_Job], raise_errors: bool = False) -> list[tuple[_Job, bool, Any]] | None:
        """Run ``batch`` in one transaction on ``conn``; None if a job failed (all rolled back).
        Lock timeouts always propagate (the caller hands the batch to a thread)."""
        conn.info["write"] = True
        try:
            with conn.begin(), Session(bind=conn, expire_on_commit=False) as session:
                results = [(job, True, job.fn(session)) for job in batch]
                session.flush()
            return results
        except OperationalError as exc:
            if raise_errors or _locked(exc):
                raise
            return None
        except Exception:
            if raise_errors:
                raise
            return None
        finally:
            conn.info.pop("write", None)

    def close(self) -> None:
        for _ in self._started:
            self._queue.put(None)
        if self._short is not None:
            self._short.dispose()

    def _loop(self) -> None:
        """A worker thread: its own connection, kept across batches (no pool checkout and ping per
        batch); a connection found dead (e.g. the database restarted) is replaced at the next batch."""
        conn: Connection | None = None
        try:
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
                if conn is None or conn.invalidated:
                    if conn is not None:
                        conn.close()
                        conn = None
                    try:
                        conn = self.engine.connect()
                    except Exception as exc:  # the database is unreachable: these jobs fail
                        self._settle_all([(job, False, exc) for job in batch])
                        continue
                self._run_batch(conn, batch)
        finally:
            if conn is not None:
                conn.close()

    def _run_batch(self, conn: Connection, batch: list[_Job]) -> None:
        outcomes = self._try_together(conn, batch) if len(batch) > 1 else None
        if outcomes is None:  # one job, or one of them failed: each in its own transaction
            outcomes = [self._alone(conn, job) for job in batch]
        self.batches += 1
        self.jobs += len(batch)
        self._settle_all(outcomes)

    @staticmethod
    def _settle_all(outcomes: list[tuple[_Job, bool, Any]]) -> None:
        for job, ok, value in outcomes:
            with contextlib.suppress(RuntimeError):  # the loop is closed (shutdown): nobody waits
                job.loop.call_soon_threadsafe(_settle, job.future, ok, value)

    def _try_together(self, conn: Connection, batch: list[_Job]) -> list[tuple[_Job, bool, Any]] | None:
        try:
            return self._on(conn, batch)
        except Exception:
            return None

    def _alone(self, conn: Connection, job: _Job) -> tuple[_Job, bool, Any]:
        try:
            res = self._on(conn, [job], raise_errors=True)
        except Exception as exc:
            return job, False, exc
        assert res is not None
        return res[0]


def _locked(exc: OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
