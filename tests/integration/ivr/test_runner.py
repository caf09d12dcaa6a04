"""The call runner over real calls to baresip playing espeak-ng elders."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from dialogs.events import Speech
from dialogs.result import DialogContext
from ivr.call import CallReport, CallRunner, RunnerConfig
from ivr.conversation import CheckInConversation
from ivr.sip import UserAgent
from storage.enums import Locale, Outcome
from tests.integration.ivr.conftest import answer_times, elder_track

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
    # turn timing: last voiced frame → VAD decision (the 700 ms trailing silence, or the quick end's 400 ms
    # once the grammar answer is complete) → ASR final → first packet sent
    speech = [t for t in report.turns if t.kind == "speech"]
    assert len(speech) == 3, report.turns
    for t in speech:
        assert t.voice_end_at < t.decided_at <= t.recognised_at < t.first_packet_at, (report.transcript, report.turns)
        if t.quick:
            assert 0.4 - 1e-6 <= t.decided_at - t.voice_end_at < 0.7
        else:
            assert abs((t.decided_at - t.voice_end_at) - 0.7) < 1e-6
    assert any(t.quick for t in speech), speech  # short yes/no answers end early by default
    assert [t.prompt_id for t in speech][:2] == ["q.how_are_you", "q.anything_else"]
    assert report.turn_latencies == [(t.from_decision_s, t.from_voice_s) for t in speech]


def _elder_turns(report: CallReport) -> list[dict[str, Any]]:
    return [t for t in report.transcript if t["who"] == "elder"]


def _runner(sip_ua: UserAgent, prompt_cache, asr_models, intent_parser, tmp_path: Path) -> CallRunner:  # type: ignore[no-untyped-def]
    return CallRunner(sip_ua, prompt_cache, asr=asr_models, parser=intent_parser,
                      config=RunnerConfig(ring_timeout_s=10, recordings_dir=tmp_path / "rec", detect_machines=False))


YES, YES_FINE, NO = ("네", "affirm"), ("네 좋아요", "affirm"), ("아니요", "deny")


def _times(dialog_engine, prompt_cache, intent_parser, said: list[tuple[str, str]]) -> list[float]:  # type: ignore[no-untyped-def]
    events = [Speech.parsed(intent_parser, text, "ko", 0.9) for text, _ in said]
    return answer_times(dialog_engine, prompt_cache, KO, events)


KO = DialogContext(locale=Locale.KO, salutation="어르신", service_name="안부 서비스")  # a shorter first prompt


async def test_pausing_elders_are_not_cut_off(baresip, sip_ua: UserAgent, prompt_cache, asr_models, dialog_engine,
                                             intent_parser, tmp_path: Path) -> None:
    """Two elders who pause mid-answer, called at the same time (each call waits for its prompts to end):
    500 ms pauses (:func:`_check_pause_500`) and 800 ms pauses (:func:`_check_pause_800`)."""
    at = _times(dialog_engine, prompt_cache, intent_parser, [YES, YES_FINE, NO])
    mic500 = elder_track(tmp_path / "ko500.wav", [(at[0], "네"), (at[1], ("네", "좋아요")), (at[2], "아니요")],
                         Locale.KO, prompt_cache, pause_ms=500, total_s=at[-1] + 40)
    mic800 = elder_track(tmp_path / "ko800.wav",
                         [(at[0], "네"), (at[1], ("네", "좋아요")), (at[2], ("네", "아니 아니요"))],
                         Locale.KO, prompt_cache, pause_ms=800, total_s=at[-1] + 40)
    phone500 = baresip(answer="auto", source_wav=mic500)
    phone800 = baresip(answer="auto", source_wav=mic800)
    r500, r800 = await asyncio.gather(
        _runner(sip_ua, prompt_cache, asr_models, intent_parser, tmp_path / "p500").run(
            phone500.uri, CheckInConversation(dialog_engine, KO)),
        _runner(sip_ua, prompt_cache, asr_models, intent_parser, tmp_path / "p800").run(
            phone800.uri, CheckInConversation(dialog_engine, KO)))
    _check_pause_500(r500)
    _check_pause_800(r800)


def _check_pause_500(report: CallReport) -> None:
    """"네 … 좋아요" with a 500 ms pause: one answer (both parts in its turn), no prompt stopped."""
    assert report.intents == ["affirm", "affirm", "deny"], report.transcript
    assert report.outcome is Outcome.WELL
    elder = _elder_turns(report)
    assert len(elder) == 3, elder  # "좋아요" is no answer of its own (nor one to "anything else?")
    # Either the recogniser had "네" within the pause (quick end: "좋아요" continues it) or the VAD's
    # 700 ms kept the two words one utterance (where grammar-mode Vosk may drop the "네"): one answer
    # either way, and no prompt was stopped.
    if "parts" in elder[1]:
        assert report.turns[1].quick
        assert elder[1]["parts"][0] == "네" and "좋아요" in elder[1]["parts"][1], elder
        assert elder[1]["text"] == " ".join(elder[1]["parts"]) and "revised" not in elder[1]
    assert elder[1]["text"].endswith("좋아요"), elder
    assert not [t for t in report.transcript if t.get("stopped")], report.transcript
    assert report.prompts == ["q.identity", "q.how_are_you", "q.anything_else", "msg.closing"]
    assert report.dialog.answers[1].text == elder[1]["text"]  # the dialog holds the whole answer too
    assert any(t.quick for t in report.turns), report.turns  # "네", "아니요": quick ends


def _check_pause_800(report: CallReport) -> None:
    """Pauses of 800 ms: longer than the VAD's 700 ms (without the guard the second part would barge in on
    the next prompt and answer it), inside the continuation window (700 + 300 ms), so the first word is
    an answer of its own (a quick end, or the 700 ms when Vosk is slow) and the rest continues it.
    "네 … 좋아요" is kept (the next prompt plays on); "그 밖에 도와드릴 일이 있으세요?" — "네 … 아니 아니요":
    "네" (affirm) started the help menu; the whole answer is "no": the help menu stops and the call
    closes as for "아니요"."""
    elder = _elder_turns(report)
    assert len(elder) == 3, report.transcript
    assert elder[1]["parts"][0] == "네" and "좋아요" in elder[1]["parts"][1] and "revised" not in elder[1], elder
    assert elder[2]["parts"][0] == "네" and "아니" in elder[2]["parts"][1], elder
    assert elder[2]["text"] == " ".join(elder[2]["parts"]) and elder[2]["revised"] is True, elder
    assert report.intents == ["affirm", "affirm", "deny"], report.transcript
    assert report.prompts == ["q.identity", "q.how_are_you", "q.anything_else", "q.help_menu", "msg.closing"]
    # "anything else?" played on over "좋아요" (the phone hanging up during the closing is not ours to judge)
    stopped = {t["text"][:6]: t["stopped"] for t in report.transcript if t.get("stopped") not in (None, "hangup")}
    assert stopped == {"어떤 도움이": "revise"}, [(t["text"][:6], t.get("stopped")) for t in report.transcript]
    assert report.outcome is Outcome.WELL
    last = report.dialog.answers[-1]
    assert last.text == elder[2]["text"] and last.intent == "deny", report.dialog.answers
