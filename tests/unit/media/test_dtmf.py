"""In-band DTMF detection on generated tones, noise, speech by espeak-ng and G.711-coded audio."""

from __future__ import annotations

import numpy as np
import pytest

from ivr.media import g711
from ivr.media.dtmf import (
    DigitMerger,
    DtmfConfig,
    DtmfDetector,
    DtmfDigit,
    generate_dtmf,
    generate_dtmf_sequence,
)
from ivr.media.g711 import Int16Array

from .conftest import mix, white_noise

ALL_KEYS = "123A456B789C*0#D"


def detect(x: Int16Array, chunk: int = 160, config: DtmfConfig | None = None) -> str:
    det = DtmfDetector(config)
    digits = []
    for start in range(0, len(x), chunk):
        digits += det.feed(x[start : start + chunk])
    return "".join(d.digit for d in digits)


def test_every_key_detected_once() -> None:
    assert detect(generate_dtmf_sequence(ALL_KEYS, on_ms=70, off_ms=60)) == ALL_KEYS


def test_odd_chunk_sizes_give_same_result() -> None:
    x = generate_dtmf_sequence("5550123", on_ms=60, off_ms=60)
    assert detect(x, chunk=37) == detect(x, chunk=1000) == "5550123"


def test_long_press_is_one_digit() -> None:
    assert detect(generate_dtmf_sequence("2", on_ms=1500)) == "2"


def test_repeated_key_with_short_gaps() -> None:
    assert detect(generate_dtmf_sequence("1111", on_ms=50, off_ms=50)) == "1111"


@pytest.mark.parametrize("ms", [10, 15, 20])
def test_short_tones_rejected(ms: int) -> None:
    assert detect(generate_dtmf_sequence("8", on_ms=ms)) == ""


@pytest.mark.parametrize("ms", [40, 45, 60])
def test_minimum_duration_tones_accepted(ms: int) -> None:
    assert detect(generate_dtmf_sequence("8", on_ms=ms)) == "8"


@pytest.mark.parametrize("twist", [-6.0, 0.0, 4.0, 6.0])
def test_twist_within_limits(twist: float) -> None:
    x = np.concatenate([np.zeros(400, np.int16), generate_dtmf("9", 80, twist_db=twist), np.zeros(400, np.int16)])
    assert detect(x) == "9"


@pytest.mark.parametrize("twist", [-14.0, 14.0])
def test_excessive_twist_rejected(twist: float) -> None:
    x = generate_dtmf("9", 200, twist_db=twist)
    assert detect(x) == ""


@pytest.mark.parametrize("level", [-5.0, -20.0, -30.0])
def test_levels(level: float) -> None:
    assert detect(generate_dtmf_sequence("47", on_ms=80, level_dbfs=level)) == "47"


def test_too_quiet_rejected() -> None:
    assert detect(generate_dtmf_sequence("47", on_ms=80, level_dbfs=-55)) == ""


@pytest.mark.parametrize("snr_db", [20.0, 12.0])
def test_tones_in_white_noise(snr_db: float) -> None:
    tones = generate_dtmf_sequence("0123456789", on_ms=80, off_ms=80, level_dbfs=-15)
    noisy = mix(tones, white_noise(len(tones), -15 - snr_db + 3))  # +3: two tones
    assert detect(noisy) == "0123456789"


def test_noise_alone_gives_nothing() -> None:
    for level in (-40.0, -20.0, -6.0):
        assert detect(white_noise(8000 * 10, level, seed=int(-level))) == ""


def test_g711_coded_tones() -> None:
    x = generate_dtmf_sequence("*#09", on_ms=60, off_ms=60, level_dbfs=-20)
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        assert detect(g711.as_int16(dec(enc(x)))) == "*#09"


