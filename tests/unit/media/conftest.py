"""Shared audio fixtures: speech rendered by the real espeak-ng (no recorded data in the repo)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from ivr.media.g711 import Int16Array, as_int16, resample

SPEECH_TEXTS = {
    "cmn-latn-pinyin": "ni3 hao3, wo3 shi4 tan4 fang3 guan1 ai4 fu2 wu4. qing3 an4 yi1 jian4 hui2 da2.",
    "ko": "네 괜찮아요. 아니요. 도와주세요. 요즘 몸은 어떠세요?",
}


def espeak_8k(text: str, voice: str, rate: int = 150) -> Int16Array:
    """Render ``text`` with espeak-ng and resample it to 8 kHz int16."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(rate), "--stdout", text], capture_output=True, check=True
    ).stdout
    # espeak-ng writes a 22050 Hz mono 16-bit WAV; its header is 44 bytes.
    return as_int16(resample(wav[44:], 22050, 8000))


@pytest.fixture(scope="session")
def speech() -> dict[str, Int16Array]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    return {voice: espeak_8k(text, voice) for voice, text in SPEECH_TEXTS.items()}


def white_noise(n: int, level_dbfs: float, seed: int = 7) -> Int16Array:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 32768 * 10 ** (level_dbfs / 20), n), -32768, 32767).astype(np.int16)


def mix(*parts: Int16Array) -> Int16Array:
    n = max(len(p) for p in parts)
    acc = np.zeros(n, dtype=np.int64)
    for p in parts:
        acc[: len(p)] += p.astype(np.int64)
    return np.clip(acc, -32768, 32767).astype(np.int16)
