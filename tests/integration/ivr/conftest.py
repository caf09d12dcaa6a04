"""Shared pieces for the call runner / dialer interop tests (real baresip via the SIP helper's fixtures)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from dialogs.engine import DialogEngine
from dialogs.events import Event, Listen, Say
from dialogs.result import DialogContext
from dialogs.script import load_scripts
from ivr.asr import AsrModels
from ivr.conversation import CheckInConversation
from ivr.tts import PromptCache
from storage.enums import Locale
from tests.integration.sip.conftest import (  # noqa: F401 - re-exported fixtures
    baresip,
    elder_wav,
    kamailio,
    sip_ua,
    speech_dir,
    ua_factory,
)
from tests.integration.sip.peers import write_wav


def elder_track(path: Path, parts: list[tuple[float, str | tuple[str, ...]]], locale: Locale, cache: PromptCache,
                total_s: float = 90.0, pause_ms: int = 500) -> Path:
    """An elder's microphone: ``(at_s, text)`` utterances spoken by espeak-ng at those times. A tuple of
    words is a pausing elder: the words' voiced parts with ``pause_ms`` of silence between them."""
    pcm = np.zeros(int(total_s * 8000), dtype=np.int16)
    for at, text in parts:
        if isinstance(text, tuple):
            pause = np.zeros(pause_ms * 8, dtype=np.int16)
            words = [voiced(np.frombuffer(cache.render_sync(w, locale, rate=150, volume=1.0), dtype="<i2"))
                     for w in text]
            speech = np.concatenate([x for w in words for x in (w, pause)][:-1])
        else:
            speech = np.frombuffer(cache.render_sync(text, locale, rate=150, volume=1.0), dtype="<i2")
        start = int(at * 8000)
        pcm[start:start + len(speech)] = speech[: len(pcm) - start]
    write_wav(path, pcm.tobytes())
    return path


def voiced(x: np.ndarray) -> np.ndarray:
    """espeak-ng pads its output with silence: the voiced part only (so a pause is the pause asked for)."""
    loud = np.nonzero(np.abs(x) > 300)[0]
    return x[loud[0]:loud[-1] + 1] if loud.size else x


def answer_times(engine: DialogEngine, cache: PromptCache, ctx: DialogContext, answers: list[Event],
                 *, tts_rate: int = 130, gap_s: float = 1.5, answer_s: float = 1.5, turn_s: float = 1.0,
                 ) -> list[float]:
    """When each answer should start on the elder's track (seconds from answer, no machine screening):
    ``gap_s`` after the prompt it answers ends, assuming every earlier answer took ``answer_s`` and the
    turn after it ``turn_s`` (generous: then an answer comes after its prompt, never over it)."""
    conv = CheckInConversation(engine, ctx)
    actions = conv.start()
    t, at = 0.0, []
    pending = list(answers)
    while actions and pending:
        for a in actions:
            if isinstance(a, Say):
                t += len(cache.render_sync(a.phone_text, ctx.locale, rate=round(tts_rate * a.rate),
                                           volume=a.volume)) / 16000
            elif isinstance(a, Listen):
                at.append(t + gap_s)
                t += gap_s + answer_s + turn_s
                break
        actions = conv.step(pending.pop(0))
    return at


@pytest.fixture(scope="session")
def prompt_cache(tmp_path_factory: pytest.TempPathFactory) -> PromptCache:
    return PromptCache(tmp_path_factory.mktemp("prompts"))


@pytest.fixture(scope="session")
def asr_models() -> AsrModels:
    models = AsrModels.from_settings_paths(None, None)
    models.model(Locale.KO)
    return models


@pytest.fixture(scope="session")
def dialog_engine() -> DialogEngine:
    return DialogEngine(load_scripts())


@pytest.fixture(scope="session")
def intent_parser():  # type: ignore[no-untyped-def]
    """The real local intent classifier (trained once; cached by data hash in the temp dir)."""
    from tanfang.nlu import build_intent_parser
    from tanfang.settings import Settings

    return build_intent_parser(Settings(data_dir=Path(tempfile.gettempdir()) / "tanfang-test-nlu"))
