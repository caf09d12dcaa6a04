"""G.711 µ-law / A-law codecs (ITU-T G.711, vectorised), resampling with soxr and 20 ms framing.

PCM everywhere in ``ivr`` is signed 16-bit little-endian mono (S16LE) unless a name says otherwise.
The encoders are bit-exact with the ITU-T G.191 reference (``ulaw_compress``/``alaw_compress``);
decoders are the G.711 tables. sox rounds differently at decision thresholds (≈1 % of inputs land one
step apart), which is inaudible and interoperable: a decoder only needs the tables.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import soxr

SAMPLE_RATE = 8000
FRAME_MS = 20
SAMPLES_PER_FRAME = SAMPLE_RATE * FRAME_MS // 1000  # 160
BYTES_PER_FRAME = SAMPLES_PER_FRAME * 2  # S16LE

Int16Array = npt.NDArray[np.int16]

_ULAW_BIAS = 0x84
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def as_int16(pcm: bytes | bytearray | memoryview | npt.NDArray[np.generic]) -> Int16Array:
    """View S16LE bytes (or an array) as int16 samples without copying where possible."""
    if isinstance(pcm, np.ndarray):
        return pcm.astype(np.int16, copy=False)
    return np.frombuffer(bytes(pcm) if isinstance(pcm, memoryview) else pcm, dtype="<i2").astype(
        np.int16, copy=False
    )


def frame_energy(samples: Int16Array) -> float:
    """Sum of squared samples (int16 units), exact: float64 holds any 20 ms frame's sum without rounding.
    The call's line computes it once per received frame for the DTMF detector and the VAD."""
    x = samples.astype(np.float64)
    return float(x @ x)


def _linear_to_ulaw_array(samples: Int16Array) -> npt.NDArray[np.uint8]:
    # ITU-T G.191 ``ulaw_compress``: magnitude of the 14-bit value (one's complement for negatives).
    lin = samples.astype(np.int32)
    mask = np.where(lin < 0, 0x7F, 0xFF)
    mag = np.minimum(np.where(lin < 0, (~lin) >> 2, lin >> 2) + (_ULAW_BIAS >> 2), 0x1FFF)
    seg = np.searchsorted(_SEG_UEND, mag, side="left")
    uval = (seg << 4) | ((mag >> (seg + 1)) & 0xF)
    return ((uval ^ mask) & 0xFF).astype(np.uint8)


def _ulaw_to_linear_array(codes: npt.NDArray[np.uint8]) -> Int16Array:
    u = (~codes.astype(np.int32)) & 0xFF
    t = ((u & 0x0F) << 3) + _ULAW_BIAS
    t = t << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _linear_to_alaw_array(samples: Int16Array) -> npt.NDArray[np.uint8]:
    pcm = samples.astype(np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_SEG_AEND, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    aval = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0x0F))
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


def _alaw_to_linear_array(codes: npt.NDArray[np.uint8]) -> Int16Array:
    a = codes.astype(np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


# Decoding is a 256-entry table look-up; encoding is vectorised arithmetic (65536-entry tables too).
_ULAW_DECODE = _ulaw_to_linear_array(np.arange(256, dtype=np.uint8))
_ALAW_DECODE = _alaw_to_linear_array(np.arange(256, dtype=np.uint8))
_ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
_ULAW_ENCODE = _linear_to_ulaw_array(_ALL_INT16)
_ALAW_ENCODE = _linear_to_alaw_array(_ALL_INT16)


def ulaw_encode(pcm: bytes | Int16Array) -> bytes:
    """S16LE PCM → G.711 µ-law (PCMU) bytes, one byte per sample."""
    s = as_int16(pcm).astype(np.int32) + 32768
    return _ULAW_ENCODE[s].tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """G.711 µ-law (PCMU) bytes → S16LE PCM."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def alaw_encode(pcm: bytes | Int16Array) -> bytes:
    """S16LE PCM → G.711 A-law (PCMA) bytes."""
    s = as_int16(pcm).astype(np.int32) + 32768
    return _ALAW_ENCODE[s].tobytes()


def alaw_decode(data: bytes) -> bytes:
    """G.711 A-law (PCMA) bytes → S16LE PCM."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5


def resample(pcm: bytes | Int16Array, from_rate: int, to_rate: int) -> bytes:
    """Resample S16LE mono PCM with soxr (high quality). Returns S16LE bytes."""
    samples = as_int16(pcm)
    if from_rate == to_rate or samples.size == 0:
        return samples.astype("<i2").tobytes()
    out = soxr.resample(samples, from_rate, to_rate, quality="HQ")
    return np.asarray(out, dtype=np.int16).astype("<i2").tobytes()


class StreamResampler:
    """Streaming soxr resampler for S16LE chunks (keeps filter state across chunks)."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self._stream = soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16", quality="HQ")

    def feed(self, pcm: bytes, last: bool = False) -> bytes:
        out = self._stream.resample_chunk(as_int16(pcm), last=last)
        return np.asarray(out, dtype=np.int16).astype("<i2").tobytes()


def frames(pcm: bytes, frame_bytes: int = BYTES_PER_FRAME, pad: bool = True) -> Iterator[bytes]:
    """Split PCM into fixed frames (20 ms at 8 kHz by default); the last one is zero-padded if ``pad``."""
    for start in range(0, len(pcm), frame_bytes):
        chunk = pcm[start : start + frame_bytes]
        if len(chunk) < frame_bytes:
            if not pad:
                return
            chunk = chunk + b"\x00" * (frame_bytes - len(chunk))
        yield chunk


def frame_count(pcm_len_bytes: int, frame_bytes: int = BYTES_PER_FRAME) -> int:
    """How many frames :func:`frames` yields with padding."""
    return -(-pcm_len_bytes // frame_bytes)


def silence(ms: int, rate: int = SAMPLE_RATE) -> bytes:
    """Digital silence of ``ms`` milliseconds as S16LE."""
    return b"\x00\x00" * (rate * ms // 1000)


def dbfs(pcm: bytes | Int16Array) -> float:
    """RMS level in dBFS (−inf → −120)."""
    s = as_int16(pcm).astype(np.float64)
    if s.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(s * s)))
    return 20.0 * float(np.log10(max(rms, 1e-6) / 32768.0))
