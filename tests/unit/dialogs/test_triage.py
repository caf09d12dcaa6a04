from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dialogs.result import DialogResult, FiveKnowns, Flags
from dialogs.triage import ElderProfile, FollowUp, triage, triage_unreached
from storage.enums import Category, Outcome, RiskTier, Severity

NOW = datetime(2026, 1, 10, 2, 0, tzinfo=UTC)
ALONE_HIGH = ElderProfile(frozenset({Category.LIVING_ALONE}), RiskTier.HIGH)
GENERAL = ElderProfile()


def result(outcome: Outcome = Outcome.NEEDS_FOLLOWUP, **flags) -> DialogResult:
    return DialogResult(outcome, Flags(status_known=True, **flags), FiveKnowns())


def test_emergency_is_p1_within_15_minutes():
    d = triage(result(Outcome.EMERGENCY, emergency=True), GENERAL, NOW)
    assert d.outcome is Outcome.EMERGENCY
    assert d.escalation.severity is Severity.P1 and d.escalation.deadline == NOW + timedelta(minutes=15)
    assert d.escalation.follow_up is FollowUp.EMERGENCY_RESPONSE and d.escalation.notify_family


@pytest.mark.parametrize("flags", [{"unwell": True}, {"hazards": ("water",)}, {"hazards": ("heating",)}])
def test_unwell_or_hazard_is_p2_within_24h(flags):
    d = triage(result(**flags), GENERAL, NOW)
    assert d.escalation.severity is Severity.P2 and d.escalation.deadline == NOW + timedelta(hours=24)


@pytest.mark.parametrize("kind", ["heating", "stove", "kang", "chimney", "co_gas"])
def test_heating_or_co_hazard_in_cold_wave_is_p1(kind):
    d = triage(result(hazards=(kind,)), GENERAL, NOW, cold_wave=True)
    assert d.escalation.severity is Severity.P1 and "寒潮" in d.escalation.reason
    assert triage(result(hazards=("water",)), GENERAL, NOW, cold_wave=True).escalation.severity is Severity.P2


@pytest.mark.parametrize("flags", [{"needs": ("food",)}, {"lonely": True}, {"benefit_question": "低保咋申请"}])
def test_need_lonely_benefit_is_p3_within_72h(flags):
    d = triage(result(**flags), GENERAL, NOW)
    assert d.escalation.severity is Severity.P3 and d.escalation.deadline == NOW + timedelta(hours=72)


def test_most_serious_finding_wins_and_all_are_listed():
    d = triage(result(unwell=True, lonely=True, needs=("food",)), GENERAL, NOW)
    assert d.escalation.severity is Severity.P2 and d.escalation.reason == "身体不适"
    assert len(d.escalation.reasons) == 3


def test_refused_goes_to_staff_review():
    d = triage(result(Outcome.REFUSED, refused=True), GENERAL, NOW)
    assert d.outcome is Outcome.REFUSED and d.escalation.follow_up is FollowUp.STAFF_REVIEW


def test_well_needs_nothing():
    assert triage(result(Outcome.WELL), GENERAL, NOW).escalation is None


def test_unreached_home_visit_p2_and_p1_for_high_risk_alone():
    assert triage_unreached(GENERAL, NOW).escalation.severity is Severity.P2
    assert triage_unreached(ElderProfile(frozenset({Category.LIVING_ALONE}), RiskTier.KEY), NOW).escalation.severity is Severity.P2
    d = triage_unreached(ALONE_HIGH, NOW)
    assert d.outcome is Outcome.UNREACHED and d.escalation.severity is Severity.P1
    assert d.escalation.follow_up is FollowUp.HOME_VISIT


def test_naive_now_is_rejected():
    with pytest.raises(ValueError, match="时区"):
        triage_unreached(GENERAL, datetime(2026, 1, 1))
