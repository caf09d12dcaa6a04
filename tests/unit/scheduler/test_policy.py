"""Pure parts of the scheduler: festivals, windows, retry ladder, policy file, the policy itself."""

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.cap import CapError, parse_cap
from scheduler.config import PolicyError, load_policy
from scheduler.festivals import festivals
from scheduler.policy import ActiveEvent, ElderFacts, History, effective_tier, home_visit_months, plan_elder
from scheduler.retry import Failure, RetryAction, retry_decision
from scheduler.windows import LOCAL_TZ, allowed_windows, in_window, next_window_start
from storage.enums import Category, ConsentStatus, EventKind, RiskTier

POL = load_policy().default
SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "cap"


def L(*a: int) -> datetime:
    return datetime(*a, tzinfo=LOCAL_TZ)


# Published dates (China's official calendar) for 2026–2030, written by hand.
PUBLISHED = {
    2026: {"除夕": "2026-02-16", "春节": "2026-02-17", "元宵": "2026-03-03", "端午": "2026-06-19",
           "中秋": "2026-09-25", "重阳": "2026-10-18", "冬至": "2026-12-22"},
    2027: {"除夕": "2027-02-05", "春节": "2027-02-06", "元宵": "2027-02-20", "端午": "2027-06-09",
           "中秋": "2027-09-15", "重阳": "2027-10-08", "冬至": "2027-12-22"},
    2028: {"除夕": "2028-01-25", "春节": "2028-01-26", "元宵": "2028-02-09", "端午": "2028-05-28",
           "中秋": "2028-10-03", "重阳": "2028-10-26", "冬至": "2028-12-21"},
    2029: {"除夕": "2029-02-12", "春节": "2029-02-13", "元宵": "2029-02-27", "端午": "2029-06-16",
           "中秋": "2029-09-22", "重阳": "2029-10-16", "冬至": "2029-12-21"},
    2030: {"除夕": "2030-02-02", "春节": "2030-02-03", "元宵": "2030-02-17", "端午": "2030-06-05",
           "中秋": "2030-09-12", "重阳": "2030-10-05", "冬至": "2030-12-22"},
}


@pytest.mark.parametrize("year", sorted(PUBLISHED))
def test_festival_dates_match_published_calendar(year: int) -> None:
    assert {k: v.isoformat() for k, v in festivals(year).items()} == PUBLISHED[year]


def test_call_windows_default_and_own_and_quiet_hours() -> None:
    default = allowed_windows([], POL)
    assert default == ((540, 690), (900, 1080))
    assert not in_window(L(2026, 12, 1, 12, 30), default)
    # An elder's own window is cut by lunch and the evening.
    own = allowed_windows(["11:00-13:00", "19:00-21:00"], POL)
    assert own == ((660, 720), (1140, 1200))
    assert next_window_start(L(2026, 12, 1, 12, 10), own) == L(2026, 12, 1, 19, 0)
    assert next_window_start(L(2026, 12, 1, 20, 0), own) == L(2026, 12, 2, 11, 0)
    assert allowed_windows(["bad"], POL) == default


def test_retry_ladder_and_trunk_failures() -> None:
    w = allowed_windows([], POL)
    now = L(2026, 12, 1, 9, 0)
    d1 = retry_decision(0, Failure.NO_ANSWER, now, POL, w)
    assert (d1.action, d1.attempts, d1.next_attempt_at) == (RetryAction.RETRY, 1, now + timedelta(minutes=15))
    d2 = retry_decision(1, Failure.BUSY, now, POL, w)
    assert d2.next_attempt_at == now + timedelta(minutes=15)
    d3 = retry_decision(2, Failure.NO_ANSWER, now, POL, w)
    assert d3.next_attempt_at == now + timedelta(hours=2)
    d4 = retry_decision(3, Failure.NO_ANSWER, L(2026, 12, 1, 11, 0), POL, w)
    assert d4.next_attempt_at == L(2026, 12, 1, 15, 0)  # the next window
    d5 = retry_decision(4, Failure.NO_ANSWER, now, POL, w)
    assert d5.action is RetryAction.UNREACHED and d5.next_attempt_at is None
    t = retry_decision(3, Failure.TRUNK, now, POL, w)
    assert (t.action, t.attempts) == (RetryAction.REQUEUE, 3)
    # +2 h from 10:30 is 12:30 (lunch): moved to the afternoon window.
    assert retry_decision(2, Failure.NO_ANSWER, L(2026, 12, 1, 10, 30), POL, w).next_attempt_at == L(2026, 12, 1, 15, 0)


