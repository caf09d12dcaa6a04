"""Pure pieces of the console and outbox: month bounds, chart, profile parsing, scoping SQL, backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Column, MetaData, String, Table, create_engine, select

from console.actions import InvalidInput, parse_profile_updates
from console.auth import hash_password, verify_password
from console.report import ReportError, month_bounds, previous_months, svg_bar_chart
from console.scope import path_in_scope
from scheduler.outbox import RetryPolicy


def test_month_bounds_are_shanghai_months() -> None:
    start, end = month_bounds("2026-11")
    assert start == datetime(2026, 10, 31, 16, 0, tzinfo=UTC)
    assert end == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    assert month_bounds("2026-12")[1] == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    for bad in ("2026-13", "2026/11", "", "十一月"):
        with pytest.raises(ReportError, match="月份格式不正确"):
            month_bounds(bad)


def test_previous_months_cross_the_year() -> None:
    assert previous_months(datetime(2026, 2, 10, tzinfo=UTC), 4) == ["2026-02", "2026-01", "2025-12", "2025-11"]


def test_chart_escapes_labels_and_clamps() -> None:
    svg = svg_bar_chart([("<script>", 0.5), ("甲镇", 1.7), ("乙镇", -1)], title="a&b")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "a&amp;b" in svg
    assert svg.count("<rect") == 3 and "50.0%" in svg and 'class="bar low"' in svg
    assert "style" not in svg


def test_profile_updates() -> None:
    got = parse_profile_updates({"home_hazards": "火炕裂缝，电线老化、 ", "mobility": "半失能", "needs": "",
                                 "health_note": "  ", "unknown": "x"})
    assert got == {"home_hazards": ["火炕裂缝", "电线老化"], "mobility": "半失能"}
    with pytest.raises(InvalidInput, match="自理能力"):
        parse_profile_updates({"mobility": "很好"})


def test_scope_predicate_matches_subtree_only_and_escapes_wildcards() -> None:
    engine = create_engine("sqlite://")
    t = Table("r", MetaData(), Column("path", String))
    t.metadata.create_all(engine)
    paths = ["23/01", "23/01/001", "23/01/001/7", "23/011", "23/02", "23/0_", "23/0_/1", "23/0x/1"]
    with engine.begin() as c:
        c.execute(t.insert(), [{"path": p} for p in paths])
        def under(p: str) -> list[str]:
            return sorted(c.scalars(select(t.c.path).where(path_in_scope(t.c.path, p))))
        assert under("23/01") == ["23/01", "23/01/001", "23/01/001/7"]  # not 23/011
        assert under("23/0_") == ["23/0_", "23/0_/1"]  # "_" is not a wildcard


def test_backoff() -> None:
    r = RetryPolicy(base_s=30, factor=2, cap_s=100)
    assert [r.delay(n) for n in (1, 2, 3, 4)] == [timedelta(seconds=s) for s in (30, 60, 100, 100)]


def test_passwords() -> None:
    h = hash_password("long-enough-1")
    assert h.startswith("$argon2") and verify_password(h, "long-enough-1")
    assert not verify_password(h, "long-enough-2") and not verify_password(None, "x") and not verify_password("junk", "x")
    with pytest.raises(ValueError, match="至少"):
        hash_password("short")
