"""Gauges read from the database on scrape (cached a few seconds, so scrapes stay cheap): queue
depth by status, check-ins finished in the last 24 h by outcome, escalations open by severity and
overdue. Per-process figures (calls in progress, ASR confidence, trunk failures) live with the
dialer (``ivr.dialer.DialerMetrics``); every process serving ``/metrics`` reports these shared ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, and_, func, or_, select

from storage.enums import CheckInStatus, EscalationStatus
from storage.models.checkin import CheckIn
from storage.models.escalation import Escalation

log = logging.getLogger(__name__)

QUEUE_STATES = (CheckInStatus.DUE, CheckInStatus.RETRY_WAIT, CheckInStatus.DIALING)
ACTIVE = (EscalationStatus.OPEN, EscalationStatus.ACKNOWLEDGED)


class DatabaseCollector(Collector):
    def __init__(self, engine: Engine, now: Callable[[], datetime], max_age_s: float = 5.0) -> None:
        self.engine = engine
        self.now = now
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._at = -1e18
        self._cached: list[GaugeMetricFamily] = []

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # no query at registration time (the database may not be migrated yet)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            if time.monotonic() - self._at > self.max_age_s:
                try:
                    self._cached = self._read()
                except Exception:  # a scrape must not fail because the database is away
                    log.warning("metrics: database unavailable", extra={"action": "metrics_db_error"})
                    up = GaugeMetricFamily("tanfang_metrics_db_ok", "1 when the database gauges were read")
                    up.add_metric([], 0)
                    return iter([up])
                self._at = time.monotonic()
            return iter(self._cached)

    def _read(self) -> list[GaugeMetricFamily]:
        now = self.now()
        depth = GaugeMetricFamily("tanfang_queue_depth", "Check-ins waiting or being dialled, by status",
                                  labels=["status"])
        outcomes = GaugeMetricFamily("tanfang_checkins_24h", "Check-ins finished in the last 24 hours, by outcome",
                                     labels=["outcome"])
        open_ = GaugeMetricFamily("tanfang_escalations_open", "Escalations not yet resolved, by severity",
                                  labels=["severity"])
        overdue = GaugeMetricFamily("tanfang_escalations_overdue",
                                    "Unresolved escalations past their acknowledgement or action deadline")
        ok = GaugeMetricFamily("tanfang_metrics_db_ok", "1 when the database gauges were read")
        with self.engine.connect() as c:
            counts: dict[CheckInStatus, int] = {
                st: n for st, n in c.execute(select(CheckIn.status, func.count())
                                             .where(CheckIn.status.in_(QUEUE_STATES)).group_by(CheckIn.status))}
            for st in QUEUE_STATES:
                depth.add_metric([st.value], float(counts.get(st, 0)))
            done = c.execute(select(CheckIn.outcome, func.count())
                             .where(CheckIn.status.in_((CheckInStatus.DONE, CheckInStatus.UNREACHED)),
                                    CheckIn.completed_at >= now - timedelta(hours=24), CheckIn.kind != "emergency_contact")
                             .group_by(CheckIn.outcome)).all()
            for outcome, n in done:
                outcomes.add_metric([outcome.value if outcome is not None else "unreached"], float(n))
            sev = c.execute(select(Escalation.severity, func.count()).where(Escalation.status.in_(ACTIVE))
                            .group_by(Escalation.severity)).all()
            by_sev = {s.value: float(n) for s, n in sev}
            for name in ("P1", "P2", "P3"):
                open_.add_metric([name], by_sev.get(name, 0.0))
            late = c.scalar(select(func.count()).select_from(Escalation).where(
                Escalation.status.in_(ACTIVE),
                or_(and_(Escalation.status == EscalationStatus.OPEN, Escalation.ack_deadline_at < now),
                    Escalation.deadline_at < now)))
            overdue.add_metric([], float(late or 0))
        ok.add_metric([], 1)
        return [depth, outcomes, open_, overdue, ok]
