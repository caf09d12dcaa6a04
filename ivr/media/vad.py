"""End-of-speech and barge-in detection: energy against an adaptive noise floor, 20 ms frames.

The noise floor is the 10th percentile of the frame levels of the last few seconds ("minimum
statistics"): speech has gaps between syllables, so the floor follows the line, not the voice, and a
steady hiss or hum is absorbed within ``floor_window_ms``. Speech starts when ``start_ms`` of frames
(one dip allowed) are ``start_margin_db`` above the floor, above ``min_speech_dbfs`` and spectrally
voice-like (flatness: a hiss or a noise burst starting on the line is not speech); it ends after
``end_silence_ms`` of frames below the (lower) hangover threshold, or at ``max_utterance_ms``.
Elders speak slowly and pause: the default trailing silence is 700 ms. No webrtcvad: not installed
and not needed for a telephone line (see tests/unit/media/test_vad.py for the measured behaviour).
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from ivr.media.g711 import BYTES_PER_FRAME, FRAME_MS, Int16Array, as_int16, frame_energy


class EndReason(enum.StrEnum):
    SILENCE = "silence"
    MAX_LENGTH = "max_length"
    FLUSH = "flush"  # the caller stopped listening (hang-up, timeout) while speech was going on


@dataclass(frozen=True, slots=True)
class VadConfig:
    start_margin_db: float = 10.0
    hangover_margin_db: float = 6.0
    min_speech_dbfs: float = -48.0
    min_floor_dbfs: float = -70.0
    start_ms: int = 100
    end_silence_ms: int = 700
    max_utterance_ms: int = 15_000
    preroll_ms: int = 300
    floor_window_ms: int = 3_000
    floor_percentile: float = 10.0
    max_flatness: float = 0.40  # a start frame must look like voice, not hiss (white noise ≈ 0.56)

    @classmethod
    def barge_in(cls) -> VadConfig:
        """Stricter start for talking over a prompt: 240 ms of clear speech, 12 dB over the floor."""
        return cls(start_margin_db=12.0, start_ms=240)


@dataclass(frozen=True, slots=True)
class SpeechStart:
    at_ms: int  # offset of the first speech frame since the detector started


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    at_ms: int  # offset of the last speech frame's end
    pcm: bytes  # S16LE 8 kHz: pre-roll + utterance (+ trailing silence up to 200 ms)
    speech_ms: int  # from speech start to last speech frame
    reason: EndReason


VadEvent = SpeechStart | SpeechEnd


def spectral_flatness(frame: Int16Array) -> float:
    """Geometric / arithmetic mean of the power spectrum (300-3400 Hz): ~0.56 white noise, ≤0.3 voice."""
    x = frame.astype(np.float64) * np.hanning(len(frame))
    spec = np.abs(np.fft.rfft(x)) ** 2
    n = len(frame)
    band = spec[max(1, 300 * n // 8000) : 3400 * n // 8000] + 1e-9
    return float(np.exp(np.mean(np.log(band))) / np.mean(band))


def frame_dbfs(frame: Int16Array) -> float:
    return energy_dbfs(frame_energy(frame) / max(len(frame), 1))


def energy_dbfs(mean_square: float) -> float:
    return 10.0 * math.log10(max(mean_square, 1e-3) / (32768.0**2))  # math: numpy's scalar log10 costs µs


class SpeechDetector:
    """Feed 20 ms S16LE frames (any length is buffered into frames); get speech start/end events."""

    def __init__(self, config: VadConfig | None = None, frame_bytes: int = BYTES_PER_FRAME) -> None:
        self.config = config or VadConfig()
        self.frame_bytes = frame_bytes
        cfg = self.config
        self._start_frames = max(1, cfg.start_ms // FRAME_MS)
        self._end_frames = max(1, cfg.end_silence_ms // FRAME_MS)
        self._max_frames = max(1, cfg.max_utterance_ms // FRAME_MS)
        self._levels: deque[float] = deque(maxlen=max(5, cfg.floor_window_ms // FRAME_MS))
        self._sorted: list[float] = []  # the same levels, sorted: the floor without a sort per frame
        self._recent: deque[bytes] = deque(maxlen=max(self._start_frames + 1, cfg.preroll_ms // FRAME_MS))
        self._recent_loud: deque[bool] = deque(maxlen=self._start_frames + 1)
        self._pending = b""
        self._frame_no = 0
        self._in_speech = False
        self._utt: list[bytes] = []
        self._utt_start = 0
        self._last_speech = 0
        self._quiet = 0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def noise_floor_dbfs(self) -> float:
        """``floor_percentile`` of the recent levels (numpy's linear interpolation), at least ``min_floor_dbfs``."""
        s = self._sorted
        if not s:
            return self.config.min_floor_dbfs
        pos = self.config.floor_percentile / 100.0 * (len(s) - 1)
        lo = int(pos)
        frac = pos - lo
        floor = s[lo] if frac == 0.0 or lo + 1 >= len(s) else s[lo] + (s[lo + 1] - s[lo]) * frac
        return max(floor, self.config.min_floor_dbfs)

    @property
    def now_ms(self) -> int:
        """Audio fed so far (whole frames), in ms: the time base of ``at_ms`` in the events."""
        return self._frame_no * FRAME_MS

    @property
    def trailing_silence_ms(self) -> int:
        """How long the current utterance has been quiet (0 when not in speech or still voiced)."""
        return self._quiet * FRAME_MS if self._in_speech else 0

    def end_now(self) -> SpeechEnd | None:
        """End the current utterance at once as if its trailing silence were complete (the caller
        decided earlier, e.g. the recogniser already has a complete answer); None if not in speech."""
        if not self._in_speech:
            return None
        return self._end(EndReason.SILENCE)

    def feed(self, pcm: bytes, energy: float | None = None) -> list[VadEvent]:
        """Events of the frames completed by ``pcm``. ``energy``: the ``frame_energy`` of ``pcm`` when the
        caller has it (used when ``pcm`` is exactly one frame and nothing is pending: no numpy work then
        unless the frame is loud enough to be speech)."""
        if energy is not None and not self._pending and len(pcm) == self.frame_bytes:
            ev = self._frame(pcm, energy)
            return [] if ev is None else [ev]
        data = self._pending + pcm
        events: list[VadEvent] = []
        n = len(data) - len(data) % self.frame_bytes
        for start in range(0, n, self.frame_bytes):
            ev = self._frame(data[start : start + self.frame_bytes])
            if ev is not None:
                events.append(ev)
        self._pending = data[n:]
        return events

    def flush(self) -> SpeechEnd | None:
        """End an utterance in progress (the caller stops listening); None if there is none."""
        if not self._in_speech:
            return None
        return self._end(EndReason.FLUSH)

    def reset(self) -> None:
        """Forget any utterance in progress but keep the noise floor (e.g. between questions)."""
        self._in_speech = False
        self._utt = []
        self._quiet = 0
        self._recent.clear()
        self._recent_loud.clear()
        self._pending = b""

    def _frame(self, frame: bytes, energy: float | None = None) -> VadEvent | None:
        cfg = self.config
        if energy is None:
            energy = frame_energy(as_int16(frame))
        level = energy_dbfs(energy / (len(frame) // 2))
        floor = self.noise_floor_dbfs
        levels = self._levels
        if len(levels) == levels.maxlen:
            old = levels[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        levels.append(level)
        bisect.insort(self._sorted, level)
        self._frame_no += 1
        ms_now = self._frame_no * FRAME_MS
        if not self._in_speech:
            loud = (
                level >= floor + cfg.start_margin_db
                and level >= cfg.min_speech_dbfs
                and spectral_flatness(as_int16(frame)) <= cfg.max_flatness
            )
            self._recent.append(frame)
            self._recent_loud.append(loud)
            if loud and sum(self._recent_loud) >= self._start_frames:
                self._in_speech = True
                self._utt = list(self._recent)
                first_loud = len(self._recent_loud) - list(self._recent_loud).index(True)
                self._utt_start = ms_now - first_loud * FRAME_MS
                self._last_speech = ms_now
                self._quiet = 0
                self._recent.clear()
                self._recent_loud.clear()
                return SpeechStart(at_ms=self._utt_start)
            return None
        self._utt.append(frame)
        voiced = level >= floor + cfg.hangover_margin_db and level >= cfg.min_speech_dbfs - 6
        if voiced:
            self._quiet = 0
            self._last_speech = ms_now
        else:
            self._quiet += 1
        if self._quiet >= self._end_frames:
            return self._end(EndReason.SILENCE)
        if len(self._utt) >= self._max_frames:
            return self._end(EndReason.MAX_LENGTH)
        return None

    def _end(self, reason: EndReason) -> SpeechEnd:
        keep_tail = min(self._quiet, 200 // FRAME_MS)
        frames = self._utt[: len(self._utt) - self._quiet + keep_tail] if self._quiet else self._utt
        event = SpeechEnd(
            at_ms=self._last_speech,
            pcm=b"".join(frames),
            speech_ms=self._last_speech - self._utt_start,
            reason=reason,
        )
        self._in_speech = False
        self._utt = []
        self._quiet = 0
        return event


class BargeInDetector:
    """Says when the elder starts talking over a prompt (the runner then stops the prompt).

    There is no echo of our own prompt on these lines (no loop-back through a hybrid here); if a
    trunk does echo, raise ``start_margin_db`` or feed only while no prompt frames are echoed.
    """

    def __init__(self, config: VadConfig | None = None) -> None:
        self._vad = SpeechDetector(config or VadConfig.barge_in())

    def feed(self, pcm: bytes, energy: float | None = None) -> bool:
        """True once speech has started in what was fed (then call :meth:`reset` for the next prompt)."""
        return any(isinstance(e, SpeechStart) for e in self._vad.feed(pcm, energy)) or self._vad.in_speech

    def reset(self) -> None:
        self._vad.reset()
