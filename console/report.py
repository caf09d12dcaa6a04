"""The monthly report: visit rate by region and category, remote vs home, disabled elders' home
visits, escalations. Console page, API and ``tanfang report monthly`` all use :func:`monthly_report`.

Definitions (per the provincial policy):
- target elders: elders in scope with status "在册" who were on the ledger before the month ended;
- a completed visit in the month: an answered remote check-in (a check-in done with an outcome
  other than 未联系上, ``completed_at`` in the month; calls to contacts do not count) or a staff
  Visit (home or phone) with ``visited_at`` in the month;
- visit rate = target elders with ≥1 completed visit ÷ target elders;
- remote = answered remote check-in or staff phone visit; home = staff home visit;
- disabled home-visit coverage = 失能 target elders with ≥1 home visit ÷ 失能 target elders;
- escalations created in the month: count per severity, median minutes to acknowledge, overdue
  (acknowledged late, resolved late, or still unresolved past a deadline at report time).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from console.scope import path_in_scope
from storage.enums import (
    Category,
    CheckInStatus,
    ElderStatus,
    EscalationStatus,
    Outcome,
    RegionLevel,
    Severity,
    VisitKind,
)
from storage.models.base import mask_to_categories
from storage.models.checkin import CheckIn
from storage.models.elder import Elder
from storage.models.escalation import Escalation, Visit
from storage.models.region import Region

SHANGHAI = ZoneInfo("Asia/Shanghai")


class ReportError(ValueError):
    """Bad report parameters (message in Chinese)."""


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """'2026-11' -> [start, end) in UTC, months taken in Asia/Shanghai."""
    try:
        y, m = (int(x) for x in month.split("-"))
        start_local = datetime(y, m, 1, tzinfo=SHANGHAI)
    except (ValueError, TypeError) as exc:
        raise ReportError(f"月份格式不正确：“{month}”，应为 2026-11") from exc
    end_local = datetime(y + (m == 12), 1 if m == 12 else m + 1, 1, tzinfo=SHANGHAI)
    return start_local.astimezone(UTC), end_local.astimezone(UTC)


@dataclass
class Rate:
    visited: int = 0
    total: int = 0
    remote: int = 0
    home: int = 0

    @property
    def rate(self) -> float:
        return self.visited / self.total if self.total else 0.0

    def as_json(self) -> dict[str, Any]:
        return {"visited": self.visited, "total": self.total, "rate": round(self.rate, 4),
                "remote": self.remote, "home": self.home}


@dataclass
class RegionRate:
    code: str
    name: str
    level: RegionLevel
    path: str
    rate: Rate


@dataclass
class EscalationStats:
    by_severity: dict[str, int] = field(default_factory=dict)
    median_ack_minutes: float | None = None
    overdue: int = 0
    open_past_deadline: int = 0
    total: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"by_severity": self.by_severity, "median_ack_minutes": self.median_ack_minutes,
                "overdue": self.overdue, "open_past_deadline": self.open_past_deadline, "total": self.total}


@dataclass
class MonthlyReport:
    month: str
    region_code: str
    region_name: str
    generated_at: datetime
    overall: Rate
    by_region: list[RegionRate]
    by_category: dict[str, Rate]
    disabled_home: Rate
    escalations: EscalationStats

    def as_json(self) -> dict[str, Any]:
        return {
            "month": self.month, "region": {"code": self.region_code, "name": self.region_name},
            "generated_at": self.generated_at.isoformat(), "overall": self.overall.as_json(),
            "by_region": [{"code": r.code, "name": r.name, "level": r.level.value, **r.rate.as_json()}
                          for r in self.by_region],
            "by_category": {k: v.as_json() for k, v in self.by_category.items()},
            "disabled_home_coverage": self.disabled_home.as_json(),
            "escalations": self.escalations.as_json(),
        }


def monthly_report(session: Session, month: str, region: Region, now: datetime) -> MonthlyReport:
    start, end = month_bounds(month)
    in_scope = path_in_scope(Region.path, region.path)
    elders = session.execute(
        select(Elder.id, Region.path, Elder.categories)
        .join(Region, Region.id == Elder.region_id)
        .where(in_scope, Elder.status == ElderStatus.ACTIVE, Elder.created_at < end)
    ).all()
    ids = {e[0] for e in elders}
    remote: set[int] = set()
    home: set[int] = set()
    scope_ids = select(Elder.id).join(Region, Region.id == Elder.region_id).where(in_scope)
    remote.update(session.scalars(select(CheckIn.elder_id).where(
        CheckIn.elder_id.in_(scope_ids), CheckIn.status == CheckInStatus.DONE,
        CheckIn.outcome.is_not(None), CheckIn.outcome != Outcome.UNREACHED, CheckIn.kind != "emergency_contact",
        CheckIn.completed_at >= start, CheckIn.completed_at < end)).all())
    for elder_id, kind in session.execute(select(Visit.elder_id, Visit.kind).where(
            Visit.elder_id.in_(scope_ids), Visit.visited_at >= start, Visit.visited_at < end)):
        (home if kind is VisitKind.HOME else remote).add(elder_id)
    remote &= ids
    home &= ids

    def add(rate: Rate, elder_id: int) -> None:
        rate.total += 1
        rate.visited += elder_id in remote or elder_id in home
        rate.remote += elder_id in remote
        rate.home += elder_id in home

    overall = Rate()
    by_path: dict[str, Rate] = defaultdict(Rate)
    by_cat: dict[str, Rate] = {c.label: Rate() for c in Category}
    disabled = Rate()
    depth = region.path.count("/")
    for elder_id, path, cats in elders:
        add(overall, elder_id)
        parts = path.split("/")
        for i in range(depth + 2, len(parts) + 1):  # every level below the report's region
            add(by_path["/".join(parts[:i])], elder_id)
        categories = cats if isinstance(cats, frozenset) else mask_to_categories(int(cats or 0))
        for c in categories:
            add(by_cat[c.label], elder_id)
        if Category.DISABLED in categories:
            disabled.total += 1
            disabled.visited += elder_id in home
            disabled.home += elder_id in home
            disabled.remote += elder_id in remote
    regions = {r.path: r for r in session.scalars(select(Region).where(Region.path.in_(list(by_path))))}
    levels = [RegionLevel.COUNTY, RegionLevel.TOWNSHIP, RegionLevel.VILLAGE]
    by_region = sorted(
        (RegionRate(regions[p].code, regions[p].name, regions[p].level, p, r) for p, r in by_path.items()
         if p in regions and regions[p].level in levels),
        key=lambda rr: rr.path,
    )
    return MonthlyReport(
        month=month, region_code=region.code, region_name=region.name, generated_at=now, overall=overall,
        by_region=by_region, by_category=by_cat, disabled_home=disabled,
        escalations=escalation_stats(session, region, start, end, now),
    )


def escalation_stats(session: Session, region: Region, start: datetime, end: datetime, now: datetime) -> EscalationStats:
    rows = session.execute(select(
        Escalation.severity, Escalation.status, Escalation.created_at, Escalation.acknowledged_at,
        Escalation.ack_deadline_at, Escalation.resolved_at, Escalation.deadline_at, Escalation.escalation_level,
    ).where(path_in_scope(Escalation.region_path, region.path), Escalation.created_at >= start,
            Escalation.created_at < end)).all()
    stats = EscalationStats(by_severity={s.value: 0 for s in Severity}, total=len(rows))
    acks = []
    for sev, status, created, acked, ack_deadline, resolved, deadline, raised in rows:
        stats.by_severity[sev.value] += 1
        if acked is not None:
            acks.append((acked - created).total_seconds() / 60)
        late_ack = raised > 0 or (acked or now) > ack_deadline
        late_done = (resolved or now) > deadline
        if late_ack or late_done:
            stats.overdue += 1
        if status is not EscalationStatus.RESOLVED and now > (ack_deadline if acked is None else deadline):
            stats.open_past_deadline += 1
    stats.median_ack_minutes = round(statistics.median(acks), 1) if acks else None
    return stats


# -- chart -----------------------------------------------------------------------------------


def svg_bar_chart(items: list[tuple[str, float]], *, title: str, width: int = 720) -> str:
    """A horizontal bar chart of rates in [0, 1], as SVG text (escaped; no script, no style)."""
    from xml.sax.saxutils import escape

    bar_h, gap, left, top = 22, 8, 170, 34
    height = top + len(items) * (bar_h + gap) + 24
    span = width - left - 70
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
           f'role="img" aria-label="{escape(title)}">',
           f'<text x="0" y="18" font-weight="bold">{escape(title)}</text>']
    for i, (label, value) in enumerate(items):
        y = top + i * (bar_h + gap)
        w = max(0.0, min(1.0, value)) * span
        cls = "bar low" if value < 0.9 else "bar"
        out.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">{escape(label[:12])}</text>')
        out.append(f'<rect class="{cls}" x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}"/>')
        out.append(f'<text x="{left + w + 6:.1f}" y="{y + 16}">{value * 100:.1f}%</text>')
    line_x = left + 0.9 * span
    out.append(f'<line x1="{line_x:.1f}" y1="{top - 6}" x2="{line_x:.1f}" y2="{height - 20}" stroke="#b3261e" '
               'stroke-dasharray="4 3"/>')
    out.append(f'<text x="{line_x:.1f}" y="{height - 6}" text-anchor="middle">90%</text>')
    out.append("</svg>")
    return "".join(out)


def chart_for(report: MonthlyReport) -> str:
    top_depth = report.by_region[0].path.count("/") if report.by_region else 0
    items = [(r.name, r.rate.rate) for r in report.by_region if r.path.count("/") == top_depth][:30]
    return svg_bar_chart(items or [(report.region_name, report.overall.rate)], title=f"{report.month} 探访率")


# -- Excel ------------------------------------------------------------------------------------


def write_xlsx(report: MonthlyReport, path: Path) -> None:
    """Write the report as an Excel workbook (atomically: a temp file renamed into place)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "概览"
    bold = Font(bold=True)
    rows: list[list[Any]] = [
        ["探访月报", f"{report.month}", report.region_name],
        [],
        ["指标", "数值"],
        ["在册目标老人", report.overall.total],
        ["本月完成探访人数", report.overall.visited],
        ["探访率", round(report.overall.rate, 4)],
        ["远程探访人数", report.overall.remote],
        ["上门探访人数", report.overall.home],
        ["失能老人数", report.disabled_home.total],
        ["失能老人上门探访人数", report.disabled_home.home],
        ["失能老人上门覆盖率", round(report.disabled_home.rate, 4)],
        ["升级事项总数", report.escalations.total],
        *[[f"{s} 事项", n] for s, n in report.escalations.by_severity.items()],
        ["认领用时中位数（分钟）", report.escalations.median_ack_minutes if report.escalations.median_ack_minutes is not None else "—"],
        ["超时事项", report.escalations.overdue],
        ["目前未解决且已超时", report.escalations.open_past_deadline],
    ]
    for r in rows:
        ws.append(r)
    ws["A1"].font = bold
    ws2 = wb.create_sheet("按地区")
    ws2.append(["层级", "代码", "名称", "在册老人", "完成探访", "探访率", "远程", "上门"])
    for rr in report.by_region:
        ws2.append([rr.level.label, rr.code, rr.name, rr.rate.total, rr.rate.visited, round(rr.rate.rate, 4),
                    rr.rate.remote, rr.rate.home])
    ws3 = wb.create_sheet("按类别")
    ws3.append(["类别", "在册老人", "完成探访", "探访率", "远程", "上门"])
    for label, rate in report.by_category.items():
        ws3.append([label, rate.total, rate.visited, round(rate.rate, 4), rate.remote, rate.home])
    for sheet in (ws2, ws3):
        for cell in sheet[1]:
            cell.font = bold
    for sheet in wb.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                if sheet is not ws and cell.column_letter in ("F" if sheet is ws2 else "D") and cell.row > 1:
                    cell.number_format = "0.0%"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    wb.save(tmp)
    tmp.replace(path)


def current_month(now: datetime) -> str:
    return now.astimezone(SHANGHAI).strftime("%Y-%m")


def previous_months(now: datetime, n: int = 12) -> list[str]:
    d = now.astimezone(SHANGHAI).date().replace(day=1)
    out = []
    for _ in range(n):
        out.append(d.strftime("%Y-%m"))
        d = date(d.year - (d.month == 1), 12 if d.month == 1 else d.month - 1, 1)
    return out
