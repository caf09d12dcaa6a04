"""In-band DTMF detection (Goertzel, streaming over 20 ms frames) and a DTMF tone generator.

RFC 4733 telephone-events are de-duplicated by ``ivr.media.rtp`` itself (one digit per event
timestamp). Some peers send a key both ways at once (telephone-event *and* the tones in the audio);
:class:`DigitMerger` keeps one digit when both report the same key within a short window.

Detection: a 20 ms window (160 samples) hops every 10 ms. A window is a *hit* for a key when
  * its level is above ``min_level_dbfs``,
  * one row and one column tone stand out of their group by ``group_margin_db``,
  * the twist (row vs column level) is within the normal/reverse limits,
  * the two tones carry at least ``purity`` of the window's energy (speech and noise spread theirs),
  * the second harmonic of the column tone is weak (voiced speech is rich in harmonics).
A key is reported once after ``hits_to_report`` consecutive hits (2 → tones ≥ 40 ms are caught,
< 25 ms are rejected as ITU Q.24 asks) and not again until ``gap_windows`` windows without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ivr.media.g711 import SAMPLE_RATE, Int16Array, as_int16, frame_energy

ROW_FREQS: tuple[float, ...] = (697.0, 770.0, 852.0, 941.0)
COL_FREQS: tuple[float, ...] = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS: tuple[tuple[str, ...], ...] = (
    ("1", "2", "3", "A"),
    ("4", "5", "6", "B"),
    ("7", "8", "9", "C"),
    ("*", "0", "#", "D"),
)
VALID_DIGITS = frozenset("0123456789*#ABCD")


@dataclass(frozen=True, slots=True)
class DtmfConfig:
    """Thresholds of the detector (defaults tuned with tests/unit/media/test_dtmf.py)."""

    window: int = 160  # samples (20 ms at 8 kHz)
    hop: int = 80  # samples (10 ms)
    min_level_dbfs: float = -42.0  # sum of both tones; ITU: accept ≥ −25 dBm0 ≈ −28 dBFS per tone
    group_margin_db: float = 8.0
    normal_twist_db: float = 8.0  # column weaker than row
    reverse_twist_db: float = 8.0  # row weaker than column
    purity: float = 0.70
    harmonic_ratio_db: float = 12.0  # fundamental must exceed its 2nd harmonic by this much
    hits_to_report: int = 2
    gap_windows: int = 2


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One key press detected in the audio; ``at_ms`` is the offset since the detector started."""

    digit: str
    at_ms: int


