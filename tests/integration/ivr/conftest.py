"""Shared pieces for the call runner / dialer interop tests (real baresip via the SIP helper's fixtures)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from dialogs.engine import DialogEngine
from dialogs.script import load_scripts
from ivr.asr import AsrModels
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


def elder_track(path: Path, parts: list[tuple[float, str]], locale: Locale, cache: PromptCache,
                total_s: float = 90.0) -> Path:
    """An elder's microphone: ``(at_s, text)`` utterances spoken by espeak-ng at those times."""
    pcm = np.zeros(int(total_s * 8000), dtype=np.int16)
    for at, text in parts:
        speech = np.frombuffer(cache.render_sync(text, locale, rate=150, volume=1.0), dtype="<i2")
        start = int(at * 8000)
        pcm[start:start + len(speech)] = speech[: len(pcm) - start]
    write_wav(path, pcm.tobytes())
    return path


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
