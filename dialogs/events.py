"""Typed events into the dialog and typed actions out of it (channel-neutral).

The phone call runner and the WeChat bot both translate their world into these events and carry
out these actions. NLU is not called inside the engine: a ``Speech`` event carries the already
parsed ``Intent`` (see :meth:`Speech.parsed`), which keeps ``step`` pure and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dialogs.nlu.intents import Intent, IntentParser
from storage.enums import Outcome


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Answered:
    """The elder picked up (phone) or the conversation opened (WeChat)."""


@dataclass(frozen=True, slots=True)
class Speech:
    """What the elder said (ASR text or a typed message) and its parsed intent.

    ``intent=None`` is treated as ``out_of_scope``.
    """

    text: str
    confidence: float = 1.0
    intent: Intent | None = None

    @classmethod
    def parsed(cls, parser: IntentParser, text: str, locale: str, confidence: float = 1.0) -> Speech:
        return cls(text=text, confidence=confidence, intent=parser.parse(text, locale))


@dataclass(frozen=True, slots=True)
class Digit:
    """A keypad press (DTMF) or a reply consisting of one digit on WeChat."""

    digit: str


@dataclass(frozen=True, slots=True)
class Silence:
    """The listen timeout passed with nothing heard."""


@dataclass(frozen=True, slots=True)
class HungUp:
    """The line dropped or the chat was abandoned."""


Event = Answered | Speech | Digit | Silence | HungUp


# -- actions -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KeyOption:
    digit: str
    label: str


@dataclass(frozen=True, slots=True)
class Say:
    """Speak or send ``text``. ``options`` are the keypad choices; ``spoken_options`` is how the
    phone says them ("好请按1……"), ``text_options`` how WeChat shows them ("回复1：好")."""

    prompt_id: str
    text: str
    rate: float = 1.0
    volume: float = 1.0
    options: tuple[KeyOption, ...] = field(default=())
    spoken_options: str = ""
    text_options: str = ""

    @property
    def phone_text(self) -> str:
        return f"{self.text}{self.spoken_options}"

    @property
    def chat_text(self) -> str:
        return f"{self.text}\n{self.text_options}" if self.text_options else self.text


@dataclass(frozen=True, slots=True)
class Listen:
    """Wait for the answer: speech and/or keypad (``grammar`` is "speech+dtmf" or "dtmf")."""

    grammar: str = "speech+dtmf"
    timeout_s: float = 8.0
    digits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Transfer:
    """Hand the elder to a human; ``target`` is symbolic ("duty"), mapped to a line by the caller."""

    target: str = "duty"


@dataclass(frozen=True, slots=True)
class End:
    """The dialog is over; get the full :class:`~dialogs.result.DialogResult` from the state."""

    outcome: Outcome


Action = Say | Listen | Transfer | End
