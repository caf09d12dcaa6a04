"""The check-in conversation as a pure state machine: ``step(state, event) -> (state, actions)``.

No I/O, no clock, no NLU call: the ``Speech`` event already carries its parsed intent, so the
same state and event always give the same result. States (:class:`Node`) are declared once;
silence and misunderstanding are counted in the state, never raised. Every Speech/Digit/Silence
counts as a turn and the dialog ends after ``MAX_TURNS`` whatever happens, so it always ends.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dialogs.events import (
    Action,
    Digit,
    End,
    Event,
    HungUp,
    KeyOption,
    Listen,
    Say,
    Silence,
    Speech,
    Transfer,
)
from dialogs.extract import (
    HAZARD_KEYWORDS,
    KEYPAD_HAZARDS,
    KEYPAD_NEEDS,
    CallbackRequest,
    callback_request,
    hazard_kinds,
    is_wrong_number,
    need_kinds,
    reports_deceased,
    reports_unwell,
)
from dialogs.result import Answer, DialogContext, DialogResult, FiveKnowns, Flags, Line, outcome_of
from dialogs.script import Script
from storage.enums import Locale, Outcome

MAX_TURNS = 40
MAX_UNCLEAR = 3
MAX_SILENCES = 3
MAX_REPEATS = 3


class Node(enum.StrEnum):
    START = "start"
    IDENTITY = "identity"
    HOW_ARE_YOU = "how_are_you"
    HELP_MENU = "help_menu"
    UNWELL_HOW_BAD = "unwell_how_bad"
    UNWELL_FAMILY = "unwell_family"
    HAZARD_WHAT = "hazard_what"
    NEED_WHICH = "need_which"
    WINTER_HEATING = "winter_heating"
    WINTER_STOVE = "winter_stove"
    WINTER_KANG = "winter_kang"
    WINTER_CHIMNEY = "winter_chimney"
    ANYTHING_ELSE = "anything_else"
    WRONG_PERSON_HOW = "wrong_person_how"
    WRONG_PERSON_WHEN = "wrong_person_when"
    CALL_LATER_WHEN = "call_later_when"
    STOP_CONFIRM = "stop_confirm"
    ENDED = "ended"


WINTER = (Node.WINTER_HEATING, Node.WINTER_STOVE, Node.WINTER_KANG, Node.WINTER_CHIMNEY)
WINTER_KIND = {Node.WINTER_HEATING: "heating", Node.WINTER_STOVE: "co_gas", Node.WINTER_KANG: "kang",
               Node.WINTER_CHIMNEY: "chimney"}
TOPIC = (Node.HOW_ARE_YOU, Node.ANYTHING_ELSE, Node.HELP_MENU)
FREE = (Node.HAZARD_WHAT, Node.NEED_WHICH, Node.WRONG_PERSON_HOW, Node.WRONG_PERSON_WHEN, Node.CALL_LATER_WHEN)
CONTENT = ("unwell", "home_hazard", "need_service", "lonely", "benefit_inquiry", "call_family")


@dataclass(frozen=True, slots=True)
class DialogState:
    """Everything about one conversation; JSON-able via :meth:`to_dict` / :meth:`from_dict`."""

    ctx: DialogContext
    node: Node = Node.START
    agenda: tuple[Node, ...] = ()
    asked: tuple[Node, ...] = ()
    silences: int = 0
    unclear: int = 0
    repeats: int = 0
    slow: bool = False
    turns: int = 0
    answers: tuple[Answer, ...] = ()
    transcript: tuple[Line, ...] = ()
    flags: Flags = field(default_factory=Flags)
    five: FiveKnowns = field(default_factory=FiveKnowns)
    outcome: Outcome | None = None

    @property
    def ended(self) -> bool:
        return self.node is Node.ENDED

    def to_dict(self) -> dict[str, object]:
        plain = _plain(dataclasses.asdict(self))
        assert isinstance(plain, dict)
        return plain

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DialogState:
        ctx = dict(d["ctx"])
        ctx["locale"] = Locale(ctx["locale"])
        flags = dict(d["flags"])
        flags["hazards"] = tuple(flags["hazards"])
        flags["needs"] = tuple(flags["needs"])
        if flags.get("callback") is not None:
            flags["callback"] = CallbackRequest(**flags["callback"])
        return cls(
            ctx=DialogContext(**ctx),
            node=Node(d["node"]),
            agenda=tuple(Node(n) for n in d["agenda"]),
            asked=tuple(Node(n) for n in d["asked"]),
            silences=int(d["silences"]),
            unclear=int(d["unclear"]),
            repeats=int(d["repeats"]),
            slow=bool(d["slow"]),
            turns=int(d["turns"]),
            answers=tuple(Answer(**a) for a in d["answers"]),
            transcript=tuple(Line(**x) for x in d["transcript"]),
            flags=Flags(**flags),
            five=FiveKnowns(**d["five"]),
            outcome=Outcome(d["outcome"]) if d.get("outcome") else None,
        )


def _plain(v: object) -> object:
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _add(items: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*items, *new)))


def _join(old: str | None, new: str) -> str:
    return f"{old}；{new}" if old else new


class DialogEngine:
    """Runs scripts for every locale. Build once (scripts are loaded explicitly) and share."""

    def __init__(self, scripts: Mapping[Locale, Script]) -> None:
        self.scripts = dict(scripts)

    # -- public ------------------------------------------------------------------------------
    def start(self, ctx: DialogContext) -> DialogState:
        """A new dialog waiting for ``Answered`` (any first event other than ``HungUp`` opens it)."""
        if ctx.locale not in self.scripts:
            raise ValueError(f"没有 {ctx.locale.value} 的话术")
        return DialogState(ctx=ctx)

    def step(self, state: DialogState, event: Event) -> tuple[DialogState, tuple[Action, ...]]:
        if state.ended:
            return state, ()
        if isinstance(event, HungUp):
            return self._finish(state, None)
        if state.node is Node.START:
            return self._open(state, event)
        state = replace(state, turns=state.turns + 1)
        if state.turns > MAX_TURNS:
            return self._finish(state, "max_turns")
        if isinstance(event, Silence):
            return self._silence(state)
        if isinstance(event, Speech) and not event.text.strip() and event.intent is None:
            return self._silence(state)
        if isinstance(event, Digit):
            return self._digit(state, event.digit)
        if isinstance(event, Speech):
            name = event.intent.name if event.intent is not None else "out_of_scope"
            conf = event.intent.confidence if event.intent is not None else 0.0
            state = self._heard(state, event.text, name, conf, None)
            return self._meaning(state, name, event.text)
        return state, ()  # Answered again: nothing to do

    def result(self, state: DialogState) -> DialogResult:
        outcome = state.outcome or outcome_of(state.flags, bool(state.answers))
        return DialogResult(outcome, state.flags, state.five, state.answers, state.transcript)

    # -- rendering ---------------------------------------------------------------------------
    def _fmt(self, state: DialogState, template: str) -> str:
        ctx = state.ctx
        script = self.scripts[ctx.locale]
        values = {"salutation": ctx.salutation, "service_name": ctx.service_name, "hotline": ctx.hotline,
                  "festival": ctx.festival or "", "greeting": ""}
        if ctx.festival:
            values["greeting"] = script.messages["festival_greeting"].format(**values)
        return template.format(**values)

    def _voice(self, state: DialogState) -> tuple[float, float]:
        v = self.scripts[state.ctx.locale].voice
        return (v.slow_rate, v.loud_volume) if state.slow else (v.rate, v.volume)

    def _msg(self, state: DialogState, key: str) -> tuple[DialogState, Say]:
        text = self._fmt(state, self.scripts[state.ctx.locale].messages[key])
        rate, volume = self._voice(state)
        say = Say(prompt_id=f"msg.{key}", text=text, rate=rate, volume=volume)
        return replace(state, transcript=(*state.transcript, Line("system", text))), say

    def _ask(self, state: DialogState, node: Node, prefix: tuple[str, ...] = (),
             keypad_only: bool = False) -> tuple[DialogState, tuple[Action, ...]]:
        script = self.scripts[state.ctx.locale]
        actions: list[Action] = []
        for key in prefix:
            state, say = self._msg(state, key)
            actions.append(say)
        q = script.questions[node.value]
        options = tuple(KeyOption(d, lbl) for d, _, lbl in q.keypad) + tuple(
            KeyOption(d, lbl) for d, lbl in script.keypad.universal)
        k = script.keypad
        text = self._fmt(state, q.text)
        spoken = ("" if text[-1:] in "。？！.?!" else k.spoken_prefix) + k.spoken_join.join(
            k.spoken_item.format(label=o.label, digit=o.digit) for o in options)
        shown = k.text_join.join(k.text_item.format(label=o.label, digit=o.digit) for o in options)
        rate, volume = self._voice(state)
        actions.append(Say(prompt_id=f"q.{node.value}", text=text, rate=rate, volume=volume,
                           options=options, spoken_options=spoken, text_options=shown))
        timeout = script.listen_timeout_s * (1.5 if keypad_only or state.silences else 1.0)
        actions.append(Listen(grammar="dtmf" if keypad_only else "speech+dtmf", timeout_s=timeout,
                              digits=tuple(o.digit for o in options)))
        asked = state.asked if node in state.asked else (*state.asked, node)
        state = replace(state, node=node, asked=asked, transcript=(*state.transcript, Line("system", text)))
        return state, tuple(actions)

    # -- flow --------------------------------------------------------------------------------
    def _open(self, state: DialogState, event: Event) -> tuple[DialogState, tuple[Action, ...]]:
        agenda = [Node.HOW_ARE_YOU, *(WINTER if state.ctx.winter_safety else ()), Node.ANYTHING_ELSE]
        first = Node.IDENTITY if state.ctx.confirm_identity else agenda.pop(0)
        state = replace(state, agenda=tuple(agenda))
        if isinstance(event, Speech | Digit) and first is not Node.IDENTITY:
            # WeChat: the elder's first message is already an answer to "how are you".
            state = replace(state, node=first, asked=(first,))
            return self.step(state, event)
        return self._ask(state, first)

    def _advance(self, state: DialogState, prefix: tuple[str, ...] = ()) -> tuple[DialogState, tuple[Action, ...]]:
        agenda = list(state.agenda)
        while agenda and agenda[0] in state.asked:
            agenda.pop(0)
        state = replace(state, silences=0, unclear=0, repeats=0)
        if not agenda:
            return self._finish(state, "closing", prefix)
        nxt = agenda.pop(0)
        return self._ask(replace(state, agenda=tuple(agenda)), nxt, prefix)

    def _push(self, state: DialogState, *nodes: Node, resume: bool = False) -> DialogState:
        """Put ``nodes`` first on the agenda (skipping ones already asked); ``resume`` re-queues the
        current question after them (content given at a yes/no or winter question)."""
        new = [n for n in nodes if n not in state.asked and n not in state.agenda]
        asked = state.asked
        if resume and state.node not in TOPIC and state.node not in FREE:
            new.append(state.node)
            asked = tuple(n for n in asked if n is not state.node)
        return replace(state, agenda=(*new, *state.agenda), asked=asked)

    def _finish(self, state: DialogState, message: str | None, prefix: tuple[str, ...] = (),
                transfer: bool = False) -> tuple[DialogState, tuple[Action, ...]]:
        actions: list[Action] = []
        for key in (*prefix, *((message,) if message else ())):
            state, say = self._msg(state, key)
            actions.append(say)
        if transfer:
            actions.append(Transfer("duty"))
        outcome = outcome_of(state.flags, bool(state.answers))
        actions.append(End(outcome))
        return replace(state, node=Node.ENDED, outcome=outcome), tuple(actions)

    def _heard(self, state: DialogState, text: str, intent: str, conf: float, digit: str | None) -> DialogState:
        line = Line("elder", text if digit is None else f"[按键 {digit}]")
        answer = Answer(state.node.value, text, intent, conf, digit)
        return replace(state, answers=(*state.answers, answer), transcript=(*state.transcript, line))

    def _silence(self, state: DialogState) -> tuple[DialogState, tuple[Action, ...]]:
        state = replace(state, silences=state.silences + 1)
        if state.silences >= MAX_SILENCES:
            return self._finish(replace(state, flags=replace(state.flags, no_response=True)), "closing_no_response")
        prefix = ("reask_silence",) if state.silences == 1 else ("keypad_offer",)
        return self._ask(state, state.node, prefix, keypad_only=state.silences > 1)

    def _unclear(self, state: DialogState) -> tuple[DialogState, tuple[Action, ...]]:
        state = replace(state, unclear=state.unclear + 1)
        if state.unclear >= MAX_UNCLEAR:
            return self._advance(state)
        prefix = ("reask_unclear",) if state.unclear == 1 else ("reask_unclear", "keypad_offer")
        return self._ask(state, state.node, prefix, keypad_only=state.unclear > 1)

    def _digit(self, state: DialogState, digit: str) -> tuple[DialogState, tuple[Action, ...]]:
        if digit == "0":
            state = self._heard(state, "", "transfer", 1.0, digit)
            state = replace(state, flags=replace(state.flags, transfer_requested=True))
            return self._finish(state, "transfer", transfer=True)
        if digit == "9":
            return self._meaning(self._heard(state, "", "repeat", 1.0, digit), "repeat", "")
        meaning = self.scripts[state.ctx.locale].questions[state.node.value].meaning(digit)
        if meaning is None:  # an unknown key is ignored: keep listening
            t = self.scripts[state.ctx.locale].listen_timeout_s
            return state, (Listen(timeout_s=t),)
        return self._meaning(self._heard(state, "", meaning, 1.0, digit), meaning, "")

    # -- meaning of an answer ----------------------------------------------------------------
    def _meaning(self, state: DialogState, m: str, text: str) -> tuple[DialogState, tuple[Action, ...]]:
        if m == "emergency":
            f = replace(state.flags, emergency=True, status_known=True)
            five = replace(state.five, health=_join(state.five.health, text)) if text else state.five
            return self._finish(replace(state, flags=f, five=five), "emergency", transfer=True)
        if m == "repeat":
            state = replace(state, repeats=state.repeats + 1, slow=True)
            if state.repeats > MAX_REPEATS:
                return self._unclear(state)
            return self._ask(state, state.node)
        if m == "who_are_you":
            return self._ask(state, state.node, ("who_we_are",))
        node = state.node
        if node in FREE:
            return self._free(state, m, text)
        if m == "wrong_person" and node in (Node.IDENTITY, Node.HOW_ARE_YOU):
            return self._wrong_person(state, text)
        if m == "call_later":
            return self._call_later(state, text)
        if m == "stop_calling" and node not in (Node.UNWELL_HOW_BAD, Node.UNWELL_FAMILY, Node.STOP_CONFIRM):
            state = self._push(state, resume=True)
            if node in TOPIC:
                state = replace(state, agenda=(node, *state.agenda),
                                asked=tuple(n for n in state.asked if n is not node))
            return self._ask(replace(state, silences=0, unclear=0), Node.STOP_CONFIRM)
        if node is Node.IDENTITY:
            if m == "affirm":
                return self._advance(state)
            if m == "deny":
                return self._wrong_person(state, text)
            if m in (*CONTENT, "fine", "help"):
                state = replace(state, node=Node.HOW_ARE_YOU, asked=(*state.asked, Node.HOW_ARE_YOU))
                return self._topic(state, m, text)
            return self._unclear(state)
        if node in TOPIC:
            return self._topic(state, m, text)
        if node is Node.UNWELL_HOW_BAD:
            if m in ("affirm", "unwell"):
                return self._advance(replace(state, flags=replace(state.flags, unwell_severe=True)))
            if m in ("deny", "fine", "stop_calling"):
                return self._advance(replace(state, flags=replace(state.flags, unwell_severe=False)))
        elif node is Node.UNWELL_FAMILY:
            if m in ("affirm", "call_family"):
                return self._advance(replace(state, flags=replace(state.flags, wants_family_contacted=True)),
                                     ("family_ack",))
            if m in ("deny", "fine", "stop_calling"):
                return self._advance(state, ("unwell_ack",))
        elif node is Node.STOP_CONFIRM:
            if m in ("affirm", "stop_calling"):
                return self._finish(replace(state, flags=replace(state.flags, refused=True)), "stop_ack")
            if m in ("deny", "fine"):
                return self._advance(state)
        elif node in WINTER:
            if m in ("fine", "affirm"):
                return self._advance(state)
            if m in ("deny", "home_hazard"):
                kinds = (WINTER_KIND[node], *hazard_kinds(text))
                f = replace(state.flags, hazards=_add(state.flags.hazards, kinds), status_known=True)
                five = replace(state.five, safety=_join(state.five.safety, text or node.value))
                return self._advance(replace(state, flags=f, five=five))
        if m in CONTENT:
            return self._topic(self._push(state, resume=True), m, text)
        return self._unclear(state)

    def _topic(self, state: DialogState, m: str, text: str) -> tuple[DialogState, tuple[Action, ...]]:
        node, f, five = state.node, state.flags, state.five
        if m in ("fine",) or (m == "affirm" and node is Node.HOW_ARE_YOU):
            if node is Node.HELP_MENU:
                return self._advance(state)
            return self._advance(replace(state, flags=replace(f, status_known=True)))
        if m == "deny" and node is not Node.HOW_ARE_YOU:
            return self._advance(state)
        if m == "help" or (m == "affirm" and node is Node.ANYTHING_ELSE):
            if Node.HELP_MENU in state.asked:
                return self._unclear(state)
            return self._ask(replace(state, silences=0, unclear=0), Node.HELP_MENU)
        if m == "unwell":
            state = replace(state, flags=replace(f, unwell=True, status_known=True),
                            five=replace(five, health=_join(five.health, text)) if text else five)
            state = self._push(state, Node.UNWELL_HOW_BAD, Node.UNWELL_FAMILY)
            return self._advance(state)
        if m == "home_hazard":
            state = replace(state, flags=replace(f, hazards=_add(f.hazards, hazard_kinds(text)), status_known=True),
                            five=replace(five, safety=_join(five.safety, text)) if text else five)
            return self._advance(self._push(state, Node.HAZARD_WHAT))
        if m == "need_service":
            state = replace(state, flags=replace(f, needs=_add(f.needs, need_kinds(text)), status_known=True),
                            five=replace(five, needs=_join(five.needs, text)) if text else five)
            return self._advance(self._push(state, Node.NEED_WHICH))
        if m == "lonely":
            state = replace(state, flags=replace(f, lonely=True, status_known=True),
                            five=replace(five, mental=_join(five.mental, text or "感到孤单")))
            return self._advance(state, ("lonely_ack",))
        if m == "benefit_inquiry":
            state = replace(state, flags=replace(f, benefit_question=_join(f.benefit_question, text or "咨询待遇"),
                                                 status_known=True))
            return self._advance(state, ("benefit_ack",))
        if m == "call_family":
            return self._advance(replace(state, flags=replace(f, wants_family_contacted=True)), ("family_ack",))
        if m == "wrong_person":
            return self._wrong_person(state, text)
        return self._unclear(state)

    def _free(self, state: DialogState, m: str, text: str) -> tuple[DialogState, tuple[Action, ...]]:
        node, f, five = state.node, state.flags, state.five
        if node is Node.HAZARD_WHAT:
            kinds = KEYPAD_HAZARDS.get(m) or hazard_kinds(text)
            state = replace(state, flags=replace(f, hazards=_add(f.hazards, kinds), status_known=True),
                            five=replace(five, safety=_join(five.safety, text)) if text else five)
            if m in CONTENT and m != "home_hazard":
                return self._topic(state, m, text)
            return self._advance(state, ("hazard_ack",))
        if node is Node.NEED_WHICH:
            kinds = KEYPAD_NEEDS.get(m) or need_kinds(text)
            state = replace(state, flags=replace(f, needs=_add(f.needs, kinds), status_known=True),
                            five=replace(five, needs=_join(five.needs, text)) if text else five)
            return self._advance(state, ("need_ack",))
        if node is Node.WRONG_PERSON_HOW:
            if is_wrong_number(text):
                return self._finish(replace(state, flags=replace(f, wrong_number=True)), "wrong_number_ack")
            if reports_deceased(text):
                return self._finish(replace(state, flags=replace(f, reported_deceased=True),
                                            five=replace(five, family=_join(five.family, f"他人称：{text}"))),
                                    "wrong_person_ack")
            if m == "unwell" or reports_unwell(text):
                state = replace(state, flags=replace(f, unwell=True, status_known=True),
                                five=replace(five, health=_join(five.health, f"他人转述：{text or '身体不好'}")))
            elif m in ("fine", "affirm"):
                state = replace(state, flags=replace(f, status_known=True))
            return self._ask(replace(state, silences=0, unclear=0), Node.WRONG_PERSON_WHEN)
        # WRONG_PERSON_WHEN / CALL_LATER_WHEN: any answer is the time
        cb = _keypad_callback(m) or callback_request(text) or CallbackRequest(text=text)
        state = replace(state, flags=replace(f, callback=cb))
        return self._finish(state, "wrong_person_ack" if node is Node.WRONG_PERSON_WHEN else "call_later_ack")

    def _wrong_person(self, state: DialogState, text: str) -> tuple[DialogState, tuple[Action, ...]]:
        f = replace(state.flags, proxy_answered=True)
        state = replace(state, flags=f, agenda=(), silences=0, unclear=0)
        if is_wrong_number(text):
            return self._finish(replace(state, flags=replace(f, wrong_number=True, proxy_answered=False)),
                                "wrong_number_ack")
        if reports_deceased(text):
            return self._finish(replace(state, flags=replace(f, reported_deceased=True),
                                        five=replace(state.five, family=f"他人称：{text}")), "wrong_person_ack")
        if reports_unwell(text):
            state = replace(state, flags=replace(f, unwell=True, status_known=True),
                            five=replace(state.five, health=_join(state.five.health, f"他人转述：{text}")))
            return self._ask(state, Node.WRONG_PERSON_WHEN)
        return self._ask(state, Node.WRONG_PERSON_HOW)

    def _call_later(self, state: DialogState, text: str) -> tuple[DialogState, tuple[Action, ...]]:
        cb = callback_request(text)
        if cb is not None:
            return self._finish(replace(state, flags=replace(state.flags, callback=cb)), "call_later_ack")
        return self._ask(replace(state, silences=0, unclear=0), Node.CALL_LATER_WHEN)


def _keypad_callback(meaning: str) -> CallbackRequest | None:
    if meaning == "later_today":
        return CallbackRequest(text="[按键] 晚些时候", delay_minutes=180)
    if meaning == "tomorrow":
        return CallbackRequest(text="[按键] 明天", day_offset=1, hour=10)
    return None


__all__ = ["HAZARD_KEYWORDS", "MAX_TURNS", "DialogEngine", "DialogState", "Node"]
