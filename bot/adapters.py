"""Implementations of :mod:`bot.ports` on top of the scheduler and storage.

``EscalationVisits`` opens a P3 escalation with :func:`scheduler.escalations.create_from_triage`.
``QueueCalls`` writes a due check-in row (kind ``family_request``), the same way the escalation
service queues its contact calls, so the dialer picks it up on its next claim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from scheduler.escalations import DEFAULT_CONFIG, EscalationConfig, EscalationSpec, Source, create_from_triage
from storage.enums import CheckInStatus, Severity
from storage.models.checkin import CheckIn, CheckInTransition
from storage.models.elder import Elder


@dataclass
class EscalationVisits:
    config: EscalationConfig = field(default_factory=lambda: DEFAULT_CONFIG)

    def request_visit(self, session: Session, *, elder_id: int, now: datetime, requested_by: str, note: str) -> None:
        elder = session.get(Elder, elder_id)
        if elder is None:
            raise LookupError(f"找不到老人（编号 {elder_id}）")
        spec = EscalationSpec(severity=Severity.P3, reason="家属请求上门看望", detail=note)
        source = Source.wechat(f"visit:{elder_id}:{int(now.timestamp() * 1000)}")
        create_from_triage(session, elder, spec, source, now, config=self.config)


@dataclass
class QueueCalls:
    priority: int = 5

    def request_call_now(self, session: Session, *, elder_id: int, now: datetime, requested_by: str) -> None:
        slot = f"family-{int(now.timestamp() * 1000)}"
        checkin = CheckIn(
            elder_id=elder_id,
            slot=slot,
            kind="family_request",
            status=CheckInStatus.DUE,
            priority=self.priority,
            due_at=now,
            next_attempt_at=now,
            ignore_call_window=False,
            reasons=["家属通过公众号请求探访电话"],
            dialog_flags={"requested_by": requested_by},
            attempts=0,
            version=0,
        )
        checkin.transitions.append(
            CheckInTransition(from_status=None, to_status=CheckInStatus.DUE, at=now, actor=requested_by, note="家属请求")
        )
        session.add(checkin)
        session.flush()
