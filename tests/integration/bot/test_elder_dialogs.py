"""Elders check in on WeChat through the real dialogs engine, the real zh classifier and triage."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.dialog_adapter import DialogsCheckin
from dialogs.engine import DialogEngine
from dialogs.nlu.parser import ClassifierParser
from dialogs.script import load_scripts
from storage.enums import Outcome, Severity
from storage.models.checkin import CallAttempt
from storage.models.escalation import Escalation
from tanfang.nlu import load_or_train
from tests.integration.bot.conftest import Harness
from tests.integration.bot.test_flows import issue

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def parser(tmp_path_factory: pytest.TempPathFactory) -> ClassifierParser:
    model, _ = load_or_train("zh", REPO / "nlu_data", tmp_path_factory.mktemp("models"))
    return ClassifierParser({"zh": model}, threshold=0.45)


@pytest.fixture
def mode() -> str:
    return "safe"


async def bind_elder(h: Harness, parser: ClassifierParser) -> None:
    adapter = DialogsCheckin(DialogEngine(load_scripts()), parser)
    h.flows.engine = adapter
    h.flows.recorder = adapter
    h.service.intent_parser = parser
    code = issue(h)
    await h.say("o_elder", code)
    assert (await h.say("o_elder", "0001") or "").startswith("绑定成功")


async def test_emergency_by_text_opens_p1(harness: Harness, parser: ClassifierParser) -> None:
    h = harness
    await bind_elder(h, parser)
    reply = await h.say("o_elder", "我摔倒了起不来")
    assert reply
    with Session(h.engine) as s:
        call = s.scalars(select(CallAttempt).where(CallAttempt.channel == "wechat")).one()
        assert call.outcome is Outcome.EMERGENCY and "emergency" in call.intents
        esc = s.scalars(select(Escalation)).one()
        assert esc.severity is Severity.P1 and esc.source_call_id == call.id


async def test_well_check_in_by_keypad_and_voice(harness: Harness, parser: ClassifierParser) -> None:
    h = harness
    await bind_elder(h, parser)
    reply = await h.send(h.sim.voice("o_elder", "m1", recognition="挺好的"))
    turns = 0
    while reply and "回复" in reply and turns < 8:  # answer whatever else it asks with its "no"/"fine" key
        turns += 1
        digit = "2" if "回复2" in reply else "1"
        reply = await h.say("o_elder", digit)
    with Session(h.engine) as s:
        call = s.scalars(select(CallAttempt).where(CallAttempt.channel == "wechat")).one()
        assert call.outcome in (Outcome.WELL, Outcome.NEEDS_FOLLOWUP)
        assert call.transcript[1]["text"] == "挺好的" and call.transcript[1]["via"] == "voice"
