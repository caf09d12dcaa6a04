"""Re-planning when events change: revived slots and superseded routine calls (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import load_policy
from scheduler.events import declare, end_event, import_cap
from scheduler.planner import plan_range, tick
from scheduler.queue import OPEN, cancel, claim, complete, release, write_session
from scheduler.windows import LOCAL_TZ
from storage.enums import Category, CheckInStatus, ConsentStatus, ElderStatus, EventKind, Outcome
from storage.models import CheckIn, CheckInTransition, Elder
from tests.integration.scheduler.data import add_elder, make_regions

POL = load_policy()


def L(*a: int) -> datetime:
    return datetime(*a, tzinfo=LOCAL_TZ)


@pytest.fixture
def town(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as s, s.begin():
        regs = make_regions(s)
        return {
            "general": add_elder(s, 1, regs["230183100"], {Category.EMPTY_NEST}),
            "high": add_elder(s, 2, regs["230183100"], {Category.DISABLED, Category.LIVING_ALONE}),
        }


def rows(sessions: sessionmaker[Session], elder: int, kind: str) -> dict[str, CheckIn]:
    with sessions() as s:
        return {c.slot: c for c in s.scalars(select(CheckIn).where(CheckIn.elder_id == elder, CheckIn.kind == kind))}


def cold_wave(sessions: sessionmaker[Session], frm: datetime, to: datetime, now: datetime, title: str) -> int:
    ev, _ = declare(sessions, kind=EventKind.WEATHER, region_codes=["230183"], starts_at=frm, ends_at=to, now=now,
                    policies=POL, by="staff:7", title=title, level="red", hazard="cold_wave")
    return ev


def test_cancelled_surge_day_is_revived_when_another_event_wants_it(sessions, town) -> None:
    g = town["general"]
    a = cold_wave(sessions, L(2026, 12, 3, 8), L(2026, 12, 7), L(2026, 12, 3, 8), "寒潮A")
    assert "X:D2026-12-05" not in rows(sessions, g, "surge")  # beyond the 48 h horizon: later ticks
    tick(sessions, L(2026, 12, 3, 8, 30), POL, horizon=timedelta(days=4))  # a 4-day planner horizon
    assert {"X:D2026-12-05", "X:D2026-12-06"} <= set(rows(sessions, g, "surge"))
    end_event(sessions, a, now=L(2026, 12, 3, 9), policies=POL, by="staff:7")
    ended = rows(sessions, g, "surge")
    assert ended["X:D2026-12-05"].status is CheckInStatus.CANCELLED

    b = cold_wave(sessions, L(2026, 12, 5), L(2026, 12, 7), L(2026, 12, 3, 10), "寒潮B")
    after = rows(sessions, g, "surge")
    day5 = after["X:D2026-12-05"]
    assert day5.status is CheckInStatus.PLANNED and day5.id == ended["X:D2026-12-05"].id
    assert any("寒潮B" in r for r in day5.reasons) and day5.dialog_flags["event_ids"] == [b]
    with sessions() as s:
        trail = s.execute(select(CheckInTransition.from_status, CheckInTransition.to_status, CheckInTransition.actor)
                          .where(CheckInTransition.checkin_id == day5.id).order_by(CheckInTransition.id)).all()
    assert [(t.from_status, t.to_status) for t in trail][-2:] == [
        (CheckInStatus.PLANNED, CheckInStatus.CANCELLED), (CheckInStatus.CANCELLED, CheckInStatus.PLANNED)]
    assert trail[-1].actor == "planner"
    # Exactly one row per (elder, slot), and the 4th (outside B) stays cancelled.
    assert after["X:D2026-12-04"].status is CheckInStatus.CANCELLED

    # Staff cancel the revived 6th; re-planning B again does not bring a staff cancellation back.
    with write_session(sessions) as s:
        assert cancel(s, [after["X:D2026-12-06"].id], L(2026, 12, 3, 11), "staff:7", "家属已接回同住") == 1
    cold_wave(sessions, L(2026, 12, 6), L(2026, 12, 7), L(2026, 12, 3, 12), "寒潮C")
    assert rows(sessions, g, "surge")["X:D2026-12-06"].status is CheckInStatus.CANCELLED


def _open_routine(sessions: sessionmaker[Session], elder: int, lo: datetime, hi: datetime) -> set[str]:
    return {slot for slot, c in rows(sessions, elder, "routine").items()
            if c.status in OPEN and lo <= c.due_at < hi}


def test_lockdown_doubles_routine_calls_instead_of_adding_to_them(sessions, town) -> None:
    g, h = town["general"], town["high"]
    now = L(2026, 11, 30, 8)
    plan_range(sessions, now, L(2027, 1, 1), now, POL)
    dec = (L(2026, 12, 1), L(2027, 1, 1))
    assert _open_routine(sessions, g, *dec) == {"R:M2026-12"}  # monthly
    before_high = _open_routine(sessions, h, *dec)
    assert len(before_high) == 5  # weekly: W49..W53

    # (A month-long planner horizon, as with `tanfang plan --hours 768`: the whole month is planned.)
    ev, res = declare(sessions, kind=EventKind.LOCKDOWN, region_codes=["230183"], starts_at=now,
                      ends_at=L(2027, 1, 1), now=now, policies=POL, by="staff:1", horizon=timedelta(days=32))
    assert res.cancelled >= 1
    # Doubled, not doubled + 1: the monthly slot is superseded by two half-month slots.
    assert _open_routine(sessions, g, *dec) == {"R:H2026-12-1", "R:H2026-12-2"}
    assert rows(sessions, g, "routine")["R:M2026-12"].status is CheckInStatus.CANCELLED
    week = _open_routine(sessions, h, L(2026, 12, 7), L(2026, 12, 14))
    assert week == {"R:W2026-50a", "R:W2026-50b"}  # weekly → twice weekly
    assert _open_routine(sessions, h, *dec) == {"R:W2026-49b"} | {
        f"R:W2026-{w}{half}" for w in (50, 51, 52, 53) for half in "ab"}

    # Lifting the lockdown early brings the monthly slot back (same row) and drops the extra ones.
    end_event(sessions, ev, now=L(2026, 12, 2, 0), policies=POL, by="staff:1", horizon=timedelta(days=32))
    assert _open_routine(sessions, g, *dec) == {"R:M2026-12"}
    assert _open_routine(sessions, h, L(2026, 12, 2), dec[1]) == {
        s for s in before_high if rows(sessions, h, "routine")[s].due_at >= L(2026, 12, 2)}


def _open_surge(sessions: sessionmaker[Session], elder: int) -> dict[str, datetime]:
    return {slot: c.due_at for slot, c in rows(sessions, elder, "surge").items() if c.status in OPEN}


def test_event_calls_are_written_within_the_horizon_and_later_days_by_the_ticks(sessions, town) -> None:
    """A re-plan writes calls only within the rolling 48 h horizon (a long event costs two days of
    calls at once); the tick plans each later day while the event is active; ending the event early
    cancels what was planned beyond its new end, and reconciles routine calls over the whole event."""
    g, h = town["general"], town["high"]
    now = L(2026, 12, 3, 7, 30)
    plan_range(sessions, now, L(2027, 1, 1), now, POL)  # routine calls for the month exist already
    assert _open_routine(sessions, h, L(2026, 12, 3), L(2026, 12, 14)) == {"R:W2026-49", "R:W2026-50"}
    ev = cold_wave(sessions, L(2026, 12, 3, 8), L(2026, 12, 14), now, "寒潮十日")
    first = _open_surge(sessions, g)
    assert set(first) == {"X:D2026-12-03", "X:D2026-12-04"} and max(first.values()) < now + timedelta(hours=48)
    assert {"X:D2026-12-03pm", "X:D2026-12-04pm"} <= set(_open_surge(sessions, h))
    # Superseded routine calls are cancelled over the whole event, also beyond the horizon (the
    # high-risk elder's weekly call of week 50 falls on a surge day).
    assert _open_routine(sessions, h, L(2026, 12, 3), L(2026, 12, 14)) == set()
    for day in (4, 5, 6):
        tick(sessions, L(2026, 12, day, 7, 0), POL)
        assert f"X:D2026-12-{day + 1:02d}" in _open_surge(sessions, g)
    assert "X:D2026-12-08" not in _open_surge(sessions, g)
    # Lifted early on the 6th at noon: the 7th's calls (planned by the tick) are cancelled, the
    # routine calls after the end come back through the reconcile and the ticks.
    end_event(sessions, ev, now=L(2026, 12, 6, 12), policies=POL, by="staff:7")
    after = _open_surge(sessions, g)
    assert "X:D2026-12-07" not in after and max(after.values()) < L(2026, 12, 7)
    assert rows(sessions, g, "surge")["X:D2026-12-07"].status is CheckInStatus.CANCELLED
    assert _open_routine(sessions, h, L(2026, 12, 7), L(2026, 12, 14)) == {"R:W2026-50"}


def _answer_first_surge_call(sessions: sessionmaker[Session], elder: int) -> None:
    """The elder answers the event's first call: this month's visit is done (no routine call is owed)."""
    first = min(_open_surge(sessions, elder).values())
    with write_session(sessions) as s:
        got = {c.elder_id: c for c in claim(s, "w1", 10, timedelta(minutes=5), first)}
        for eid, c in got.items():
            if eid == elder:
                complete(s, c.id, worker="w1", version=c.version, outcome=Outcome.WELL, now=first + timedelta(minutes=3))
            else:
                release(s, c.id, worker="w1", version=c.version, now=first)
    assert elder in got


def _set(sessions: sessionmaker[Session], elder: int, **values: object) -> None:
    with write_session(sessions) as s:
        s.execute(update(Elder).where(Elder.id == elder).values(**values))


@pytest.mark.parametrize("variant", ["month_done", "paused", "consent_withdrawn", "inactive"])
def test_ending_an_event_cancels_surge_calls_of_elders_the_policy_plans_nothing_for(sessions, town, variant) -> None:
    """The re-plan reconciles every covered elder with open calls, also one the policy now plans
    nothing for (this month's visit done, paused, no automated calls at all): otherwise the ended
    event's daily calls would go on."""
    g = town["general"]
    ev = cold_wave(sessions, L(2026, 12, 3, 8), L(2026, 12, 14), L(2026, 12, 3, 7, 30), "寒潮十日")
    if variant == "month_done":
        _answer_first_surge_call(sessions, g)
    for day in (4, 5, 6):
        tick(sessions, L(2026, 12, day, 7, 0), POL)
    assert "X:D2026-12-07" in _open_surge(sessions, g)
    if variant == "paused":  # in hospital until the new year
        _set(sessions, g, pause_until=L(2027, 1, 1), pause_reason="住院")
    elif variant == "consent_withdrawn":  # as a ledger import records 否 (open calls left to the planner)
        _set(sessions, g, consent_status=ConsentStatus.WITHDRAWN)
    elif variant == "inactive":
        _set(sessions, g, status=ElderStatus.INACTIVE)
    end = L(2026, 12, 6, 12)
    end_event(sessions, ev, now=end, policies=POL, by="staff:7")
    after = _open_surge(sessions, g)
    assert {slot for slot, due in after.items() if due >= end} == set(), variant
    assert rows(sessions, g, "surge")["X:D2026-12-07"].status is CheckInStatus.CANCELLED
    # The ticks after the end plan nothing for this elder in December (the month's visit is done /
    # paused / no calls), and the high-risk elder beside them is unaffected.
    for day in (7, 8):
        tick(sessions, L(2026, 12, day, 7, 0), POL)
    with sessions() as s:
        later = s.scalars(select(CheckIn.slot).where(CheckIn.elder_id == g, CheckIn.due_at >= end,
                                                     CheckIn.status.in_(OPEN))).all()
    assert later == []
    assert "X:D2026-12-07" not in _open_surge(sessions, town["high"])


def _cap(identifier: str, msg_type: str, sent: datetime, areas: list[tuple[str, str]], *,
         references: list[tuple[str, datetime]] = (), expires: datetime = L(2026, 12, 10)) -> bytes:  # type: ignore[assignment]
    """A CAP 1.2 red cold-wave message from 哈尔滨市气象台 over ``areas`` (name, region code)."""
    refs = " ".join(f"哈尔滨市气象台,{i},{t.isoformat()}" for i, t in references)
    area_xml = "".join(f"<area><areaDesc>{name}</areaDesc><geocode><valueName>行政区划代码</valueName>"
                       f"<value>{code}</value></geocode></area>" for name, code in areas)
    return (f'<?xml version="1.0" encoding="UTF-8"?><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
            f"<identifier>{identifier}</identifier><sender>哈尔滨市气象台</sender><sent>{sent.isoformat()}</sent>"
            f"<status>Actual</status><msgType>{msg_type}</msgType><scope>Public</scope>"
            + (f"<references>{refs}</references>" if refs else "")
            + "<info><language>zh-CN</language><category>Met</category><event>寒潮红色预警</event>"
            "<urgency>Immediate</urgency><severity>Extreme</severity><certainty>Likely</certainty>"
            f"<onset>{L(2026, 12, 3, 8).isoformat()}</onset><expires>{expires.isoformat()}</expires>"
            "<headline>哈尔滨市气象台发布寒潮红色预警信号</headline><description>气温骤降。</description>"
            f"{area_xml}</info></alert>").encode()


SHANGZHI, WUCHANG = ("尚志市", "230183"), ("五常市", "230184")


@pytest.fixture
def two_counties(sessions: sessionmaker[Session]) -> dict[str, int]:
    """A general and a high-risk elder in 尚志市 (kept by the update) and in 五常市 (dropped)."""
    with sessions() as s, s.begin():
        regs = make_regions(s)
        return {
            "kept": add_elder(s, 1, regs["230183100"], {Category.EMPTY_NEST}),
            "kept_high": add_elder(s, 2, regs["230183100"], {Category.DISABLED, Category.LIVING_ALONE}),
            "dropped": add_elder(s, 3, regs["230184"], {Category.EMPTY_NEST}),
            "dropped_high": add_elder(s, 4, regs["230184"], {Category.DISABLED, Category.LIVING_ALONE}),
        }


def _open_rows(sessions: sessionmaker[Session], elder: int, kind: str) -> dict[str, tuple[int, datetime]]:
    return {slot: (c.id, c.due_at) for slot, c in rows(sessions, elder, kind).items() if c.status in OPEN}


@pytest.mark.parametrize("how", ["update", "update_replacing_two"])
def test_an_update_covering_fewer_regions_releases_the_dropped_region(sessions, two_counties, how) -> None:
    """A CAP Update that covers fewer regions than before: the dropped region's elders lose their
    open surge calls from the update on and get their routine plan back (as when an event ends
    early); the kept region is unchanged. Also when the update replaces two alerts at once (the
    one for the dropped county is ended, not updated)."""
    e = two_counties
    now = L(2026, 12, 3, 7, 30)
    plan_range(sessions, now, L(2027, 1, 1), now, POL)  # routine calls for the month exist already
    week50 = (L(2026, 12, 7), L(2026, 12, 14))
    assert _open_routine(sessions, e["dropped_high"], *week50) == {"R:W2026-50"}
    sent = L(2026, 12, 3, 7)
    if how == "update":
        first = [("CW-1", sent)]
        assert import_cap(sessions, _cap("CW-1", "Alert", sent, [SHANGZHI, WUCHANG]), now, POL).action == "created"
    else:  # one alert per county, then one update for 尚志市 replacing both
        first = [("CW-1", sent), ("CW-2", sent)]
        import_cap(sessions, _cap("CW-1", "Alert", sent, [SHANGZHI]), now, POL)
        import_cap(sessions, _cap("CW-2", "Alert", sent, [WUCHANG]), now, POL)
    for who in ("kept", "dropped"):
        assert {"X:D2026-12-03", "X:D2026-12-04"} <= set(_open_rows(sessions, e[who], "surge")), who
    # The high-risk elders' weekly call of week 50 falls on surge days: superseded.
    assert _open_routine(sessions, e["dropped_high"], *week50) == set()
    tick(sessions, L(2026, 12, 4, 7, 0), POL)
    assert "X:D2026-12-05" in _open_rows(sessions, e["dropped"], "surge")
    kept_before = {w: (_open_rows(sessions, e[w], "surge"), _open_rows(sessions, e[w], "routine"))
                   for w in ("kept", "kept_high")}

    at = L(2026, 12, 4, 12)
    upd = import_cap(sessions, _cap("CW-3", "Update", L(2026, 12, 4, 11), [SHANGZHI], references=first), at, POL)
    assert upd.action == "updated" and upd.replan is not None and upd.replan.cancelled >= 2

    # Dropped county: no open surge call from the update on, its routine plan is back.
    for who in ("dropped", "dropped_high"):
        left = _open_rows(sessions, e[who], "surge")
        assert {slot for slot, (_i, due) in left.items() if due >= at} == set(), who
    assert rows(sessions, e["dropped"], "surge")["X:D2026-12-05"].status is CheckInStatus.CANCELLED
    assert _open_routine(sessions, e["dropped_high"], *week50) == {"R:W2026-50"}
    # Kept county: every call open before the update still open, the same rows (the re-plan may add
    # the next day within its 48 h horizon), routine calls as they were.
    for w in ("kept", "kept_high"):
        surge, routine = kept_before[w]
        assert surge.items() <= _open_rows(sessions, e[w], "surge").items(), w
        assert _open_rows(sessions, e[w], "routine") == routine, w

    # The next ticks go on with the kept county only.
    tick(sessions, L(2026, 12, 5, 7, 0), POL)
    assert "X:D2026-12-06" in _open_rows(sessions, e["kept"], "surge")
    assert {slot for slot, (_i, due) in _open_rows(sessions, e["dropped"], "surge").items() if due >= at} == set()
    assert _open_routine(sessions, e["dropped_high"], *week50) == {"R:W2026-50"}


def test_cancelling_two_alerts_at_once_releases_both(sessions, two_counties) -> None:
    """A CAP Cancel referencing two alerts: the elders of both get their surge calls cancelled."""
    e = two_counties
    now = L(2026, 12, 3, 7, 30)
    sent = L(2026, 12, 3, 7)
    import_cap(sessions, _cap("CW-1", "Alert", sent, [SHANGZHI]), now, POL)
    import_cap(sessions, _cap("CW-2", "Alert", sent, [WUCHANG]), now, POL)
    at = L(2026, 12, 3, 12)
    can = import_cap(sessions, _cap("CW-3", "Cancel", L(2026, 12, 3, 11), [SHANGZHI, WUCHANG],
                                    references=[("CW-1", sent), ("CW-2", sent)]), at, POL)
    assert can.action == "cancelled"
    for who in e:
        left = _open_rows(sessions, e[who], "surge")
        assert {slot for slot, (_i, due) in left.items() if due >= at} == set(), who