def test_speech_gives_no_digits(speech: dict[str, Int16Array]) -> None:
    for voice, pcm in speech.items():
        for gain in (1, 3):
            loud = np.clip(pcm.astype(np.int32) * gain, -32768, 32767).astype(np.int16)
            assert detect(loud) == "", voice
            # Not even a single window looks like a key (margin, not luck).
            assert detect(loud, config=DtmfConfig(hits_to_report=1)) == "", voice


def test_key_pressed_while_elder_talks(speech: dict[str, Int16Array]) -> None:
    talk = (speech["ko"].astype(np.int32) // 3).astype(np.int16)  # speech ≈ 10 dB below the keypad tone
    tone = np.concatenate([np.zeros(8000, np.int16), generate_dtmf("2", 100, level_dbfs=-12)])
    assert detect(mix(talk, tone)) == "2"


def test_digit_time_is_reported() -> None:
    x = np.concatenate([np.zeros(8000, np.int16), generate_dtmf("3", 100)])
    (digit,) = DtmfDetector().feed(x)
    assert 1000 <= digit.at_ms <= 1060


def test_merger_drops_same_key_from_other_source() -> None:
    m = DigitMerger(window_ms=200)
    assert m.accept("5", "rfc4733", 1000)
    assert not m.accept("5", "inband", 1040)
    assert m.accept("5", "rfc4733", 1500)  # a second press
    assert m.accept("6", "inband", 1520)
    assert not m.accept("x", "inband", 2000)  # unknown keys are ignored


def test_generator_rejects_unknown_key() -> None:
    with pytest.raises(ValueError, match="DTMF"):
        generate_dtmf("E")


@pytest.mark.parametrize(("level", "expected"), [(-44.0, "47"), (-46.0, "")])
def test_threshold_is_the_same_after_silence(level: float, expected: str) -> None:
    """Silence is skipped by the detector's quick energy test: a key press just above the level threshold
    (-42 dBFS for both tones: -45 per tone) is still found after it, one just below is not."""
    x = np.concatenate([np.zeros(8000, np.int16), generate_dtmf_sequence("47", on_ms=80, level_dbfs=level)])
    assert detect(x) == expected


def test_quick_energy_test_only_skips_windows_the_classifier_rejects() -> None:
    """Whenever the quick test calls a buffer quiet, the full classification finds no key in any window of it."""
    det = DtmfDetector()
    cfg = det.config
    rng = np.random.default_rng(7)
    quiet = 0
    for level in np.linspace(-60.0, -30.0, 61):
        for key in "159#":
            tone = generate_dtmf(key, 30, level_dbfs=float(level))[: cfg.window + cfg.hop]
            buf = np.clip(tone + rng.normal(0.0, 2.0, tone.size), -32768, 32767).astype(np.int16)
            if det._quiet(buf):
                quiet += 1
                assert all(det.classify(buf[i : i + cfg.window]) is None for i in (0, cfg.hop))
    assert 0 < quiet < 61 * 4  # both kinds of buffer were tried


@pytest.mark.parametrize("chunk", [160, 80, 240, 37])
def test_a_shared_frame_energy_gives_the_same_digits(chunk: int) -> None:
    """The call's line hands each frame's energy to the detector (computed once for the VAD too): the
    digits and their times are those found without it, tones near the threshold, after silence, in noise."""
    x = np.concatenate([np.zeros(4000, np.int16), generate_dtmf_sequence("1#9", on_ms=60, off_ms=50, level_dbfs=-44),
                        mix(generate_dtmf_sequence("2580", on_ms=70, off_ms=60), white_noise(8 * 780, -35)),
                        generate_dtmf_sequence("7", on_ms=45, level_dbfs=-46)])
    plain, shared = DtmfDetector(), DtmfDetector()
    got: tuple[list[DtmfDigit], list[DtmfDigit]] = ([], [])
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        got[0].extend(plain.feed(part))
        got[1].extend(shared.feed(part, g711.frame_energy(part)))
    assert got[0] == got[1]
    assert "".join(d.digit for d in got[0]) == "1#92580"
