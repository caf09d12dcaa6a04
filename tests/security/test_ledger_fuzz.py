"""Hypothesis on the ledger importer: random bytes named .csv/.xlsx, byte-mutated copies of the
sample workbook, and cell-mutated copies of the sample CSV. The importer must never raise (a bad
file is a ``LedgerFormatError`` turned into a file-level error, a bad row a row error) and must
never write part of a file: after any refused import the database is exactly as before.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.crypto import Vault, generate_secret
from storage.db import make_engine, make_session_factory, transaction
from storage.ledger.importer import LedgerImportReport, import_ledger
from storage.migrate import upgrade
from storage.models.elder import Contact, Elder, ElderPhone, Profile
from storage.regions import import_regions, load_region_file
from tests.conftest import SAMPLES

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
XLSX = (SAMPLES / "ledger_sample.xlsx").read_bytes()
CSV_ROWS = list(csv.reader(io.StringIO((SAMPLES / "ledger_sample_gbk.csv").read_bytes().decode("gbk"))))
def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                    derandomize=True)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[sessionmaker[Session], Vault]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('ledgerfuzz') / 'l.db'}"
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    with transaction(sessions) as s:
        import_regions(s, load_region_file(SAMPLES / "regions.yaml"))
    vault = Vault(generate_secret())
    rep = import_ledger(SAMPLES / "ledger_sample.xlsx", sessions=sessions, vault=vault, now=lambda: NOW)
    assert rep.ok and rep.created == 50
    yield sessions, vault
    engine.dispose()


def snapshot(sessions: sessionmaker[Session]) -> str:
    """A digest of every row the importer may touch."""
    h = hashlib.sha256()
    with sessions() as s:
        for model in (Elder, ElderPhone, Contact, Profile):
            for row in s.execute(select(model).order_by(*model.__table__.primary_key.columns)).scalars():
                h.update(repr(sorted((c.key, getattr(row, c.key)) for c in model.__table__.columns)).encode())
    return h.hexdigest()


def run(db: tuple[sessionmaker[Session], Vault], data: bytes, name: str) -> LedgerImportReport:
    sessions, vault = db
    before = snapshot(sessions)
    rep = import_ledger(io.BytesIO(data), sessions=sessions, vault=vault, now=lambda: NOW, filename=name)
    if not rep.ok:
        assert not rep.written
        assert snapshot(sessions) == before, "a refused import changed the database"
        assert all(e.reason for e in rep.errors)
    return rep


@fuzz(200)
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".csv", ".xlsx", ".CSV", ".xls", ".txt"]))
def test_random_bytes(db: Any, data: bytes, suffix: str) -> None:
    rep = run(db, data, "ledger" + suffix)
    if suffix.lower() != ".csv":
        assert not rep.ok


@st.composite
def mutated_bytes(draw: st.DrawFn, base: bytes) -> bytes:
    buf = bytearray(base)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        i = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del buf[i:i + draw(st.integers(1, 512))]
        elif op == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif buf:
            buf[i:i + 64] = bytes(min(64, len(buf) - i))
    return bytes(buf)


@fuzz(60)
@given(data=mutated_bytes(XLSX))
def test_mutated_sample_workbook(db: Any, data: bytes) -> None:
    run(db, data, "ledger_sample.xlsx")


CELL_VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "是", "否", "X", "2301831954101225", "230183195410122513", "13900000001", "1390000000",
                     "0451-53990001", "独居、失能", "未知类别", "1900-01-01", "2099-12-31", "=cmd|' /C calc'!A0",
                     "朝鲜族", "한국어", "\x00", "\u202e", "、、", "高", "特高"]),
)


@st.composite
def mutated_csv(draw: st.DrawFn) -> bytes:
    rows = [list(r) for r in CSV_ROWS]
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["cell", "cell", "cell", "drop_row", "dup_row", "drop_col", "header", "short"]))
        r = draw(st.integers(1, len(rows) - 1))
        c = draw(st.integers(0, len(rows[1]) - 1))
        if op == "cell" and r > 1:
            rows[r][c] = draw(CELL_VALUES)
        elif op == "drop_row" and len(rows) > 3:
            del rows[max(r, 2)]
        elif op == "dup_row":
            rows.append(list(rows[max(r, 2)]))
        elif op == "drop_col":
            for row in rows:
                if c < len(row):
                    del row[c]
        elif op == "header":
            rows[1][c] = draw(CELL_VALUES)
        elif op == "short" and r > 1:
            rows[r] = rows[r][:c]
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    encoding = draw(st.sampled_from(["gbk", "utf-8", "utf-8-sig"]))
    return out.getvalue().encode(encoding, errors="replace")


@fuzz(150)
@given(data=mutated_csv())
def test_mutated_sample_csv(db: Any, data: bytes) -> None:
    run(db, data, "ledger.csv")
