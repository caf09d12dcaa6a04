"""Ledger integration fixtures: the sample county's regions in a fresh database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage.db import transaction
from storage.regions import import_regions, load_region_file
from tests.conftest import SAMPLES

FIXED_NOW = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def fixed_now() -> datetime:
    return FIXED_NOW


@pytest.fixture
def county(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as s:
        import_regions(s, load_region_file(SAMPLES / "regions.yaml"))
    return "230183"
