"""Triage (pure): a dialog result and the elder's profile -> outcome and an optional escalation.

emergency -> P1 (acknowledge within 15 min); unwell or hazard -> P2 (24 h), but a heating / CO
hazard during a cold wave -> P1; need, lonely or a benefit question -> P3 (72 h); refused ->
staff review; unreached (from the scheduler) -> P2 home visit, P1 for high-risk elders living alone.
The clock is passed in: ``now`` is an aware datetime.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dialogs.extract import HEATING_OR_CO
from dialogs.result import DialogResult
from storage.enums import Category, Outcome, RiskTier, Severity


class FollowUp(enum.StrEnum):
    """What a human should do about an escalation."""

    EMERGENCY_RESPONSE = "emergency_response"  # duty staff call now, family notified, 120 if needed
    HOME_VISIT = "home_visit"
    PHONE_FOLLOWUP = "phone_followup"
    STAFF_REVIEW = "staff_review"


@dataclass(frozen=True, slots=True)
class ElderProfile:
    categories: frozenset[Category] = frozenset()
    risk_tier: RiskTier = RiskTier.GENERAL

    @property
    def lives_alone(self) -> bool:
        return Category.LIVING_ALONE in self.categories


@dataclass(frozen=True, slots=True)
class EscalationSpec:
    severity: Severity
    reason: str  # Chinese, shown to staff
    deadline: datetime  # acknowledge by
    follow_up: FollowUp
    notify_family: bool = False
    reasons: tuple[str, ...] = field(default=())  # every finding, most serious first


@dataclass(frozen=True, slots=True)
class TriageDecision:
    outcome: Outcome
    escalation: EscalationSpec | None = None


def _spec(severity: Severity, reasons: list[str], now: datetime, follow_up: FollowUp,
          notify_family: bool = False) -> EscalationSpec:
    if now.tzinfo is None:
        raise ValueError("now 必须带时区")
    return EscalationSpec(severity, reasons[0], now + timedelta(minutes=severity.ack_minutes), follow_up,
                          notify_family, tuple(reasons))


_HAZARD_LABEL = {"heating": "取暖", "stove": "炉子", "kang": "火炕", "chimney": "烟囱", "co_gas": "煤气/煤烟",
                 "water": "水", "power": "电", "roof": "房屋", "lock": "门锁", "window": "门窗"}


def triage(result: DialogResult, profile: ElderProfile, now: datetime, cold_wave: bool = False) -> TriageDecision:
    """Outcome and escalation for a finished dialog."""
    f = result.flags
    if f.emergency or result.outcome is Outcome.EMERGENCY:
        return TriageDecision(Outcome.EMERGENCY, _spec(Severity.P1, ["紧急情况：老人在通话中报告危险"], now,
                                                       FollowUp.EMERGENCY_RESPONSE, notify_family=True))
    if f.refused:
        return TriageDecision(Outcome.REFUSED, _spec(Severity.P3, ["老人拒绝探访服务，需工作人员复核"], now,
                                                     FollowUp.STAFF_REVIEW))
    if f.wrong_number:
        return TriageDecision(Outcome.WRONG_NUMBER, _spec(Severity.P3, ["号码有误，需核实联系方式"], now,
                                                          FollowUp.STAFF_REVIEW))
    p1: list[str] = []
    p2: list[str] = []
    p3: list[str] = []
    if f.reported_deceased:
        p2.append("接听人称老人已去世，需核实")
    if f.hazards:
        kinds = "、".join(_HAZARD_LABEL.get(k, k) for k in f.hazards)
        if cold_wave and HEATING_OR_CO & set(f.hazards):
            p1.append(f"寒潮期间取暖/煤烟隐患：{kinds}")
        else:
            p2.append(f"居家安全隐患：{kinds}")
    if f.unwell:
        p2.append("身体不适（自述较重）" if f.unwell_severe else "身体不适")
    if f.transfer_requested:
        p2.append("老人要求转人工")
    if f.needs:
        p3.append("生活需求：" + "、".join(f.needs))
    if f.lonely:
        p3.append("情绪孤独，需要陪伴")
    if f.benefit_question:
        p3.append("咨询补贴/待遇")
    if f.wants_family_contacted:
        p3.append("希望联系家属")
    reasons = p1 + p2 + p3
    if not reasons:
        return TriageDecision(result.outcome)
    severity = Severity.P1 if p1 else Severity.P2 if p2 else Severity.P3
    follow = FollowUp.HOME_VISIT if (p1 or f.hazards or f.unwell_severe or f.needs) else FollowUp.PHONE_FOLLOWUP
    outcome = Outcome.NEEDS_FOLLOWUP
    return TriageDecision(outcome, _spec(severity, reasons, now, follow, notify_family=bool(p1) or f.wants_family_contacted))


def triage_unreached(profile: ElderProfile, now: datetime) -> TriageDecision:
    """For the scheduler after the retry ladder is exhausted: a home visit is due."""
    if profile.risk_tier is RiskTier.HIGH and profile.lives_alone:
        spec = _spec(Severity.P1, ["高风险独居老人多次联系不上，需立即上门"], now, FollowUp.HOME_VISIT, notify_family=True)
    else:
        spec = _spec(Severity.P2, ["多次联系不上，需上门探访"], now, FollowUp.HOME_VISIT, notify_family=True)
    return TriageDecision(Outcome.UNREACHED, spec)
