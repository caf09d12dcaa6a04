"""Pre-render the prompts the village's calls will play, before the round starts.

Rendering with espeak-ng while six calls run makes the first round slow and bursty on a small
machine (key presses arrive while nothing is ready to play); the dialog engine is pure, so each
villager's script is walked through it here and every ``Say`` is put into the prompt cache — the
same text, rate and volume the call runner will ask for. Cached on disk for later runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from dialogs.engine import DialogEngine
from dialogs.events import Action, Digit, Say
from ivr.conversation import (
    CALLBACK_PROMISE,
    GOODBYE_SHUTDOWN,
    CheckInConversation,
    ContactConversation,
    context_for,
)
from ivr.persist import TRANSFER_FAILED_REASON
from ivr.tts import PromptCache
from scheduler.escalations import EMERGENCY_CONTACT_PROMPT
from storage.enums import Locale, Sex
from tanfang.demo.village import KEYS, Behaviour, Villager


@dataclass(frozen=True)
class Spoken:
    text: str
    locale: Locale
    rate: int
    volume: float


def _says(actions: tuple[Action, ...], locale: Locale, tts_rate: int) -> list[Spoken]:
    return [Spoken(a.phone_text, locale, round(tts_rate * a.rate), a.volume) for a in actions if isinstance(a, Say)]


def script_prompts(engine: DialogEngine, v: Villager, *, locale: Locale, sex: Sex | None, tts_rate: int,
                   hotline: str, service_name: str, contact_of: str | None = None) -> list[Spoken]:
    """Every prompt one villager's scripted call plays (the voice path asks what the keypad path asks)."""
    if not v.elder:
        prompt = EMERGENCY_CONTACT_PROMPT.format(service=service_name, elder=contact_of or "", reason=TRANSFER_FAILED_REASON)
        contact = ContactConversation(prompt)
        out = _says(contact.start(), Locale.ZH, tts_rate)
        return out + _says(contact.step(Digit("1")), Locale.ZH, tts_rate)
    conv = CheckInConversation(engine, context_for(locale, v.name, sex, {}, hotline=hotline, service_name=service_name))
    out = _says(conv.start(), locale, tts_rate)
    keys = "111" if v.behaviour is Behaviour.VOICE_KO_FINE else KEYS.get(v.behaviour, "")
    for key in keys:
        out += _says(conv.step(Digit(key)), locale, tts_rate)
    slow = round(tts_rate * 0.9)
    out += [Spoken(CALLBACK_PROMISE[locale], locale, slow, 1.0), Spoken(GOODBYE_SHUTDOWN[locale], locale, slow, 1.0)]
    return out


async def prerender(prompts: PromptCache, spoken: list[Spoken]) -> int:
    """Render what is not cached yet; returns how many were new."""
    new = 0
    for s in dict.fromkeys(spoken):
        if prompts.cached(s.text, s.locale, s.rate, s.volume) is None:
            new += 1
        await prompts.render(s.text, s.locale, rate=s.rate, volume=s.volume)
    return new
