"""Synthetic elders for the benchmarks (bulk inserts)."""

from __future__ import annotations

import uuid

from sqlalchemy import insert, text
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
    return f"{base}?options=-csearch_path%3D{schema}", (admin, schema)


def drop(handle: object) -> None:
    if handle:
        admin, schema = handle  # type: ignore[misc]
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
