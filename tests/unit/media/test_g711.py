"""G.711 codecs against known ITU values and sox as an independent reference; resampling; framing."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ivr.media import g711

ALL = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


def test_known_ulaw_values() -> None:
    enc = g711.ulaw_encode(np.array([0, 32767, -32768], dtype=np.int16))
    assert enc == bytes([0xFF, 0x80, 0x00])
    dec = g711.as_int16(g711.ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xF0, 0x70])))
    # G.711 table: 0xFF/0x7F are ±0, 0x80/0x00 are ±8031 (×4 = 32124 in 16-bit scaling).
    assert dec.tolist() == [0, 0, 32124, -32124, 120, -120]


def test_known_alaw_values() -> None:
    enc = g711.alaw_encode(np.array([0, 32767, -32768], dtype=np.int16))
    assert enc == bytes([0xD5, 0xAA, 0x2A])
    dec = g711.as_int16(g711.alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A])))
    assert dec.tolist() == [8, -8, 32256, -32256]


def _g191_ulaw_compress(lin: int) -> int:
    """Scalar transcription of ITU-T G.191 ``ulaw_compress`` (independent reference)."""
    absno = ((~lin) >> 2) + 33 if lin < 0 else (lin >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    out = ((0x8 - segno) << 4) | (0xF - ((absno >> segno) & 0xF))
    return out | 0x80 if lin >= 0 else out


def _g191_alaw_compress(lin: int) -> int:
    """Scalar transcription of ITU-T G.191 ``alaw_compress``."""
    ix = ((~lin) >> 4) if lin < 0 else (lin >> 4)
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if lin >= 0:
        ix |= 0x80
    return ix ^ 0x55


@pytest.mark.parametrize(
    ("reference", "encode"), [(_g191_ulaw_compress, g711.ulaw_encode), (_g191_alaw_compress, g711.alaw_encode)]
)
def test_encode_is_bit_exact_with_g191_for_every_sample(reference: object, encode: object) -> None:
    ref = bytes(reference(int(v)) for v in ALL)  # type: ignore[operator]
    assert encode(ALL) == ref  # type: ignore[operator]


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
@pytest.mark.parametrize(
    ("encoding", "encode", "decode"),
    [("u-law", g711.ulaw_encode, g711.ulaw_decode), ("a-law", g711.alaw_encode, g711.alaw_decode)],
)
def test_encode_agrees_with_sox_within_one_step(encoding: str, encode: object, decode: object) -> None:
    ref = subprocess.run(
        ["sox", "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1", "-L", "-",
         "-t", "raw", "-e", encoding, "-b", "8", "-"],
        input=ALL.astype("<i2").tobytes(), capture_output=True, check=True,
    ).stdout
    ours = encode(ALL)  # type: ignore[operator]
    same = np.frombuffer(ours, np.uint8) == np.frombuffer(ref, np.uint8)
    assert same.mean() > 0.98  # sox rounds at thresholds; everything else is identical
    x = ALL.astype(np.int32)
    err_ours = np.abs(g711.as_int16(decode(ours)).astype(np.int32) - x)  # type: ignore[operator]
    err_sox = np.abs(g711.as_int16(decode(ref)).astype(np.int32) - x)  # type: ignore[operator]
    assert err_ours.max() <= err_sox.max()


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
@pytest.mark.parametrize(("encoding", "decode"), [("u-law", g711.ulaw_decode), ("a-law", g711.alaw_decode)])
def test_decode_matches_sox_for_every_code(encoding: str, decode: object) -> None:
    codes = bytes(range(256))
    ref = subprocess.run(
        ["sox", "-t", "raw", "-r", "8000", "-e", encoding, "-b", "8", "-c", "1", "-",
         "-t", "raw", "-e", "signed", "-b", "16", "-L", "-"],
        input=codes, capture_output=True, check=True,
    ).stdout
    assert decode(codes) == ref  # type: ignore[operator]


@pytest.mark.parametrize(
    ("encode", "decode"), [(g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)]
)
def test_code_round_trip_is_identity_and_monotonic(encode: object, decode: object) -> None:
    codes = bytes(range(256))
    values = g711.as_int16(decode(codes))  # type: ignore[operator]
    # Encoding a decoded value yields a code that decodes to the same value (−0/+0 may swap).
    again = g711.as_int16(decode(encode(values)))  # type: ignore[operator]
    assert again.tolist() == values.tolist()
    # The quantiser is monotonic over the whole int16 range.
    dec_all = g711.as_int16(decode(encode(ALL))).astype(np.int32)  # type: ignore[operator]
    assert np.all(np.diff(dec_all) >= 0)


@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=400))
def test_quantisation_error_is_bounded(samples: list[int]) -> None:
    x = np.array(samples, dtype=np.int16)
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        y = g711.as_int16(dec(enc(x))).astype(np.int32)
        err = np.abs(y - x.astype(np.int32))
        # Logarithmic quantiser: step size grows with magnitude, at most ~1/16 of it (+ small floor).
        assert np.all(err <= np.abs(x.astype(np.int32)) // 16 + 1100)


def test_sine_snr_after_coding() -> None:
    t = np.arange(8000) / 8000
    x = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        y = g711.as_int16(dec(enc(x))).astype(np.float64)
        noise = y - x
        snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(noise**2))
        assert snr > 33  # G.711 gives ~38 dB SNR for mid-level tones


def test_resample_keeps_frequency_and_length() -> None:
    t = np.arange(22050) / 22050
    x = (10000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    y = g711.as_int16(g711.resample(x, 22050, 8000))
    assert abs(len(y) - 8000) <= 2
    spectrum = np.abs(np.fft.rfft(y.astype(np.float64)))
    peak_hz = np.argmax(spectrum) * 8000 / len(y)
    assert abs(peak_hz - 1000) < 5


def test_stream_resampler_matches_length() -> None:
    r = g711.StreamResampler(16000, 8000)
    out = b"".join(r.feed(b"\x01\x00" * 320) for _ in range(50)) + r.feed(b"", last=True)
    assert abs(len(out) // 2 - 8000) <= 2


def test_frames_pad_last() -> None:
    pcm = b"\x01\x00" * 400
    chunks = list(g711.frames(pcm))
    assert [len(c) for c in chunks] == [320, 320, 320]
    assert chunks[-1][160:] == b"\x00" * 160
    assert g711.frame_count(len(pcm)) == 3
    assert len(list(g711.frames(pcm, pad=False))) == 2
    assert g711.SAMPLES_PER_FRAME == 160
