"""A call runner with a real SIP call and a minimal dialog, for chaos tests and benches.

It dials through the real :class:`ivr.sip.UserAgent` (INVITE, final response, ACK, BYE) and maps
the result exactly as :class:`ivr.call.CallRunner` does, but instead of playing prompts and
listening it waits for the callee to hang up and reports the elder as well. Everything after the
call — the spool, ``CallAttempt``, settling the queue, escalations — is the dialer's real code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

from ivr.call import TRUNK_RESULTS, CallReport, Observer
from ivr.conversation import Conversation
from ivr.sip import CallResult, UserAgent
from storage.enums import Outcome


def _utcnow() -> datetime:
    return datetime.now(UTC)


class FastRunner:
    """``run()`` has the signature of ``CallRunner.run`` (``ivr.dialer.CallPlacer``)."""

    def __init__(self, ua: UserAgent, *, ring_timeout_s: float = 5.0, max_talk_s: float = 5.0,
                 now: Callable[[], datetime] = _utcnow) -> None:
        self.ua = ua
        self.ring_timeout_s = ring_timeout_s
        self.max_talk_s = max_talk_s
        self.now = now
        self.calls = 0

    async def run(self, target: str, conversation: Conversation, *, stop: asyncio.Event | None = None,
                  observer: Observer | None = None, headers: dict[str, str] | None = None,
                  masked: str | None = None) -> CallReport:
        self.calls += 1
        report = CallReport(target=masked or target, started_at=self.now())
        call = await self.ua.call(target, ring_timeout_s=self.ring_timeout_s, headers=headers)
        report.sip_status = call.sip_status
        report.result = (call.outcome or CallResult.TRUNK_ERROR).value
        report.trunk_failure = call.outcome in TRUNK_RESULTS
        if call.outcome is not CallResult.ANSWERED:
            report.ring_seconds = call.ring_duration_s
            report.ended_at = self.now()
            await call.media.close()
            return report
        report.answered_at = self.now()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.hung_up.wait(), self.max_talk_s)
        finally:
            await call.hangup()
        report.ring_seconds = call.ring_duration_s
        report.talk_seconds = call.talk_duration_s
        report.ended_at = self.now()
        report.outcome = Outcome.WELL
        report.dialog_result = {"runner": "fast"}
        report.transcript = [{"who": "system", "text": "[快速通话：对方接听后挂断]", "at": report.answered_at.isoformat()}]
        return report
