"""The call runner over real calls to baresip playing espeak-ng elders."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dialogs.result import DialogContext
from ivr.call import CallRunner, RunnerConfig
from ivr.conversation import CheckInConversation
from ivr.sip import UserAgent
from storage.enums import Locale, Outcome
from tests.integration.ivr.conftest import elder_track

pytestmark = pytest.mark.sip


class Prompts:
    def __init__(self) -> None:
        self.started: list[tuple[str, float]] = []
        self.event = asyncio.Event()

    def prompt_started(self, prompt_id: str, at: float) -> None:
        self.started.append((prompt_id, at))
        self.event.set()


async def test_korean_elder_answers_by_voice(baresip, sip_ua: UserAgent, prompt_cache, asr_models, dialog_engine,
                                            intent_parser, tmp_path: Path) -> None:
    mic = elder_track(tmp_path / "ko.wav", [(3.0, "네"), (9.0, "네 좋아요"), (16.0, "아니요")], Locale.KO, prompt_cache)
    phone = baresip(answer="auto", source_wav=mic)
    runner = CallRunner(sip_ua, prompt_cache, asr=asr_models, parser=intent_parser,
                        config=RunnerConfig(ring_timeout_s=10, recordings_dir=tmp_path / "rec"))
    conv = CheckInConversation(dialog_engine, DialogContext(locale=Locale.KO, salutation="어르신"))
    report = await runner.run(phone.uri, conv)
    assert report.sip_status == 200
    assert report.intents[:3] == ["affirm", "affirm", "deny"], report.transcript
    assert report.outcome is Outcome.WELL
    assert report.recording is not None and report.recording.exists()
    # turn timing: last voiced frame → VAD decision (+ the 700 ms trailing silence) → ASR final → first packet sent
    speech = [t for t in report.turns if t.kind == "speech"]
    assert len(speech) == 3, report.turns
    for t in speech:
        assert t.voice_end_at < t.decided_at <= t.recognised_at < t.first_packet_at
        assert abs((t.decided_at - t.voice_end_at) - 0.7) < 1e-6
        assert not t.quick
    assert [t.prompt_id for t in speech][:2] == ["q.how_are_you", "q.anything_else"]
    assert report.turn_latencies == [(t.from_decision_s, t.from_voice_s) for t in speech]
