"""Answering machines and carrier announcements, classified conservatively (lean towards "human").

Two cheap signals, both pure functions over what the line already measured:
* before the answer: a 183 with early media that carries *speech-like* audio for a while (not a
  ring-back tone) is a carrier announcement ("您拨打的电话已关机"), when the call then fails;
* after the answer: one long unbroken stretch of speech at the start ("您好，我现在不方便接听，
  请在提示音后留言……") is a machine. A person says "喂？" and waits; a slow "喂……喂？谁呀" is
  several short utterances with pauses, each far below the threshold, so it stays human.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ivr.media.g711 import as_int16
from ivr.media.vad import frame_dbfs


class Answerer(enum.StrEnum):
    HUMAN = "human"
    MACHINE = "machine"
    ANNOUNCEMENT = "announcement"


@dataclass(frozen=True, slots=True)
class AmdConfig:
    listen_s: float = 1.2  # after the answer: wait this long for the callee's first word before greeting
    machine_speech_s: float = 4.5  # one unbroken utterance at least this long -> machine
    max_wait_s: float = 6.0  # never hold the greeting back longer than this
    announcement_speech_s: float = 1.5  # speech-like early media before a failed answer -> announcement


TONE_PURITY = 0.6  # share of a frame's energy within ±2 bins of its peak: a tone, not speech


def is_tone(frame: bytes) -> bool:
    """A steady tone (ring-back 450 Hz, busy tone): most energy sits in one narrow band."""
    x = as_int16(frame).astype(np.float64)
    if not x.any():
        return False
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    k = int(np.argmax(spec))
    return float(spec[max(0, k - 2):k + 3].sum()) >= TONE_PURITY * float(spec.sum())


def speech_like_seconds(frames: Iterable[bytes], min_dbfs: float = -45.0) -> float:
    """Seconds of audible, non-tonal audio (what an announcement or a voice is made of)."""
    n = 0
    for f in frames:
        if len(f) and frame_dbfs(as_int16(f)) >= min_dbfs and not is_tone(f):
            n += 1
    return n * 0.02


def classify_early_media(frames: Sequence[bytes], answered: bool, config: AmdConfig = AmdConfig()) -> Answerer:
    """Early media before the answer: only an unanswered call with a spoken message is an announcement."""
    if answered:
        return Answerer.HUMAN  # some carriers answer after a "please hold": lean human
    return Answerer.ANNOUNCEMENT if speech_like_seconds(frames) >= config.announcement_speech_s else Answerer.HUMAN


def classify_greeting(utterances: Sequence[tuple[float, float]], ongoing_since: float | None, now: float,
                      config: AmdConfig = AmdConfig()) -> Answerer:
    """After the answer: ``utterances`` are (start, end) times of finished speech, ``ongoing_since`` the
    start of speech still going on. Machine only for one unbroken stretch ≥ ``machine_speech_s``."""
    longest = max((e - s for s, e in utterances), default=0.0)
    if ongoing_since is not None:
        longest = max(longest, now - ongoing_since)
    return Answerer.MACHINE if longest >= config.machine_speech_s else Answerer.HUMAN
