from __future__ import annotations

import pytest

from dialogs.events import Speech
from dialogs.nlu.intents import Intent
from dialogs.script import Script, load_scripts
from storage.enums import Locale


@pytest.fixture(scope="session")
def scripts() -> dict[Locale, Script]:
    return load_scripts()


@pytest.fixture(scope="session")
def zh(scripts: dict[Locale, Script]) -> Script:
    return scripts[Locale.ZH]


def say(text: str, intent: str, confidence: float = 0.9) -> Speech:
    """A Speech event as the call runner builds it after parse()."""
    return Speech(text=text, confidence=0.95, intent=Intent(intent, confidence))
