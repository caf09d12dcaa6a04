"""Audio helpers for the SIP peers (demo village, interop tests): espeak-ng speech WAVs at 8 kHz and a cross-correlation score."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np


def speech_wav(text: str, path: Path, *, voice: str = "en", pad_to_s: float = 0.0, lead_s: float = 0.0) -> Path:
    """espeak-ng + sox -> 8 kHz mono S16LE WAV (what baresip's aufile wants), silence-padded."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, capture_output=True)
    cmd = ["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer", str(path)]
    if lead_s:
        cmd += ["pad", f"{lead_s}", "0"]
    subprocess.run(cmd, check=True, capture_output=True)
    raw.unlink(missing_ok=True)
    if pad_to_s:
        dur = wav_duration(path)
        if dur < pad_to_s:
            tmp = path.with_suffix(".pad.wav")
            subprocess.run(["sox", str(path), str(tmp), "pad", "0", f"{pad_to_s - dur:.3f}"], check=True,
                           capture_output=True)
            tmp.replace(path)
    return path


def silence_wav(path: Path, seconds: float) -> Path:
    write_wav(path, bytes(int(seconds * 8000) * 2))
    return path


def read_wav(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (8000, 1, 2):
            raise ValueError(f"{path}: 需要 8 kHz 单声道 16 位 WAV")
        return w.readframes(w.getnframes())


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm)


def wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def best_correlation(reference: bytes, heard: bytes) -> float:
    """Peak normalised cross-correlation of ``reference`` found anywhere inside ``heard`` (0..1).

    Both are 8 kHz S16LE. G.711 round trips score about 0.99; an unrelated signal well under 0.5.
    """
    ref = np.frombuffer(reference, dtype="<i2").astype(np.float64)
    sig = np.frombuffer(heard, dtype="<i2").astype(np.float64)
    if len(ref) == 0 or len(sig) < len(ref):
        sig = np.concatenate([sig, np.zeros(max(0, len(ref) - len(sig)))])
    n = len(sig) + len(ref)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(sig, size) * np.conj(np.fft.rfft(ref, size)), size)[: len(sig) - len(ref) + 1]
    csum = np.concatenate([[0.0], np.cumsum(sig * sig)])
    window_energy = csum[len(ref):] - csum[: len(sig) - len(ref) + 1]
    ref_energy = float(np.dot(ref, ref))
    denom = np.sqrt(np.maximum(window_energy, 1e-9) * max(ref_energy, 1e-9))
    return float(np.max(corr / denom))


