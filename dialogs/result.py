"""What a finished (or stored, unfinished) dialog knows: flags, five-knowns updates, transcript."""

from __future__ import annotations

from dataclasses import dataclass, field

from dialogs.extract import CallbackRequest
from storage.enums import Locale, Outcome


@dataclass(frozen=True, slots=True)
class DialogContext:
    """Everything the dialog needs to know about the call; given by the scheduler/bot."""

    locale: Locale = Locale.ZH
    salutation: str = "您"  # e.g. 王奶奶 / 김할머니
    winter_safety: bool = False  # ask heating/stove/kang/chimney (scheduler: cold season, cold wave)
    festival: str | None = None  # e.g. 春节: greets the elder for it
    hotline: str = "12349"
    service_name: str = "探访关爱服务"
    confirm_identity: bool = True  # False on WeChat, where the account is already bound


@dataclass(frozen=True, slots=True)
class Flags:
    emergency: bool = False
    unwell: bool = False
    unwell_severe: bool | None = None
    hazards: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    lonely: bool = False
    benefit_question: str | None = None
    wants_family_contacted: bool = False
    callback: CallbackRequest | None = None
    refused: bool = False
    wrong_number: bool = False
    proxy_answered: bool = False  # someone other than the elder answered
    reported_deceased: bool = False
    transfer_requested: bool = False
    no_response: bool = False
    status_known: bool = False  # we learned how the elder is

    @property
    def needs_followup(self) -> bool:
        return bool(self.unwell or self.hazards or self.needs or self.lonely or self.benefit_question
                    or self.wants_family_contacted or self.reported_deceased or self.transfer_requested)


@dataclass(frozen=True, slots=True)
class FiveKnowns:
    """Updates to the elder's "five knowns" profile (五知道), as said in this dialog."""

    health: str | None = None  # 身体状况
    safety: str | None = None  # 居住安全
    mental: str | None = None  # 精神状况
    needs: str | None = None  # 生活需求
    family: str | None = None  # 家庭/联系人情况


@dataclass(frozen=True, slots=True)
class Answer:
    node: str
    text: str
    intent: str
    confidence: float = 1.0
    digit: str | None = None


@dataclass(frozen=True, slots=True)
class Line:
    speaker: str  # "system" | "elder"
    text: str


@dataclass(frozen=True, slots=True)
class DialogResult:
    outcome: Outcome
    flags: Flags
    five_knowns: FiveKnowns
    answers: tuple[Answer, ...] = field(default=())
    transcript: tuple[Line, ...] = field(default=())


def outcome_of(flags: Flags, answered_any: bool) -> Outcome:
    """The dialog's outcome from what it learned (triage may add an escalation on top)."""
    if flags.emergency:
        return Outcome.EMERGENCY
    if flags.refused:
        return Outcome.REFUSED
    if flags.wrong_number:
        return Outcome.WRONG_NUMBER
    if flags.needs_followup:
        return Outcome.NEEDS_FOLLOWUP
    if flags.callback is not None:
        return Outcome.DEFERRED
    if not answered_any or not flags.status_known:
        return Outcome.UNREACHED
    return Outcome.WELL
