"""The visit policy as a pure function: who is due when, at what priority, and why.

``plan_elder`` takes one elder's facts, the planning range, the clock value, the county's
:class:`~scheduler.config.Policy`, the active surge events and the elder's history, and returns
the check-ins that should exist. Each carries a deterministic ``slot`` (the period it serves),
so the planner can insert them idempotently: re-planning the same range yields the same slots.
No I/O, no clock; results are cached per (cadence, period, window set) so 10⁶ elders stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

from scheduler.config import Cadence, Policy
from scheduler.festivals import festivals_between
from scheduler.windows import LOCAL_TZ, Intervals, allowed_windows, next_window_start
from storage.enums import Category, ConsentStatus, ElderStatus, EventKind, RiskTier

_TIER_RANK = {RiskTier.GENERAL: 0, RiskTier.KEY: 1, RiskTier.HIGH: 2}
_KEY_CATS = frozenset({Category.LIVING_ALONE, Category.DISABLED, Category.SEVERELY_DISABLED})
HAZARD_LABELS = {
    "cold_wave": "寒潮", "blizzard": "暴雪", "low_temperature": "低温", "frost": "霜冻", "ice": "道路结冰",
    "gale": "大风", "rainstorm": "暴雨", "heat": "高温", "flood": "洪水", "other": "灾害性天气",
}
LEVEL_LABELS = {"red": "红色", "orange": "橙色", "yellow": "黄色", "blue": "蓝色"}
CADENCE_LABELS = {
    Cadence.TWICE_DAILY: "每天两次", Cadence.DAILY: "每天", Cadence.TWICE_WEEKLY: "每周两次",
    Cadence.WEEKLY: "每周", Cadence.BIWEEKLY: "每半月", Cadence.MONTHLY: "每月",
}


@dataclass(frozen=True, slots=True)
class ElderFacts:
    id: int
    region_path: str
    categories: frozenset[Category]
    risk_tier: RiskTier = RiskTier.GENERAL
    call_windows: tuple[str, ...] = ()
    pause_until: datetime | None = None
    consent: ConsentStatus = ConsentStatus.UNKNOWN
    status: ElderStatus = ElderStatus.ACTIVE
    has_illness: bool = False


@dataclass(frozen=True, slots=True)
class ActiveEvent:
    """A surge event as the policy sees it (weather or lockdown) with its covered region paths."""

    id: int
    kind: EventKind
    starts_at: datetime
    ends_at: datetime
    region_paths: tuple[str, ...]
    title: str = ""
    level: str | None = None
    hazard: str | None = None

    def covers(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.region_paths)


@dataclass(frozen=True, slots=True)
class History:
    last_completed_at: datetime | None = None
    open_items: int = 0  # check-ins planned/due/dialing/retrying now


@dataclass(frozen=True, slots=True)
class PlannedCheckIn:
    elder_id: int
    slot: str
    kind: str  # routine / surge / festival / guarantee
    due_at: datetime
    priority: int
    reasons: tuple[str, ...]
    dialog_flags: dict[str, Any] = field(default_factory=dict)
    ignore_call_window: bool = False


def effective_tier(categories: frozenset[Category], stored: RiskTier, has_illness: bool = False) -> RiskTier:
    """The policy's tier from categories, never lower than the tier staff recorded."""
    alone = Category.LIVING_ALONE in categories
    disabled = Category.DISABLED in categories or Category.SEVERELY_DISABLED in categories
    if (disabled and alone) or (Category.BEREAVED_ONLY_CHILD in categories and has_illness):
        derived = RiskTier.HIGH
    elif categories & _KEY_CATS or Category.BEREAVED_ONLY_CHILD in categories:
        derived = RiskTier.KEY
    else:
        derived = RiskTier.GENERAL
    return derived if _TIER_RANK[derived] >= _TIER_RANK[stored] else stored


def is_eligible(elder: ElderFacts) -> bool:
    """May be called automatically: active, and consent recorded (the service is voluntary, so an
    elder whose consent is unknown or withdrawn gets no automated calls; staff may still visit)."""
    return elder.status is ElderStatus.ACTIVE and elder.consent is ConsentStatus.GRANTED


