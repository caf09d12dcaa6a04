"""One scripted test per dialog path (issue 4), driven through the shipped run_script helper."""

from __future__ import annotations

import json

from dialogs.engine import DialogEngine, DialogState, Node
from dialogs.events import Answered, Digit, End, HungUp, Listen, Say, Silence, Transfer
from dialogs.result import DialogContext
from dialogs.testing import run_script
from storage.enums import Locale, Outcome

from .conftest import say

CTX = DialogContext(locale=Locale.ZH, salutation="王奶奶", hotline="12349")


def test_greeting_identity_fine_closing_with_hotline(zh):
    run = run_script(zh, [Answered(), say("是我", "affirm"), say("挺好的", "fine"), say("没有了", "deny")], CTX)
    assert run.prompts == ("q.identity", "q.how_are_you", "q.anything_else", "msg.closing")
    assert "王奶奶本人" in run.actions[0].text
    closing = [a for a in run.actions if isinstance(a, Say)][-1]
    assert "12349" in closing.text
    assert run.actions[-1] == End(Outcome.WELL)
    assert run.result.outcome is Outcome.WELL
    assert [line.speaker for line in run.result.transcript][:2] == ["system", "elder"]


def test_every_question_offers_keypad_for_phone_and_wechat(zh):
    run = run_script(zh, [Answered()], CTX)
    q = run.actions[0]
    assert isinstance(q, Say)
    assert [o.digit for o in q.options] == ["1", "2", "0", "9"]
    assert "是本人请按1" in q.phone_text and "转人工请按0" in q.phone_text and "重听请按9" in q.phone_text
    assert "回复1：是本人" in q.chat_text
    listen = run.actions[1]
    assert isinstance(listen, Listen) and set(listen.digits) == {"1", "2", "0", "9"}


def test_keypad_only_check_in(zh):
    run = run_script(zh, [Answered(), Digit("1"), Digit("1"), Digit("1")], CTX)
    assert run.result.outcome is Outcome.WELL


def test_unwell_asks_how_bad_and_contact_family(zh):
    run = run_script(zh, [Answered(), say("是", "affirm"), say("老寒腿又犯了", "unwell"),
                          say("挺严重的", "affirm"), say("给我闺女打电话", "call_family"), say("没了", "deny")], CTX)
    assert "q.unwell_how_bad" in run.prompts and "q.unwell_family" in run.prompts
    f = run.result.flags
    assert f.unwell and f.unwell_severe and f.wants_family_contacted
    assert run.result.five_knowns.health == "老寒腿又犯了"
    assert run.result.outcome is Outcome.NEEDS_FOLLOWUP


def test_hazard_asks_what_exactly(zh):
    run = run_script(zh, [Answered(), say("是", "affirm"), say("我挺好的就是暖气不热", "home_hazard"),
                          say("暖气片冰凉 炉子也不好烧", "home_hazard"), say("没有", "deny")], CTX)
    assert run.prompts[2] == "q.hazard_what"
    assert "msg.hazard_ack" in run.prompts
    assert set(run.result.flags.hazards) >= {"heating", "stove"}


def test_need_asks_which(zh):
    run = run_script(zh, [Answered(), Digit("1"), say("出不去买菜", "need_service"), Digit("3"), Digit("1")], CTX)
    assert "q.need_which" in run.prompts
    assert {"food", "escort"} <= set(run.result.flags.needs)


def test_help_menu_by_keypad(zh):
    run = run_script(zh, [Answered(), Digit("1"), Digit("2"), Digit("2"), Digit("1"), Digit("1")], CTX)
    assert "q.help_menu" in run.prompts and "q.hazard_what" in run.prompts
    assert "heating" in run.result.flags.hazards


def test_winter_safety_questions_when_scheduler_asks(zh):
    ctx = DialogContext(locale=Locale.ZH, salutation="李大爷", winter_safety=True)
    run = run_script(zh, [Answered(), Digit("1"), Digit("1"), Digit("1"), Digit("2"), Digit("1"),
                          Digit("1"), Digit("1")], ctx)
    assert [p for p in run.prompts if p.startswith("q.winter")] == [
        "q.winter_heating", "q.winter_stove", "q.winter_kang", "q.winter_chimney"]
    assert run.result.flags.hazards == ("co_gas",)
    no_winter = run_script(zh, [Answered(), Digit("1"), Digit("1")], CTX)
    assert not any(p.startswith("q.winter") for p in no_winter.prompts)


def test_repeat_says_same_question_slower_and_louder(zh):
    run = run_script(zh, [Answered(), say("你说啥", "repeat")], CTX)
    first, again = [a for a in run.actions if isinstance(a, Say)]
    assert first.prompt_id == again.prompt_id == "q.identity"
    assert again.rate < first.rate and again.volume > first.volume
    nine = run_script(zh, [Answered(), Digit("9")], CTX)
    assert nine.prompts == ("q.identity", "q.identity")


def test_silence_reasks_then_offers_keypad_then_ends_as_no_response(zh):
    run = run_script(zh, [Answered(), Silence(), Silence(), Silence()], CTX)
    assert run.prompts == ("q.identity", "msg.reask_silence", "q.identity", "msg.keypad_offer", "q.identity",
                           "msg.closing_no_response")
    listens = [a for a in run.actions if isinstance(a, Listen)]
    assert listens[-1].grammar == "dtmf"
    assert run.result.outcome is Outcome.UNREACHED and run.result.flags.no_response


