"""End-of-speech and barge-in detection on espeak-ng speech, silence, noise and clicks."""

from __future__ import annotations

import numpy as np

from ivr.media.g711 import Int16Array, as_int16, frame_energy
from ivr.media.vad import BargeInDetector, EndReason, SpeechDetector, SpeechEnd, SpeechStart, VadConfig

from .conftest import mix, white_noise


def zeros(ms: int) -> Int16Array:
    return np.zeros(8 * ms, dtype=np.int16)


def run(x: Int16Array, config: VadConfig | None = None, chunk: int = 160) -> list[SpeechStart | SpeechEnd]:
    vad = SpeechDetector(config)
    events: list[SpeechStart | SpeechEnd] = []
    b = x.astype("<i2").tobytes()
    for i in range(0, len(b), chunk * 2):
        events += vad.feed(b[i : i + chunk * 2])
    return events


def test_silence_and_steady_noise_give_nothing() -> None:
    assert run(zeros(5000)) == []
    for level in (-50.0, -35.0, -25.0):
        assert run(white_noise(8000 * 8, level)) == []


def test_one_utterance_start_and_end(speech: dict[str, Int16Array]) -> None:
    said = speech["cmn-latn-pinyin"]
    x = np.concatenate([zeros(1000), said, zeros(2000)])
    events = run(x)
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]
    start, end = events
    assert isinstance(start, SpeechStart) and isinstance(end, SpeechEnd)
    assert 950 <= start.at_ms <= 1150
    speech_end_ms = 1000 + int(np.nonzero(np.abs(said) > 300)[0][-1]) // 8  # espeak pads with silence
    assert abs(end.at_ms - speech_end_ms) <= 150
    assert end.reason is EndReason.SILENCE
    # The utterance keeps a pre-roll and all of the speech.
    assert len(end.pcm) // 16 >= len(said) // 8 - 100


def test_pauses_shorter_than_trailing_silence_keep_one_utterance(speech: dict[str, Int16Array]) -> None:
    said = speech["ko"][:8000]
    x = np.concatenate([zeros(500), said, zeros(450), said, zeros(1500)])
    assert [type(e) for e in run(x)] == [SpeechStart, SpeechEnd]
    x = np.concatenate([zeros(500), said, zeros(1200), said, zeros(1500)])
    assert [type(e) for e in run(x)] == [SpeechStart, SpeechEnd, SpeechStart, SpeechEnd]


def test_speech_over_line_noise(speech: dict[str, Int16Array]) -> None:
    said = speech["ko"]
    x = np.concatenate([zeros(2000), said, zeros(2000)])
    noisy = mix(x, white_noise(len(x), -40))
    events = run(noisy)
    assert isinstance(events[0], SpeechStart) and isinstance(events[-1], SpeechEnd)
    assert 1900 <= events[0].at_ms <= 2200


def test_max_utterance_length(speech: dict[str, Int16Array]) -> None:
    said = speech["ko"]
    # Talking on and on without a 700 ms pause: cut at max_utterance_ms.
    x = np.concatenate([said] * 3)
    events = run(x, VadConfig(max_utterance_ms=4000, end_silence_ms=2000))
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert ends and ends[0].reason is EndReason.MAX_LENGTH
    assert 3900 <= len(ends[0].pcm) // 16 <= 4400


def test_flush_returns_utterance_in_progress(speech: dict[str, Int16Array]) -> None:
    vad = SpeechDetector()
    vad.feed(speech["ko"][:8000].astype("<i2").tobytes())
    end = vad.flush()
    assert end is not None and end.reason is EndReason.FLUSH
    assert vad.flush() is None


def test_barge_in_on_speech_but_not_on_clicks(speech: dict[str, Int16Array]) -> None:
    det = BargeInDetector()
    # Clicks and a 60 ms burst on a quiet line do not stop the prompt.
    click = np.zeros(8000, np.int16)
    click[4000:4010] = 20000
    burst = mix(zeros(1000), np.concatenate([zeros(500), white_noise(480, -10)]))
    for x in (click, burst, white_noise(16000, -30)):
        assert not det.feed(x.astype("<i2").tobytes())
    # Speech does, within ~300 ms of its start.
    said = speech["cmn-latn-pinyin"].astype("<i2").tobytes()
    fired_at = None
    for i in range(0, len(said), 320):
        if det.feed(said[i : i + 320]):
            fired_at = i // 16
            break
    assert fired_at is not None and fired_at <= 450
    det.reset()
    assert not det.feed(zeros(200).astype("<i2").tobytes())


def test_noise_floor_follows_the_line() -> None:
    vad = SpeechDetector()
    vad.feed(white_noise(8000 * 4, -30).astype("<i2").tobytes())
    assert -34 < vad.noise_floor_dbfs < -29


def test_trailing_silence_and_early_end(speech: dict[str, Int16Array]) -> None:
    said = speech["ko"][:8000]
    vad = SpeechDetector()
    b = np.concatenate([zeros(500), said, zeros(400)]).astype("<i2").tobytes()
    events = []
    for i in range(0, len(b), 320):
        events += vad.feed(b[i : i + 320])
    assert [type(e) for e in events] == [SpeechStart]
    assert vad.in_speech and 300 <= vad.trailing_silence_ms < 700
    end = vad.end_now()
    assert isinstance(end, SpeechEnd) and end.reason is EndReason.SILENCE
    assert not vad.in_speech and vad.trailing_silence_ms == 0 and vad.end_now() is None


def test_a_shared_frame_energy_gives_the_same_events(speech: dict[str, Int16Array]) -> None:
    """The call's line computes each frame's energy once for the DTMF detector and the VAD: same events,
    same levels, also for frames fed in other sizes (energy ignored) and for barge-in."""
    x = mix(np.concatenate([zeros(1000), speech["ko"], zeros(900), speech["ko"], zeros(1500)]),
            white_noise(8 * (1000 + 900 + 1500) + 2 * len(speech["ko"]), -50))
    b = x.astype("<i2").tobytes()
    plain, shared = SpeechDetector(), SpeechDetector()
    got: tuple[list[SpeechStart | SpeechEnd], list[SpeechStart | SpeechEnd]] = ([], [])
    barge_plain, barge_shared = BargeInDetector(), BargeInDetector()
    barged: tuple[list[bool], list[bool]] = ([], [])
    for i in range(0, len(b) - 320, 320):
        frame = b[i : i + 320]
        got[0].extend(plain.feed(frame))
        got[1].extend(shared.feed(frame, frame_energy(as_int16(frame))))
        barged[0].append(barge_plain.feed(frame))
        barged[1].append(barge_shared.feed(frame, frame_energy(as_int16(frame))))
        assert plain.noise_floor_dbfs == shared.noise_floor_dbfs
    assert got[0] == got[1] and len(got[0]) >= 4
    assert barged[0] == barged[1] and any(barged[0])
    odd = SpeechDetector()
    assert [e for i in range(0, len(b), 250) for e in odd.feed(b[i : i + 250], 1e12)] == got[0]  # not one frame
