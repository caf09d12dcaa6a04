"""Call results of one SIP attempt and the mapping from final status codes."""

from __future__ import annotations

import enum


class CallResult(enum.StrEnum):
    """What happened to an outbound call attempt (before any dialog logic).

    ``trunk_error`` and ``timeout`` count against the trunk's circuit breaker; the others are
    about the callee.
    """

    label: str

    def __new__(cls, value: str, label: str = "") -> CallResult:
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.label = label or value
        return obj

    ANSWERED = "answered", "已接听"
    BUSY = "busy", "忙线"
    NO_ANSWER = "no_answer", "无人接听"
    REJECTED = "rejected", "被拒接"
    NOT_FOUND = "not_found", "号码不存在"
    UNAVAILABLE = "unavailable", "暂时无法接通"
    TIMEOUT = "timeout", "线路无响应"
    TRUNK_ERROR = "trunk_error", "线路故障"
    AUTH_FAILED = "auth_failed", "线路认证失败"


def result_for_status(status: int) -> CallResult:
    """Map a final non-2xx response of an INVITE to a :class:`CallResult`."""
    if 200 <= status < 300:
        return CallResult.ANSWERED
    specific = {
        486: CallResult.BUSY,
        600: CallResult.BUSY,
        487: CallResult.NO_ANSWER,
        480: CallResult.UNAVAILABLE,
        404: CallResult.NOT_FOUND,
        604: CallResult.NOT_FOUND,
        484: CallResult.NOT_FOUND,
        410: CallResult.NOT_FOUND,
        408: CallResult.TIMEOUT,
        403: CallResult.REJECTED,
        603: CallResult.REJECTED,
        401: CallResult.AUTH_FAILED,
        407: CallResult.AUTH_FAILED,
        503: CallResult.TRUNK_ERROR,
    }
    if status in specific:
        return specific[status]
    if 500 <= status < 600:
        return CallResult.TRUNK_ERROR
    if 300 <= status < 400:
        return CallResult.REJECTED
    if 600 <= status < 700:
        return CallResult.REJECTED
    return CallResult.REJECTED
