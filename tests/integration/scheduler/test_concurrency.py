"""8 workers with their own connections claim 10,000 due items on PostgreSQL: each exactly once."""

from __future__ import annotations

import os

import pytest

from bench.claim import run, seed

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_eight_workers_claim_each_item_exactly_once(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only (SKIP LOCKED)")
    n = int(os.environ.get("TANFANG_CLAIM_ITEMS", "10000"))
    seed(db_url, n)
    _secs, claimed = run(db_url, 8, 20)
    assert len(claimed) == n and len(set(claimed)) == n
