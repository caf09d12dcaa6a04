"""Implementations of :mod:`bot.ports` on top of the scheduler and storage.

``EscalationVisits`` opens a P3 escalation with :func:`scheduler.escalations.create_from_triage`.
``QueueCalls`` asks :func:`scheduler.queue.request_call` for a ``family_request`` call (reused
if one is already open, so asking three times gives one call).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from bot.ports import CallNotAllowed
from scheduler.config import PolicySet
from scheduler.escalations import DEFAULT_CONFIG, EscalationConfig, EscalationSpec, Source, create_from_triage
from scheduler.queue import ConsentMissing, RequestKind, request_call
from storage.enums import Severity
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
    """"给我妈打个电话": an out-of-plan ``family_request`` in the scheduler's queue (next call window)."""

    policy: PolicySet | None = None

    def request_call_now(self, session: Session, *, elder_id: int, now: datetime, requested_by: str) -> datetime:
        try:
            requested = request_call(
                session, elder_id, RequestKind.FAMILY_REQUEST, now,
                reason="家属通过公众号请求探访电话", source=requested_by, policy=self.policy,
            )
        except ConsentMissing as exc:
            raise CallNotAllowed(str(exc)) from exc
        return requested.due_at
