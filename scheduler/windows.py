"""Call windows: when an elder may be phoned. Pure; local time is Asia/Shanghai.

An elder's own windows ("HH:MM-HH:MM") are used when set, else the policy default; the quiet
hours (lunch 12:00–14:00, after 20:00, the night) are cut out of either. Emergencies and
callbacks the elder asked for ignore windows altogether (the caller decides, not this module).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from scheduler.config import Policy, parse_window

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
Intervals = tuple[tuple[int, int], ...]


def _subtract(windows: Sequence[tuple[int, int]], quiet: Sequence[tuple[int, int]]) -> Intervals:
    out: list[tuple[int, int]] = []
    for start, end in sorted(windows):
        pieces = [(start, end)]
        for qs, qe in quiet:
            nxt = []
            for s, e in pieces:
                if qe <= s or qs >= e:
                    nxt.append((s, e))
                    continue
                if s < qs:
                    nxt.append((s, qs))
                if qe < e:
                    nxt.append((qe, e))
            pieces = nxt
        out.extend(pieces)
    merged: list[tuple[int, int]] = []
    for s, e in sorted(out):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return tuple(merged)


@lru_cache(maxsize=4096)
def _allowed(own: tuple[str, ...], default: Intervals, quiet: Intervals) -> Intervals:
    parsed: list[tuple[int, int]] = []
    for w in own:
        try:
            parsed.append(parse_window(w))
        except ValueError:
            continue  # a malformed ledger entry falls back to the default, never blocks calls
    result = _subtract(parsed, quiet) if parsed else ()
    return result or _subtract(default, quiet)


def allowed_windows(own: Sequence[str] | None, policy: Policy) -> Intervals:
    """Minutes-since-midnight intervals in which this elder may be called."""
    return _allowed(tuple(own or ()), policy.default_windows, policy.quiet_windows)


def _minutes(local: datetime) -> int:
    return local.hour * 60 + local.minute


def in_window(at: datetime, windows: Intervals) -> bool:
    m = _minutes(at.astimezone(LOCAL_TZ))
    return any(s <= m < e for s, e in windows)


def _at(day: datetime, minute: int) -> datetime:
    base = datetime.combine(day.date(), time(0), tzinfo=LOCAL_TZ)
    return base + timedelta(minutes=minute)


def next_window_start(at: datetime, windows: Intervals) -> datetime:
    """``at`` itself when inside a window, else the start of the next window (in UTC)."""
    local = at.astimezone(LOCAL_TZ)
    m = _minutes(local)
    for s, e in windows:
        if s <= m < e:
            return at
        if m < s:
            return _at(local, s).astimezone(at.tzinfo)
    return _at(local + timedelta(days=1), windows[0][0]).astimezone(at.tzinfo)


def following_window_start(at: datetime, windows: Intervals) -> datetime:
    """The start of the window after the one ``at`` is in (or the next one, when outside)."""
    local = at.astimezone(LOCAL_TZ)
    m = _minutes(local)
    for s, e in windows:
        if s <= m < e:
            return next_window_start(_at(local, e), windows).astimezone(at.tzinfo)
    return next_window_start(at, windows)


def day_window_start(day_local: datetime, windows: Intervals, offset_minutes: int = 0) -> datetime:
    """A time on ``day_local``'s date inside the first window, ``offset_minutes`` into it
    (clamped so it stays inside the window)."""
    s, e = windows[0]
    minute = s + min(max(offset_minutes, 0), max(e - s - 1, 0))
    return _at(day_local, minute)
