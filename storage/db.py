"""Engine and session factory. SQLite is the embedded default; PostgreSQL runs production."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def normalise_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs (the only PostgreSQL driver we ship)."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(url, **kwargs)
        _sqlite_pragmas(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself so "BEGIN IMMEDIATE" can take the write lock up front.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        # Temporary tables and sorts in memory, not in temporary files (the planner's plan table;
        # an embedded database serves a county at most, its sorts are small).
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A write transaction takes the lock up front: set ``conn.info["write"]`` or pass the
        # execution option ``sqlite_write=True`` (see ``scheduler.queue.write_session``).
        write = conn.info.get("write") or conn.get_execution_options().get("sqlite_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error (nothing half-written)."""
    with factory() as session, session.begin():
        yield session


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


# -- transient failures ----------------------------------------------------------------------
# Listed once: the database restarted or is briefly unreachable (connection refused/reset,
# admin shutdown, a pooled connection found dead), or SQLite's writer lock outlasted busy_timeout.
# Everything else (constraint violations, programming errors, LeaseLost) is not retried.
TRANSIENT_SQLSTATES = frozenset({
    "08000", "08001", "08003", "08004", "08006", "08007",  # connection exceptions
    "57P01", "57P02", "57P03",  # admin_shutdown, crash_shutdown, cannot_connect_now
    "40001", "40P01",  # serialization failure, deadlock detected
})


def is_transient(exc: BaseException) -> bool:
    """True for database errors worth retrying after a short wait (see ``TRANSIENT_SQLSTATES``)."""
    from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

    if isinstance(exc, DisconnectionError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state in TRANSIENT_SQLSTATES:
        return True
    if isinstance(exc, OperationalError):
        msg = str(orig).lower()
        return any(s in msg for s in ("database is locked", "connection", "server closed", "terminating",
                                       "could not connect", "the database system is"))
    return False


def retry_transient(fn: Callable[[], _T], *, attempts: int = 6, base_s: float = 0.2, cap_s: float = 5.0,
                       sleep: Callable[[float], None] = time.sleep, what: str = "db") -> _T:
    """Call ``fn``; on a transient database error wait (``base_s`` doubling, at most ``cap_s``)
    and try again, ``attempts`` times in all; then re-raise. Non-transient errors pass at once."""
    delay = base_s
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if i == attempts - 1 or not is_transient(exc):
                raise
            _log.warning("%s: transient database error (%s), retry %d in %.1fs", what, type(exc).__name__,
                         i + 1, delay, extra={"action": "db_retry"})
            sleep(delay)
            delay = min(cap_s, delay * 2)
    raise AssertionError("unreachable")
