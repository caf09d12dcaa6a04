"""How well a recording matches what was sent: normalised cross-correlation at the best time offset.

Used by interop tests and bench/calls.py ("what the callee heard matches our prompt", > 0.95).
Robust to a time offset (searched up to ``max_offset_ms`` either way, via FFT) and to G.711 coding
(µ-law/A-law keep ~38 dB SNR, a score of ~0.999); not to a gain change of sign or a sample-rate
mismatch (resample first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ivr.media.g711 import SAMPLE_RATE, Int16Array, as_int16


@dataclass(frozen=True, slots=True)
class MatchResult:
    score: float  # Pearson correlation over the overlap at the best offset, in [-1, 1]
    offset_ms: float  # where ``sent`` starts inside ``received`` (negative: received starts late)
    overlap_ms: float


def match_score(
    sent: bytes | Int16Array,
    received: bytes | Int16Array,
    rate: int = SAMPLE_RATE,
    max_offset_ms: int = 5000,
) -> MatchResult:
    """Best normalised correlation between ``sent`` and ``received``, over time offsets."""
    a = as_int16(sent).astype(np.float64)
    b = as_int16(received).astype(np.float64)
    if a.size == 0 or b.size == 0:
        return MatchResult(0.0, 0.0, 0.0)
    n = a.size + b.size - 1
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    # corr[k] = Σ b[i + k]·a[i] for lag k (negative lags wrap to the end).
    lags = np.concatenate([np.arange(0, b.size), np.arange(-(a.size - 1), 0)])
    values = np.concatenate([corr[: b.size], corr[size - (a.size - 1) :]])
    limit = max_offset_ms * rate // 1000
    allowed = np.abs(lags) <= limit
    # Normalise each lag by the energy of the overlapping parts (prefix sums).
    ca = np.concatenate([[0.0], np.cumsum(a * a)])
    cb = np.concatenate([[0.0], np.cumsum(b * b)])
    best = (-2.0, 0, 0)
    candidates = np.nonzero(allowed)[0]
    # Rank by raw correlation, then score the strongest few exactly (Pearson over the overlap).
    top = candidates[np.argsort(values[candidates])[-16:]]
    for idx in top:
        lag = int(lags[idx])
        a0, b0 = max(0, -lag), max(0, lag)
        length = min(a.size - a0, b.size - b0)
        if length <= rate // 50:
            continue
        seg_a = a[a0 : a0 + length]
        seg_b = b[b0 : b0 + length]
        if ca[a0 + length] - ca[a0] <= 0 or cb[b0 + length] - cb[b0] <= 0:
            continue
        sa = seg_a - seg_a.mean()
        sb = seg_b - seg_b.mean()
        denom = float(np.sqrt(np.dot(sa, sa) * np.dot(sb, sb)))
        score = float(np.dot(sa, sb)) / denom if denom > 0 else 0.0
        if score > best[0]:
            best = (score, lag, length)
    if best[0] < -1.0:
        return MatchResult(0.0, 0.0, 0.0)
    return MatchResult(best[0], best[1] * 1000 / rate, best[2] * 1000 / rate)
