"""The retry ladder, a pure function (after procrastinate's ``RetryStrategy.get_retry_decision``).

No answer or busy → +15 min, +15 min, +2 h, the next call window; after that the check-in is
``unreached`` and an escalation goes to triage. A failure of our own trunk (5xx, 408, timeouts,
flagged by the dialer) is not the elder's: the item goes back to due after a short back-off and
no rung is used.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from scheduler.config import Policy
from scheduler.windows import Intervals, following_window_start, next_window_start


class Failure(enum.StrEnum):
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    REJECTED = "rejected"  # the elder declined the call (treated like busy)
    TRUNK = "trunk"  # our side failed: never counts against the elder


class RetryAction(enum.StrEnum):
    RETRY = "retry"  # → retry_wait, attempt counted
    REQUEUE = "requeue"  # → due, attempt not counted (trunk failure)
    UNREACHED = "unreached"  # ladder exhausted → unreached + escalation


@dataclass(frozen=True)
class RetryDecision:
    action: RetryAction
    attempts: int  # the check-in's attempt count after this failure
    next_attempt_at: datetime | None
    reason: str  # Chinese, for the transition note


def retry_decision(
    attempts_before: int,
    failure: Failure,
    now: datetime,
    policy: Policy,
    windows: Intervals,
    *,
    ignore_call_window: bool = False,
) -> RetryDecision:
    """What to do after a failed call. ``attempts_before`` counts earlier elder-side failures."""
    if failure is Failure.TRUNK:
        at = now + policy.trunk_backoff
        if not ignore_call_window:
            at = next_window_start(at, windows)
        return RetryDecision(RetryAction.REQUEUE, attempts_before, at, "线路故障，重新排队（不计未接次数）")
    attempts = attempts_before + 1
    ladder = policy.ladder
    if attempts > len(ladder):
        return RetryDecision(RetryAction.UNREACHED, attempts, None, f"连续 {attempts} 次未接通，转人工跟进")
    step = ladder[attempts - 1]
    if step is None:
        at = now if ignore_call_window else following_window_start(now, windows)
        label = "下一个可拨打时段"
        if ignore_call_window:
            at = now + policy.ladder[0] if policy.ladder[0] else now
    else:
        at = now + step
        label = f"{int(step.total_seconds() // 60)} 分钟后"
        if not ignore_call_window:
            at = next_window_start(at, windows)
    what = "占线" if failure is Failure.BUSY else "未接听"
    return RetryDecision(RetryAction.RETRY, attempts, at, f"第 {attempts} 次{what}，{label}重拨")