def test_bad_policy_file_names_the_key(tmp_path: Path) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[counties."230183".cadence]\nkey = "sometimes"\n', encoding="utf-8")
    with pytest.raises(PolicyError, match=r"counties\.230183\.cadence\.key"):
        load_policy(p)
    p.write_text("[defaults.retry]\nladdr = []\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"defaults\.retry\.laddr.*未知的键"):
        load_policy(p)
    p.write_text('[counties."230183".cadence]\ngeneral = "biweekly"\n', encoding="utf-8")
    ps = load_policy(p)
    assert ps.for_path("23/2301/230183/230183100").cadence.general == "biweekly"
    assert ps.for_path("23/2301/230184").cadence.general == "monthly"


def test_tiers() -> None:
    assert effective_tier(frozenset({Category.DISABLED, Category.LIVING_ALONE}), RiskTier.GENERAL) is RiskTier.HIGH
    assert effective_tier(frozenset({Category.BEREAVED_ONLY_CHILD}), RiskTier.GENERAL, True) is RiskTier.HIGH
    assert effective_tier(frozenset({Category.LIVING_ALONE}), RiskTier.GENERAL) is RiskTier.KEY
    assert effective_tier(frozenset({Category.EMPTY_NEST}), RiskTier.HIGH) is RiskTier.HIGH


def _elder(i: int, cats: set[Category], **kw: object) -> ElderFacts:
    kw.setdefault("consent", ConsentStatus.GRANTED)
    return ElderFacts(i, "23/2301/230183/230183100", frozenset(cats), **kw)  # type: ignore[arg-type]


def test_month_end_and_leap_year_periods() -> None:
    key = _elder(3, {Category.LIVING_ALONE})
    start, end = L(2028, 2, 1), L(2028, 3, 1)
    plan = [p for p in plan_elder(key, start, end, now=start, policy=POL) if p.kind == "routine"]
    assert [p.slot for p in plan] == ["R:H2028-02-1", "R:H2028-02-2"]
    assert all(start <= p.due_at < end for p in plan)
    # Elder 29 with 5 spread days is due on the 16th + 4 = 20th; 29 Feb exists in 2028.
    general = _elder(9, {Category.EMPTY_NEST})
    p = plan_elder(general, start, end, now=start, policy=POL)
    assert [x.slot for x in p if x.kind == "routine"] == ["R:M2028-02"]
    # Planning late on the 29th of Feb: the overdue monthly slot is due at once, inside a window.
    late = L(2028, 2, 29, 19, 0)
    p = plan_elder(general, late, L(2028, 3, 12), now=late, policy=POL)
    # February's last window has closed, so its slot is not pushed into March; March's is on the 10th.
    assert [(x.slot, x.due_at.date()) for x in p if x.kind == "routine"] == [("R:M2028-03", date(2028, 3, 10))]
    # Across New Year: ISO weeks are keyed by ISO year.
    high = _elder(1, {Category.LIVING_ALONE, Category.DISABLED})
    p = plan_elder(high, L(2026, 12, 28), L(2027, 1, 11), now=L(2026, 12, 28), policy=POL)
    assert [x.slot for x in p if x.kind == "routine"] == ["R:W2026-53", "R:W2027-01"]
    assert list(home_visit_months(high, L(2026, 12, 15), L(2027, 1, 15))) == [
        ("2026-12", L(2027, 1, 1)), ("2027-01", L(2027, 2, 1))]


def test_history_pause_consent_and_guarantee() -> None:
    e = _elder(5, {Category.EMPTY_NEST})
    start, end = L(2026, 11, 1), L(2026, 12, 1)
    assert plan_elder(e, start, end, now=start, policy=POL, history=History(L(2026, 11, 2))) == []
    paused = _elder(5, {Category.EMPTY_NEST}, pause_until=L(2026, 11, 25))
    (p,) = plan_elder(paused, start, end, now=start, policy=POL)
    assert p.due_at >= L(2026, 11, 25)
    assert plan_elder(_elder(5, {Category.EMPTY_NEST}, consent=ConsentStatus.WITHDRAWN), start, end, now=start,
                      policy=POL) == []
    # The service is voluntary: no recorded consent, no automated calls.
    assert plan_elder(_elder(5, {Category.EMPTY_NEST}, consent=ConsentStatus.UNKNOWN), start, end, now=start,
                      policy=POL) == []
    # On the 21st, nothing completed this month and nothing open: a guarantee call.
    now = L(2026, 11, 21, 8, 0)
    p = plan_elder(e, now, now + timedelta(hours=48), now=now, policy=POL, history=History(L(2026, 10, 3), 0))
    assert [x.slot for x in p] == ["G:2026-11"] and p[0].due_at == L(2026, 11, 21, 9, 0)


def test_lockdown_doubles_routine_frequency() -> None:
    e = _elder(2, {Category.EMPTY_NEST})
    start, end = L(2026, 11, 1), L(2026, 12, 1)
    lock = ActiveEvent(9, EventKind.LOCKDOWN, start, end, ("23/2301/230183",), "尚志市封控")
    normal = [p for p in plan_elder(e, start, end, now=start, policy=POL) if p.kind == "routine"]
    locked = [p for p in plan_elder(e, start, end, now=start, policy=POL, events=[lock]) if p.kind == "routine"]
    assert len(normal) == 1 and len(locked) == 2
    assert "远程探访加倍" in locked[0].reasons[1]
    elsewhere = ActiveEvent(9, EventKind.LOCKDOWN, start, end, ("23/2302",), "别处封控")
    assert len([p for p in plan_elder(e, start, end, now=start, policy=POL, events=[elsewhere])
                if p.kind == "routine"]) == 1


def test_cold_wave_daily_for_all_twice_for_high_risk_with_winter_questions() -> None:
    alert = parse_cap((SAMPLES / "01_cold_wave_red.xml").read_bytes())
    assert (alert.level, alert.hazard, alert.msg_type) == ("red", "cold_wave", "Alert")
    ev = ActiveEvent(1, EventKind.WEATHER, alert.onset, alert.expires or alert.onset, ("23/2301/230183",),
                     alert.title, alert.level, alert.hazard)
    start, end = L(2026, 12, 3), L(2026, 12, 7)
    general = plan_elder(_elder(4, {Category.EMPTY_NEST}), start, end, now=start, policy=POL, events=[ev])
    surge = [p for p in general if p.kind == "surge"]
    assert [p.slot for p in surge] == ["X:D2026-12-03", "X:D2026-12-04", "X:D2026-12-05"]
    assert surge[0].dialog_flags["winter_safety"] == ["heating", "stove", "kang", "chimney"]
    high = plan_elder(_elder(1, {Category.DISABLED, Category.LIVING_ALONE}), start, end, now=start, policy=POL,
                      events=[ev])
    assert len([p for p in high if p.kind == "surge"]) == 6
    assert all(p.priority == POL.priority.surge_high for p in high if p.kind == "surge")


def test_cap_parser_refuses_doctype_and_reads_update_and_cancel() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&x;</alert>'
    with pytest.raises(CapError, match="DOCTYPE"):
        parse_cap(bomb)
    up = parse_cap((SAMPLES / "02_cold_wave_update.xml").read_bytes())
    assert up.msg_type == "Update" and up.level == "orange"
    assert up.references == ("23018341600000_20261203070000",)
    cancel = parse_cap((SAMPLES / "03_cold_wave_cancel.xml").read_bytes())
    assert cancel.msg_type == "Cancel"
    bl = parse_cap((SAMPLES / "04_blizzard_orange.xml").read_bytes())
    assert (bl.level, bl.hazard) == ("orange", "blizzard") and bl.areas[0].geocodes == ("230183000000",)


def test_festival_greeting_planned_on_the_day() -> None:
    e = _elder(1, {Category.EMPTY_NEST})
    p = [x for x in plan_elder(e, L(2027, 2, 1), L(2027, 2, 10), now=L(2027, 2, 1), policy=POL) if x.kind == "festival"]
    assert [(x.slot, x.due_at.date()) for x in p] == [("F:2027:除夕", date(2027, 2, 5)), ("F:2027:春节", date(2027, 2, 6))]