def is_served(elder: ElderFacts) -> bool:
    """Owed staff attention (home visits) whatever the consent to automated calls."""
    return elder.status is ElderStatus.ACTIVE


def routine_cadence(tier: RiskTier, policy: Policy) -> Cadence:
    return Cadence({RiskTier.HIGH: policy.cadence.high, RiskTier.KEY: policy.cadence.key,
                    RiskTier.GENERAL: policy.cadence.general}[tier])


# -- periods -------------------------------------------------------------------------------

def _month_end(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def _period_of(cadence: Cadence, d: date) -> tuple[str, date, date]:
    """The period containing local date ``d``: (key, first day, day after the last)."""
    if cadence is Cadence.MONTHLY:
        first = d.replace(day=1)
        return f"M{d:%Y-%m}", first, _month_end(d)
    if cadence is Cadence.BIWEEKLY:
        if d.day <= 15:
            return f"H{d:%Y-%m}-1", d.replace(day=1), d.replace(day=16)
        return f"H{d:%Y-%m}-2", d.replace(day=16), _month_end(d)
    if cadence in (Cadence.WEEKLY, Cadence.TWICE_WEEKLY):
        iso = d.isocalendar()
        monday = d - timedelta(days=d.weekday())
        key = f"W{iso.year}-{iso.week:02d}"
        if cadence is Cadence.WEEKLY:
            return key, monday, monday + timedelta(days=7)
        if d.weekday() < 3:
            return key + "a", monday, monday + timedelta(days=3)
        return key + "b", monday + timedelta(days=3), monday + timedelta(days=7)
    return f"D{d.isoformat()}", d, d + timedelta(days=1)


@lru_cache(maxsize=1024)
def periods(cadence: Cadence, first: date, last: date) -> tuple[tuple[str, date, date], ...]:
    """Periods overlapping local dates ``first``..``last`` (inclusive)."""
    out = []
    d = first
    while d <= last:
        p = _period_of(cadence, d)
        out.append(p)
        d = p[2]
    return tuple(out)


def _local_midnight(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=LOCAL_TZ)


@lru_cache(maxsize=65536)
def _spread_due(day: date, windows: Intervals, bucket: int) -> datetime:
    """A call time on ``day``: bucket picks the window and a 15-minute step inside it."""
    s, e = windows[bucket % len(windows)]
    step = (bucket // len(windows)) % 8
    minute = min(s + step * 15, e - 1)
    return _local_midnight(day) + timedelta(minutes=minute)


# -- the policy ----------------------------------------------------------------------------

def plan_elder(
    elder: ElderFacts,
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    policy: Policy,
    events: Sequence[ActiveEvent] = (),
    history: History = History(),
) -> list[PlannedCheckIn]:
    """The check-ins this elder should have with due times in ``[start, end)``.

    Due times never precede ``now`` (an overdue slot is due at once, inside a window) and lie
    inside the elder's call windows; a paused elder's slots move past the pause.
    """
    if not is_eligible(elder) or end <= start:
        return []
    windows = allowed_windows(elder.call_windows, policy)
    tier = effective_tier(elder.categories, elder.risk_tier, elder.has_illness)
    covering = [e for e in events if e.ends_at > start and e.starts_at < end and e.covers(elder.region_path)]
    weather = [e for e in covering if e.kind is EventKind.WEATHER]
    lockdowns = [e for e in covering if e.kind is EventKind.LOCKDOWN]
    floor = max(start, now)
    if elder.pause_until is not None and elder.pause_until > floor:
        floor = elder.pause_until
    r = _Run(elder, tier, start, end, now, floor, policy, windows, history, [])
    surge_days = _surge(r, weather)
    _routine(r, lockdowns, surge_days)
    _festivals(r)
    _guarantee(r)
    return r.out


@dataclass(slots=True)
class _Run:
    elder: ElderFacts
    tier: RiskTier
    start: datetime
    end: datetime
    now: datetime
    floor: datetime
    policy: Policy
    windows: Intervals
    history: History
    out: list[PlannedCheckIn]


def _fit(due: datetime, floor: datetime, windows: Intervals) -> datetime:
    return next_window_start(floor, windows) if due < floor else due


def _surge(r: _Run, weather: list[ActiveEvent]) -> set[date]:
    elder, tier, start, end, floor, policy, windows, out = (
        r.elder, r.tier, r.start, r.end, r.floor, r.policy, r.windows, r.out)
    days: set[date] = set()
    if not weather:
        return days
    # The strongest cadence per local day over all weather events covering the elder.
    per_day: dict[date, tuple[Cadence, list[ActiveEvent]]] = {}
    for ev in weather:
        lvl = policy.weather.level(ev.level)
        raw = (lvl.high or lvl.all) if tier is RiskTier.HIGH else lvl.all
        if raw is None:
            continue
        cad = Cadence(raw)
        d = max(ev.starts_at, start).astimezone(LOCAL_TZ).date()
        last = (min(ev.ends_at, end) - timedelta(microseconds=1)).astimezone(LOCAL_TZ).date()
        while d <= last:
            cur = per_day.get(d)
            if cur is None or cad.rank < cur[0].rank:
                per_day[d] = (cad, [ev] + (cur[1] if cur else []))
            else:
                cur[1].append(ev)
            d += timedelta(days=1)
    prio = policy.priority.surge_high if tier is RiskTier.HIGH else policy.priority.surge
    for day, (cad, evs) in sorted(per_day.items()):
        day_start = _local_midnight(day)
        ev_start = min(e.starts_at for e in evs)
        ev_end = max(e.ends_at for e in evs)
        times = [("", _spread_due(day, windows, elder.id % 4))]
        if cad is Cadence.TWICE_DAILY:
            s, e = windows[-1] if len(windows) > 1 else (windows[0][0] + (windows[0][1] - windows[0][0]) // 2, 0)
            times = [("am", _spread_due(day, windows[:1], 0)), ("pm", day_start + timedelta(minutes=s))]
        hazards = sorted({e.hazard for e in evs if e.hazard})
        flags: dict[str, Any] = {"event_ids": sorted({e.id for e in evs})}
        if set(hazards) & set(policy.weather.winter_hazards):
            flags["winter_safety"] = list(policy.weather.winter_questions)
        label = "、".join(sorted({f"{e.title}" for e in evs}))
        reasons = (f"{label}：{CADENCE_LABELS[cad]}探访", *(["加问取暖、炉具、火炕、烟囱安全（一氧化碳）"] if "winter_safety" in flags else []))
        for suffix, planned in times:
            due = max(planned, ev_start)
            due = _fit(due, floor, windows)
            if due.astimezone(LOCAL_TZ).date() != day or due >= ev_end or due >= end or due < start:
                continue
            days.add(day)
            out.append(PlannedCheckIn(elder.id, f"X:D{day.isoformat()}{suffix}", "surge", due, prio, reasons, flags))
    return days


def _routine(r: _Run, lockdowns: list[ActiveEvent], surge_days: set[date]) -> None:
    elder, tier, start, end, floor, policy, windows, history, out = (
        r.elder, r.tier, r.start, r.end, r.floor, r.policy, r.windows, r.history, r.out)
    base = routine_cadence(tier, policy)
    prio = {RiskTier.HIGH: policy.priority.routine_high, RiskTier.KEY: policy.priority.routine_key,
            RiskTier.GENERAL: policy.priority.routine_general}[tier]
    first = start.astimezone(LOCAL_TZ).date()
    last = (end - timedelta(microseconds=1)).astimezone(LOCAL_TZ).date()
    cadences = [(base, False)]
    if lockdowns and policy.lockdown.multiplier == 2:
        cadences.append((base.doubled(), True))
    for cad, locked in cadences:
        spread = policy.cadence.spread_days.get(cad.value, 1)
        for key, p_first, p_end in periods(cad, first, last):
            period_start = _local_midnight(p_first)
            period_end = _local_midnight(p_end)
            if period_end <= start:
                continue
            if history.last_completed_at is not None and history.last_completed_at >= period_start:
                continue  # already visited in this period
            span = (p_end - p_first).days
            day = p_first + timedelta(days=(elder.id % min(spread, span)))
            planned = _spread_due(day, windows, elder.id // spread)
            in_lockdown = any(e.starts_at <= planned < e.ends_at for e in lockdowns)
            if in_lockdown != locked:
                continue  # lockdown periods use the doubled cadence, the rest the normal one
            due = _fit(planned, floor, windows)
            if due >= period_end or due >= end or due < start:
                continue
            if due.astimezone(LOCAL_TZ).date() in surge_days:
                continue  # a surge call that day serves as the routine one
            reason = f"{'高风险' if tier is RiskTier.HIGH else '重点' if tier is RiskTier.KEY else '一般'}对象：{CADENCE_LABELS[cad]}远程探访"
            reasons: tuple[str, ...] = (reason,)
            if locked:
                titles = "、".join(sorted({e.title for e in lockdowns}))
                reasons = (reason, f"{titles}：上门探访暂停，远程探访加倍")
            out.append(PlannedCheckIn(elder.id, f"R:{key}", "routine", due, prio, reasons, {}))


def _festivals(r: _Run) -> None:
    elder, start, end, floor, policy, windows, out = r.elder, r.start, r.end, r.floor, r.policy, r.windows, r.out
    lead = policy.festivals.lead_days
    first = start.astimezone(LOCAL_TZ).date()
    last = end.astimezone(LOCAL_TZ).date() + timedelta(days=lead + 1)
    enabled = set(policy.festivals.enabled)
    for name, day in festivals_between(first, last):
        if name not in enabled:
            continue
        planned = _spread_due(day - timedelta(days=lead), windows, elder.id)
        due = _fit(planned, floor, windows)
        if due >= end or due < start or due.astimezone(LOCAL_TZ).date() > day:
            continue
        out.append(PlannedCheckIn(
            elder.id, f"F:{day.year}:{name}", "festival", due, policy.priority.festival,
            (f"{name}（{day:%m月%d日}）节日问候",), {"greeting": name},
        ))


def _guarantee(r: _Run) -> None:
    elder, end, now, floor, policy, windows, history, out = (
        r.elder, r.end, r.now, r.floor, r.policy, r.windows, r.history, r.out)
    local = now.astimezone(LOCAL_TZ)
    if local.day < policy.cadence.guarantee_day or history.open_items > 0:
        return
    month_start = _local_midnight(local.date().replace(day=1))
    if history.last_completed_at is not None and history.last_completed_at >= month_start:
        return
    due = next_window_start(floor, windows)
    if due >= end or due >= _local_midnight(_month_end(local.date())):
        return
    # An overdue routine slot has most likely been tried and ended unreached: the guarantee
    # call replaces it (a new slot, so it is not swallowed by the existing row).
    out[:] = [p for p in out if not (p.kind == "routine" and p.due_at <= due)]
    out.append(PlannedCheckIn(
        elder.id, f"G:{local:%Y-%m}", "guarantee", due, policy.priority.guarantee,
        (f"本月（{local:%m}月）尚无一次完成的探访：月度保底",), {},
    ))


def next_due(
    elder: ElderFacts, now: datetime, policy: Policy, *, events: Sequence[ActiveEvent] = (),
    history: History = History(),
) -> PlannedCheckIn | None:
    """The elder's next check-in from ``now`` (looking two months ahead), or None."""
    plan = plan_elder(elder, now, now + timedelta(days=62), now=now, policy=policy, events=events, history=history)
    return min(plan, key=lambda p: (p.due_at, p.priority), default=None)


def home_visit_months(elder: ElderFacts, start: datetime, end: datetime) -> Iterator[tuple[str, datetime]]:
    """(YYYY-MM, deadline) for each month in range a disabled elder is owed a home visit."""
    if not is_served(elder) or Category.DISABLED not in elder.categories:
        return
    d = start.astimezone(LOCAL_TZ).date().replace(day=1)
    last = (end - timedelta(microseconds=1)).astimezone(LOCAL_TZ).date()
    while d <= last:
        nxt = _month_end(d)
        yield f"{d:%Y-%m}", _local_midnight(nxt)
        d = nxt