class DtmfDetector:
    """Streaming Goertzel DTMF detector: ``feed()`` any amount of S16LE 8 kHz PCM, get digits."""

    def __init__(self, config: DtmfConfig | None = None, rate: int = SAMPLE_RATE) -> None:
        self.config = config or DtmfConfig()
        self.rate = rate
        cfg = self.config
        freqs = ROW_FREQS + COL_FREQS + tuple(2 * f for f in ROW_FREQS + COL_FREQS)
        # Goertzel at exact (non-integer bin) frequencies as a matrix product: |Σ x[n]·e^{-jωn}|².
        n = np.arange(cfg.window)
        w = 2.0 * np.pi * np.asarray(freqs)[:, None] / rate
        window = np.hanning(cfg.window + 2)[1:-1]
        self._window = window
        self._cos = np.cos(w * n) * window
        self._sin = np.sin(w * n) * window
        # |X|² of a pure tone is A²/4·(Σw)² while its windowed energy is A²/2·Σw²: this factor turns
        # |X|² into "energy of that tone in the windowed block".
        self._norm = 2.0 * float(np.sum(window**2)) / float(np.sum(window)) ** 2
        # the least sum of squares (int16 units) of a window at ``min_level_dbfs``, a hair below so that
        # rounding never lets the quick test reject a window ``classify`` would have looked at
        self._min_energy = 10 ** (cfg.min_level_dbfs / 10) / 2.0 * cfg.window * 32768.0**2 * 0.999
        self._buf: Int16Array = np.zeros(0, dtype=np.int16)
        self._buf_energy_max = 0.0  # at least the sum of squares of what is in ``_buf``
        self._consumed = 0  # samples that left the buffer
        self._run_key: str | None = None
        self._run = 0
        self._active: str | None = None
        self._miss = 0

    def reset(self) -> None:
        self._buf = np.zeros(0, dtype=np.int16)
        self._buf_energy_max = 0.0
        self._run_key, self._run, self._active, self._miss = None, 0, None, 0

    def feed(self, pcm: bytes | Int16Array, energy: float | None = None) -> list[DtmfDigit]:
        """Digits whose tones end in ``pcm``. ``energy``: its sum of squared samples when the caller has
        it already (``frame_energy``; the call's line shares one per frame with the VAD)."""
        cfg = self.config
        new = as_int16(pcm)
        if energy is None:
            energy = frame_energy(new)
        # Quiet buffer (the usual frame: the elder is silent): every window in it is quieter than a key
        # press, so no window can be a hit and only the debouncer sees them. The test uses an upper
        # bound of what is left over from the last feed, so it needs no numpy work of its own (this
        # runs for every 20 ms frame of every call; classifying costs ~8 µs per window).
        size = self._buf.size + new.size
        if size >= cfg.window and self._buf_energy_max + energy < self._min_energy:
            windows = (size - cfg.window) // cfg.hop + 1
            left = size - windows * cfg.hop
            if left <= new.size:
                self._skip_quiet(windows)
                self._buf = new[new.size - left :]
                self._buf_energy_max = energy  # the leftover is part of this feed
                return []
        self._buf = np.concatenate([self._buf, new])
        out = self._classify_buffer()
        # what is left is the end of the buffer: within this feed's samples, or of unknown energy
        self._buf_energy_max = energy if self._buf.size <= new.size else math.inf
        return out

    def _classify_buffer(self) -> list[DtmfDigit]:
        cfg = self.config
        out: list[DtmfDigit] = []
        if self._buf.size >= cfg.window and self._quiet(self._buf):
            windows = (self._buf.size - cfg.window) // cfg.hop + 1
            self._skip_quiet(windows)
            self._buf = self._buf[windows * cfg.hop :]
            return out
        while self._buf.size >= cfg.window:
            key = self.classify(self._buf[: cfg.window])
            digit = self._debounce(key)
            if digit is not None:
                at = (self._consumed + cfg.window) * 1000 // self.rate
                out.append(DtmfDigit(digit, at))
            self._buf = self._buf[cfg.hop :]
            self._consumed += cfg.hop
        return out

    def _skip_quiet(self, windows: int) -> None:
        """``windows`` windows too quiet to be a key: only the debouncer sees them (never a digit)."""
        for _ in range(windows):
            self._debounce(None)
        self._consumed += windows * self.config.hop

    def _quiet(self, samples: Int16Array) -> bool:
        """All of ``samples`` together carry less energy than one window at ``min_level_dbfs``."""
        return frame_energy(samples) < self._min_energy

    def _debounce(self, key: str | None) -> str | None:
        cfg = self.config
        if key is not None and key == self._run_key:
            self._run += 1
        else:
            self._run_key, self._run = key, 1 if key is not None else 0
        if key is None or key != self._active:
            self._miss += 1
            if self._miss >= cfg.gap_windows:
                self._active = None
        else:
            self._miss = 0
        if key is not None and self._active is None and self._run >= cfg.hits_to_report:
            self._active, self._miss = key, 0
            return key
        return None

    def classify(self, block: Int16Array) -> str | None:
        """The key whose tones fill this one window, or None."""
        cfg = self.config
        x = block.astype(np.float64) / 32768.0
        energy = float(np.dot(x, x))
        if energy <= 0.0:
            return None
        level_dbfs = 10.0 * np.log10(energy / len(x) * 2.0)  # a full-scale sine is 0 dBFS
        if level_dbfs < cfg.min_level_dbfs:
            return None
        re = self._cos @ x
        im = self._sin @ x
        power = (re * re + im * im) * self._norm
        rows, cols, harm = power[:4], power[4:8], power[8:]
        r = int(np.argmax(rows))
        c = int(np.argmax(cols))
        pr, pc = float(rows[r]), float(cols[c])
        if pr <= 0 or pc <= 0:
            return None
        margin = 10 ** (cfg.group_margin_db / 10)
        if np.any(np.delete(rows, r) * margin > pr) or np.any(np.delete(cols, c) * margin > pc):
            return None
        twist = 10.0 * np.log10(pc / pr)
        if twist < -cfg.normal_twist_db or twist > cfg.reverse_twist_db:
            return None
        xw = x * self._window
        if (pr + pc) < cfg.purity * float(np.dot(xw, xw)):
            return None
        hr = 10 ** (cfg.harmonic_ratio_db / 10)
        # Row harmonics (1394-1882 Hz) sit next to column tones, so only column harmonics are checked.
        if harm[4 + c] * hr > pc:
            return None
        return KEYS[r][c]


class DigitMerger:
    """Drops a digit that another source (RFC 4733 vs in-band) already reported within ``window_ms``."""

    def __init__(self, window_ms: int = 200) -> None:
        self.window_ms = window_ms
        self._last: tuple[str, str, int] | None = None  # (digit, source, at_ms)

    def accept(self, digit: str, source: str, at_ms: int) -> bool:
        """True if this digit is new; ``source`` is e.g. "rfc4733" or "inband"."""
        if digit not in VALID_DIGITS:
            return False  # an unknown key is ignored, not an error
        last = self._last
        if last is not None and last[0] == digit and last[1] != source and at_ms - last[2] <= self.window_ms:
            return False
        self._last = (digit, source, at_ms)
        return True


def generate_dtmf(
    digit: str,
    duration_ms: int = 100,
    rate: int = SAMPLE_RATE,
    level_dbfs: float = -10.0,
    twist_db: float = 0.0,
) -> Int16Array:
    """One DTMF tone burst: ``level_dbfs`` per tone, column tone ``twist_db`` louder than the row one."""
    where = {key: (r, c) for r, row in enumerate(KEYS) for c, key in enumerate(row)}
    if digit not in where:
        raise ValueError(f"不是按键：{digit!r} (not a DTMF key)")
    r, c = where[digit]
    t = np.arange(rate * duration_ms // 1000) / rate
    amp_row = 32767 * 10 ** (level_dbfs / 20)
    amp_col = amp_row * 10 ** (twist_db / 20)
    x = amp_row * np.sin(2 * np.pi * ROW_FREQS[r] * t) + amp_col * np.sin(2 * np.pi * COL_FREQS[c] * t)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def generate_dtmf_sequence(
    digits: str, on_ms: int = 100, off_ms: int = 100, rate: int = SAMPLE_RATE, level_dbfs: float = -10.0
) -> Int16Array:
    """Tones for ``digits`` separated by silence (with silence before and after)."""
    gap = np.zeros(rate * off_ms // 1000, dtype=np.int16)
    parts: list[Int16Array] = [gap]
    for d in digits:
        parts += [generate_dtmf(d, on_ms, rate, level_dbfs), gap]
    return np.concatenate(parts)
