"""Audio match score: offset search, G.711 loss, unrelated audio."""

from __future__ import annotations

import numpy as np

from ivr.media import g711
from ivr.media.g711 import Int16Array
from ivr.media.match import match_score

from .conftest import mix, white_noise


def test_same_audio_with_offset_and_g711(speech: dict[str, Int16Array]) -> None:
    sent = speech["cmn-latn-pinyin"]
    received = np.concatenate([np.zeros(1234, np.int16), sent, np.zeros(3000, np.int16)])
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        coded = g711.as_int16(dec(enc(received)))
        r = match_score(sent, coded)
        assert r.score > 0.99
        assert abs(r.offset_ms - 1234 / 8) < 0.2


def test_recording_that_starts_late(speech: dict[str, Int16Array]) -> None:
    sent = speech["ko"]
    received = sent[4000:]  # the peer answered half a second into the prompt
    r = match_score(sent, received)
    assert r.score > 0.99 and abs(r.offset_ms + 500) < 0.2


def test_line_noise_lowers_but_keeps_match(speech: dict[str, Int16Array]) -> None:
    sent = speech["ko"]
    noisy = mix(sent, white_noise(len(sent), -45))
    assert match_score(sent, noisy).score > 0.95


def test_unrelated_audio_scores_low(speech: dict[str, Int16Array]) -> None:
    assert match_score(speech["ko"], speech["cmn-latn-pinyin"]).score < 0.5
    assert match_score(speech["ko"], white_noise(16000, -20)).score < 0.2
    assert match_score(b"", speech["ko"]).score == 0.0