def test_out_of_scope_twice_offers_keypad(zh):
    run = run_script(zh, [Answered(), say("是", "affirm"), say("今天几号", "out_of_scope"),
                          say("苞米卖了", "out_of_scope")], CTX)
    assert run.prompts[-2:] == ("msg.keypad_offer", "q.how_are_you")
    assert isinstance(run.actions[-1], Listen) and run.actions[-1].grammar == "dtmf"


def test_who_are_you_explains_with_hotline_then_goes_on(zh):
    run = run_script(zh, [Answered(), say("你是谁 是不是骗子", "who_are_you"), say("是我", "affirm")], CTX)
    assert run.prompts == ("q.identity", "msg.who_we_are", "q.identity", "q.how_are_you")
    assert "12349" in run.actions[2].text


def test_wrong_person_asks_how_elder_is_and_when_to_call_back(zh):
    run = run_script(zh, [Answered(), say("我是他邻居", "wrong_person"), say("老太太挺好的", "fine"),
                          say("明天上午吧", "call_later")], CTX)
    assert run.prompts == ("q.identity", "q.wrong_person_how", "q.wrong_person_when", "msg.wrong_person_ack")
    f = run.result.flags
    assert f.proxy_answered and f.callback is not None and f.callback.day_offset == 1 and f.callback.hour == 9
    assert run.result.outcome is Outcome.DEFERRED


def test_wrong_number_ends(zh):
    run = run_script(zh, [Answered(), say("你打错了 没这人", "wrong_person")], CTX)
    assert run.result.outcome is Outcome.WRONG_NUMBER


def test_call_later_schedules_callback(zh):
    run = run_script(zh, [Answered(), say("正做饭呢 一会儿再打", "call_later")], CTX)
    assert run.result.flags.callback is not None and run.result.flags.callback.delay_minutes == 30
    assert run.result.outcome is Outcome.DEFERRED
    asks = run_script(zh, [Answered(), say("是", "affirm"), say("现在不方便", "call_later"), Digit("2")], CTX)
    assert "q.call_later_when" in asks.prompts
    assert asks.result.flags.callback.day_offset == 1


def test_stop_calling_confirms_then_refused(zh):
    run = run_script(zh, [Answered(), say("是", "affirm"), say("以后别打了", "stop_calling"), say("对", "affirm")], CTX)
    assert run.prompts[-2:] == ("q.stop_confirm", "msg.stop_ack")
    assert run.result.outcome is Outcome.REFUSED
    back = run_script(zh, [Answered(), say("是", "affirm"), say("别打了", "stop_calling"), say("不是", "deny"),
                           say("挺好", "fine"), say("没有", "deny")], CTX)
    assert back.result.outcome is Outcome.WELL


def test_emergency_at_any_point_calms_transfers_and_marks(zh):
    prefixes = [[], [say("是", "affirm")], [say("是", "affirm"), say("有点头晕", "unwell")]]
    for prefix in prefixes:
        run = run_script(zh, [Answered(), *prefix, say("摔倒了起不来", "emergency"), say("挺好", "fine")], CTX)
        assert run.actions[-3:] == (run.actions[-3], Transfer("duty"), End(Outcome.EMERGENCY))
        assert isinstance(run.actions[-3], Say) and run.actions[-3].prompt_id == "msg.emergency"
        assert run.result.flags.emergency and run.result.outcome is Outcome.EMERGENCY
        assert len(run.steps) == len(prefix) + 2  # the event after the End is not consumed


def test_zero_transfers_to_staff(zh):
    run = run_script(zh, [Answered(), Digit("0")], CTX)
    assert Transfer("duty") in run.actions and run.result.flags.transfer_requested


def test_unknown_digit_is_ignored(zh):
    run = run_script(zh, [Answered(), Digit("7"), Digit("#"), Digit("1")], CTX)
    assert run.prompts == ("q.identity", "q.how_are_you")


def test_hang_up_mid_call(zh):
    run = run_script(zh, [Answered(), say("是", "affirm"), HungUp()], CTX)
    assert run.result.outcome is Outcome.UNREACHED
    after = run_script(zh, [Answered(), say("是", "affirm"), say("挺好", "fine"), HungUp()], CTX)
    assert after.result.outcome is Outcome.WELL


def test_festival_greeting_and_korean_script(scripts):
    ctx = DialogContext(locale=Locale.KO, salutation="김할머니", festival="설날")
    run = run_script(scripts[Locale.KO], [Answered(), say("네", "affirm"), say("일없소", "fine"), Digit("1")], ctx)
    assert "설날" in run.actions[0].text and "김할머니" in run.actions[0].text
    assert "1번" in run.actions[0].phone_text
    assert run.result.outcome is Outcome.WELL


def test_wechat_first_message_answers_how_are_you(zh):
    ctx = DialogContext(locale=Locale.ZH, salutation="王奶奶", confirm_identity=False)
    run = run_script(zh, [say("暖气不热", "home_hazard")], ctx)
    assert run.prompts == ("q.hazard_what",)


def test_state_round_trips_through_json_between_messages(zh):
    engine = DialogEngine({Locale.ZH: zh})
    state = engine.start(CTX)
    for event in [Answered(), say("是", "affirm"), say("有点咳嗽", "unwell")]:
        state, _ = engine.step(state, event)
        state = DialogState.from_dict(json.loads(json.dumps(state.to_dict(), ensure_ascii=False)))
    assert state.node is Node.UNWELL_HOW_BAD and state.flags.unwell
    state, _ = engine.step(state, say("不严重", "deny"))
    assert state.node is Node.UNWELL_FAMILY


def test_step_is_deterministic(zh):
    events = [Answered(), say("是", "affirm"), say("你说啥", "repeat"), Silence(), say("挺好", "fine")]
    assert run_script(zh, events, CTX) == run_script(zh, events, CTX)
