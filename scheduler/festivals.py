"""Festival dates from the Chinese lunar calendar (the maintained ``lunar-python`` library).

The greeting check-in is planned on (or ``lead_days`` before) each day. 冬至 is a solar term.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

from lunar_python import Lunar, Solar

from scheduler.config import FESTIVAL_NAMES

_LUNAR = {"春节": (1, 1), "元宵": (1, 15), "端午": (5, 5), "中秋": (8, 15), "重阳": (9, 9)}


def _d(s: Solar) -> date:
    return date(s.getYear(), s.getMonth(), s.getDay())


@lru_cache(maxsize=64)
def festivals(year: int) -> dict[str, date]:
    """The festivals falling in Gregorian ``year``, in calendar order (除夕 is the eve of
    the 春节 of that year, so it falls in January or February too)."""
    out: dict[str, date] = {}
    for name in FESTIVAL_NAMES:
        if name == "除夕":
            out[name] = _d(Lunar.fromYmd(year, 1, 1).getSolar()) - timedelta(days=1)
        elif name == "冬至":
            # The lunar year that contains 1 December lists the coming winter solstice as DONG_ZHI.
            out[name] = _d(Solar.fromYmd(year, 12, 1).getLunar().getJieQiTable()["DONG_ZHI"])
        else:
            m, d = _LUNAR[name]
            out[name] = _d(Lunar.fromYmd(year, m, d).getSolar())
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def festivals_between(start: date, end: date) -> list[tuple[str, date]]:
    """Festivals with ``start <= day < end``."""
    found = []
    for year in range(start.year, end.year + 1):
        for name, day in festivals(year).items():
            if start <= day < end:
                found.append((name, day))
    return sorted(found, key=lambda x: x[1])
