"""Prompt rendering with the real espeak-ng: format, levels (measured with sox stats), caching."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ivr.media.g711 import as_int16
from ivr.tts import PromptCache, PromptSpec, TtsError, speech_wav, write_wav
from storage.enums import Locale

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

ZH = "您好，这里是探访关爱服务。请问您身体好吗？好请按1，不好请按2。"
KO = "안녕하세요. 요즘 몸은 괜찮으세요?"


def sox_stats(path: Path) -> dict[str, float]:
    out = subprocess.run(["sox", str(path), "-n", "stats"], capture_output=True, text=True, check=True).stderr
    stats: dict[str, float] = {}
    for line in out.splitlines():
        m = re.match(r"^(Pk lev dB|RMS lev dB|Flat factor|Pk count|Length s)\s+(-?[\d.]+)", line)
        if m:
            stats[m.group(1)] = float(m.group(2))
    return stats


async def test_render_zh_and_ko_for_the_phone(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path / "prompts")
    cache.check()
    for text, loc in ((ZH, Locale.ZH), (KO, Locale.KO)):
        pcm = await cache.render(text, loc)
        assert len(pcm) % 2 == 0
        seconds = len(pcm) / 16000
        assert 1.5 < seconds < 20
        wav = write_wav(tmp_path / f"{loc.nlu}.wav", pcm)
        st = sox_stats(wav)
        # Loud but not clipped: peak −1 dBFS, average level well above a raw espeak render.
        assert -1.6 <= st["Pk lev dB"] <= -0.5
        assert st["RMS lev dB"] > -18
        assert st["Flat factor"] == 0  # no flat-topped (clipped) runs
        assert abs(st["Length s"] - seconds) < 0.01


async def test_slower_louder_repeat_variant(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    normal = await cache.render(ZH, "zh")
    again = await cache.render(ZH, "zh", repeat=True)
    assert len(again) > len(normal) * 1.15  # slower
    a = write_wav(tmp_path / "n.wav", normal)
    b = write_wav(tmp_path / "r.wav", again)
    assert sox_stats(b)["RMS lev dB"] > sox_stats(a)["RMS lev dB"] + 0.5  # louder
    quiet = await cache.render(ZH, "zh", volume=0.5)
    assert sox_stats(write_wav(tmp_path / "q.wav", quiet))["Pk lev dB"] < -6


async def test_cache_on_disk_and_in_memory(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    first = await cache.render(KO, Locale.KO, rate=140, volume=1.2)
    files = list(tmp_path.rglob("*.s16"))  # noqa: ASYNC240
    assert len(files) == 1 and files[0].read_bytes() == first
    assert list(tmp_path.rglob("*.part")) == []  # noqa: ASYNC240
    # A new cache object (another process) reads the file instead of synthesising.
    other = PromptCache(tmp_path, espeak="/nonexistent/espeak-ng")
    assert await other.render(KO, Locale.KO, rate=140, volume=1.2) == first
    assert other.cached(KO, Locale.KO, rate=140, volume=1.2) == first
    assert other.cached(KO, Locale.KO, rate=141, volume=1.2) is None
    t0 = time.perf_counter()
    assert await cache.render(KO, Locale.KO, rate=140, volume=1.2) == first
    assert time.perf_counter() - t0 < 1  # sanity only; bench/tts.py measures


async def test_concurrent_renders_of_one_prompt(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    results = await asyncio.gather(*(cache.render(ZH, Locale.ZH) for _ in range(8)))
    assert len(set(results)) == 1
    assert len(list(tmp_path.rglob("*.s16"))) == 1  # noqa: ASYNC240
    # Two cache objects (like two processes) racing on the same file also end with one good file.
    c1, c2 = PromptCache(tmp_path / "x"), PromptCache(tmp_path / "x")
    r1, r2 = await asyncio.gather(c1.render(KO, "ko"), c2.render(KO, "ko"))
    assert r1 == r2 and len(list((tmp_path / "x").rglob("*.s16"))) == 1


async def test_render_all(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    prompts = [PromptSpec(ZH, Locale.ZH), PromptSpec(ZH, Locale.ZH), PromptSpec(KO, Locale.KO),
               PromptSpec(ZH, Locale.ZH, repeat=True)]
    stats = await cache.render_all(prompts)
    assert (stats.rendered, stats.cached) == (3, 0)
    stats = await cache.render_all(prompts)
    assert (stats.rendered, stats.cached) == (0, 3)
    assert stats.seconds_of_audio > 5


async def test_missing_binary_and_voice_are_named(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path, espeak="espeak-ng-not-here")
    with pytest.raises(TtsError, match="espeak-ng-not-here.*espeak-ng"):
        cache.check()
    with pytest.raises(TtsError, match="找不到语音合成程序"):
        await cache.render(ZH, Locale.ZH)
    bad = PromptCache(tmp_path, {Locale.ZH: "xx-nonexistent"})
    with pytest.raises(TtsError, match="xx-nonexistent"):
        bad.check()
    with pytest.raises(TtsError, match="缺少语音 xx-nonexistent"):
        await bad.render(ZH, Locale.ZH)
    with pytest.raises(TtsError, match="提示语为空"):
        await cache.render("  ", Locale.ZH)
    with pytest.raises(TtsError, match="不支持的语言"):
        await cache.render("x", "fr")


def test_speech_wav_for_baresip(tmp_path: Path) -> None:
    path = speech_wav("아니요", Locale.KO, tmp_path / "elder" / "no.wav", cache=PromptCache(tmp_path / "c"))
    out = subprocess.run(["soxi", str(path)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Channels\s+:\s+1", out) and re.search(r"Sample Rate\s+:\s+8000", out)
    assert "16-bit Signed Integer PCM" in out
    assert len(as_int16(path.read_bytes()[44:])) > 2000
