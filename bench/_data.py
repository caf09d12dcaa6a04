"""Synthetic elders for the benchmarks (bulk inserts)."""

from __future__ import annotations

import os
import uuid
from typing import cast

import psutil
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, make_session_factory
from storage.enums import Category
from storage.migrate import upgrade
from storage.models import Elder
from tests.integration.scheduler.data import elder_row, make_regions

MIX = [{Category.EMPTY_NEST}, {Category.EMPTY_NEST}, {Category.LEFT_BEHIND}, {Category.LIVING_ALONE},
       {Category.LIVING_ALONE, Category.DISABLED}, {Category.DISABLED}, {Category.EMPTY_NEST},
       {Category.SEVERELY_DISABLED}, {Category.EMPTY_NEST}, {Category.LIVING_ALONE}]


def database(backend: str, tmp: str) -> tuple[str, object]:
    if backend == "sqlite":
        return f"sqlite:///{tmp}/bench.db", None
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    base = "postgresql://postgres@127.0.0.1:5432/test"
    admin = make_engine(base)
    with admin.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    return f"{base}?options=-csearch_path%3D{schema}&application_name={schema}", (admin, schema)


def drop(handle: object) -> None:
    if handle:
        admin, schema = cast(tuple[Engine, str], handle)
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def populate(url: str, n: int, township: str = "230183100") -> sessionmaker[Session]:
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    with sessions() as s, s.begin():
        regs = make_regions(s)
        rid = regs[township].id
    step = 20000
    for lo in range(0, n, step):
        with sessions() as s, s.begin():
            s.connection().execute(insert(Elder), [elder_row(i, rid, MIX[i % len(MIX)]) for i in range(lo, min(n, lo + step))])
    return sessions


class ServerCPU:
    """CPU seconds the PostgreSQL server spent for this benchmark between ``start()`` and ``stop()``:
    its backends (found by the ``application_name`` the URL sets; pooled, so alive at ``stop()``)
    and the server's background processes (WAL writer, checkpointer, background writer, autovacuum).
    On SQLite (``handle`` None) both are 0: the database work is in this process's CPU time."""

    def __init__(self, handle: object) -> None:
        self.handle = handle
        self.before: dict[int, float] = {}

    @staticmethod
    def _cpu() -> dict[int, float]:
        out = {}
        for p in psutil.process_iter(["name"]):
            if (p.info["name"] or "").startswith("postgres"):
                try:
                    t = p.cpu_times()
                except psutil.Error:
                    continue
                out[p.pid] = t.user + t.system
        return out

    def start(self) -> None:
        self.before = self._cpu() if self.handle else {}

    def stop(self) -> tuple[float, float]:
        """(backends, background) CPU seconds."""
        if not self.handle:
            return 0.0, 0.0
        admin, schema = cast(tuple[Engine, str], self.handle)
        with admin.connect() as c:
            mine = {r[0] for r in c.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = :a"),
                                            {"a": schema})}
            others = {r[0] for r in c.execute(text("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"))}
        now = self._cpu()
        back = sum(v - self.before.get(pid, 0.0) for pid, v in now.items() if pid in mine)
        bg = sum(v - self.before.get(pid, 0.0) for pid, v in now.items()
                 if pid not in mine and pid not in others and pid != os.getpid())
        return back, bg
