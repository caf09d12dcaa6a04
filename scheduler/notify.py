"""The small interface between escalations/alerts and the channels that deliver them.

Alerts are written durably (an outbox row, in the same transaction as the escalation or outcome
that caused them) and then handed to every configured :class:`Notifier` by a dispatcher, which
retries transient failures oldest-first and surfaces permanent ones in the console. The console
itself is always a channel (it shows the rows); WeChat plugs in as another.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class AlertKind(enum.StrEnum):
    EMERGENCY = "emergency"  # family and duty staff, at once
    UNREACHED = "unreached"  # family: no contact after the retry ladder
    ESCALATION_ASSIGNED = "escalation_assigned"  # staff
    ESCALATION_OVERDUE = "escalation_overdue"  # supervisor
    DAILY_DIGEST = "daily_digest"  # family, opt-in 平安 digest
    TRUNK_DOWN = "trunk_down"  # staff: the phone line is failing
    QUOTA = "quota"  # staff: a channel's quota is exhausted
    INFO = "info"


class RecipientKind(enum.StrEnum):
    STAFF = "staff"
    CONTACT = "contact"  # a family member / neighbour (storage.models.elder.Contact)
    DUTY = "duty"  # the duty staff line of the elder's region


@dataclass(frozen=True)
class AlertMessage:
    id: int
    kind: AlertKind
    recipient_kind: RecipientKind
    recipient_id: int | None
    elder_id: int | None
    escalation_id: int | None
    title: str  # Chinese, short
    body: str  # Chinese; never a full ID number or phone number
    created_at: datetime
    url: str | None = None  # console link, when useful


class DeliveryStatus(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"  # transient: try again later (channel down, timeout, token refresh)
    FAILED = "failed"  # permanent: show it to staff in the console
    NOT_APPLICABLE = "not_applicable"  # this channel cannot reach that recipient (e.g. not bound)


@dataclass(frozen=True)
class DeliveryResult:
    status: DeliveryStatus
    detail: str = ""


class Notifier(Protocol):
    """A delivery channel. ``send`` must not raise for expected failures: it returns a result."""

    channel: str

    async def send(self, alert: AlertMessage) -> DeliveryResult: ...
