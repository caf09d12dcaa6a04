"""Prompt audio: espeak-ng → 8 kHz mono S16LE, shaped for old ears on a phone line, cached on disk.

espeak-ng is called directly (asyncio subprocess, text on stdin), not through pyttsx3: pyttsx3 2.99's
``runAndWait()`` returns before its file is complete and it blocks the thread; the CLI answers on
stdout in ~20 ms per short prompt (bench/tts.py). Voices: ``cmn-latn-pinyin`` reads Hanzi as
Mandarin (``cmn``/``zh`` read it as pinyin with English tone digits), ``ko`` for Korean.

Processing for the telephone: 22.05 kHz → 8 kHz (soxr), high-pass at 200 Hz (the line drops the
lows anyway, they only eat headroom), a gentle compressor so quiet syllables are not lost, then a
peak normalisation and soft limiting whose drive grows with ``volume``.
Cache key: sha256 over (text, voice, rate, volume, processing version). Files are written to a temp
file and renamed, so concurrent renders (tasks or processes) of one prompt are safe; an LRU in memory
sits on top.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import tempfile
import wave
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

from ivr.media.g711 import SAMPLE_RATE, as_int16, resample
from storage.enums import Locale

log = logging.getLogger(__name__)

PROCESSING_VERSION = 1
DEFAULT_VOICES: dict[Locale, str] = {Locale.ZH: "cmn-latn-pinyin", Locale.KO: "ko"}
DEFAULT_RATE = 130  # words per minute; espeak-ng's own default (175) is too fast for elders
DEFAULT_VOLUME = 1.0  # 1.0 = peak −1 dBFS with light limiting; 1.5 = clearly louder
REPEAT_RATE_FACTOR = 0.8
REPEAT_VOLUME_FACTOR = 1.3
MIN_RATE, MAX_RATE = 80, 260
MIN_VOLUME, MAX_VOLUME = 0.2, 2.0


class TtsError(RuntimeError):
    """TTS cannot render: the message names what is missing (Chinese, then English)."""


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """One prompt to pre-render (what a dialog ``Say`` carries)."""

    text: str
    locale: Locale
    rate: int | None = None
    volume: float | None = None
    repeat: bool = False


@dataclass(frozen=True, slots=True)
class RenderStats:
    rendered: int
    cached: int
    seconds_of_audio: float


def as_locale(locale: Locale | str) -> Locale:
    """Accept a Locale or its value / short name ("zh", "zh-CN", "ko")."""
    if isinstance(locale, Locale):
        return locale
    for loc in Locale:
        if locale in (loc.value, loc.nlu, loc.name.lower()):
            return loc
    raise TtsError(f"不支持的语言：{locale!r}（unsupported locale）")


def parse_wav(data: bytes) -> tuple[bytes, int]:
    """PCM and rate of a 16-bit mono WAV, also the streamed kind espeak-ng writes (sizes unset)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TtsError("espeak-ng 没有输出 WAV 音频（espeak-ng did not produce WAV audio）")
    pos, rate, channels, bits = 12, 0, 0, 0
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            _fmt, channels, rate, _br, _ba, bits = struct.unpack("<HHIIHH", data[body : body + 16])
        elif cid == b"data":
            pcm = data[body:]  # the size field is 0x7FFFFFFF when streamed: take the rest
            if size < len(pcm):
                pcm = pcm[:size]
            if channels != 1 or bits != 16 or not rate:
                raise TtsError(f"espeak-ng 音频格式不支持：{channels} 声道 {bits} 位（unsupported WAV format）")
            return pcm[: len(pcm) - len(pcm) % 2], rate
        pos = body + size + (size & 1)
    raise TtsError("espeak-ng 输出的 WAV 没有数据（WAV without data chunk）")


def shape_for_phone(pcm: bytes, rate: int, volume: float) -> bytes:
    """Resample to 8 kHz, high-pass, compress, normalise: louder with ``volume``, never clipping."""
    x = as_int16(resample(pcm, rate, SAMPLE_RATE)).astype(np.float64) / 32768.0
    if x.size == 0 or not np.any(x):
        return x.astype("<i2").tobytes()
    sos = butter(2, 200, btype="highpass", fs=SAMPLE_RATE, output="sos")
    x = sosfilt(sos, x)
    # Compressor: 10 ms RMS envelope, 2.5:1 above −30 dB relative to the loudest part.
    win = np.ones(80) / 80
    env = np.sqrt(np.convolve(x * x, win, mode="same")) + 1e-9
    thr = env.max() * 10 ** (-30 / 20)
    gain = np.where(env > thr, (env / thr) ** (1 / 2.5 - 1), 1.0)
    gain = np.convolve(gain, np.ones(40) / 40, mode="same")  # 5 ms smoothing: no zipper noise
    x = x * gain
    x = x / np.max(np.abs(x))
    # Soft limiter: more drive = higher average level at the same (−1 dBFS) peak.
    drive = 1.0 + 2.0 * max(0.0, volume - 0.5)
    x = np.tanh(drive * x) / np.tanh(drive)
    peak = 10 ** (-1 / 20) * min(1.0, volume)
    return np.round(x * peak * 32767).astype("<i2").tobytes()


def write_wav(path: Path, pcm: bytes, rate: int = SAMPLE_RATE) -> Path:
    """Write mono S16LE PCM as a WAV (atomically), e.g. for baresip's aufile player."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        with wave.open(tmp, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


class PromptCache:
    """Renders and caches prompts. ``voices`` maps locale → espeak-ng voice name."""

    def __init__(
        self,
        cache_dir: Path,
        voices: Mapping[Locale, str] | None = None,
        *,
        default_rate: int = DEFAULT_RATE,
        default_volume: float = DEFAULT_VOLUME,
        memory_bytes: int = 64 * 1024 * 1024,
        espeak: str = "espeak-ng",
    ) -> None:
        self.cache_dir = cache_dir
        self.voices: dict[Locale, str] = dict(voices or DEFAULT_VOICES)
        self.default_rate = default_rate
        self.default_volume = default_volume
        self.memory_bytes = memory_bytes
        self.espeak = espeak
        self._lru: OrderedDict[str, bytes] = OrderedDict()
        self._lru_size = 0
        self._inflight: dict[str, asyncio.Future[bytes]] = {}

    # -- checks -------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`TtsError` naming a missing espeak-ng binary or voice (call at start-up)."""
        exe = shutil.which(self.espeak)
        if exe is None:
            raise TtsError(
                f"找不到语音合成程序 {self.espeak}，请安装 Debian 包 espeak-ng"
                f"（TTS engine {self.espeak!r} not found on PATH）"
            )
        out = subprocess.run([exe, "--voices"], capture_output=True, text=True, check=False).stdout
        names = {line.split()[1].lower() for line in out.splitlines()[1:] if len(line.split()) > 1}
        # Voice files can also be named by their path (e.g. sit/cmn-Latn-pinyin): accept both.
        names |= {line.split()[4].rsplit("/", 1)[-1].lower() for line in out.splitlines()[1:] if len(line.split()) > 4}
        missing = [f"{loc.label}: {v}" for loc, v in self.voices.items() if v.lower() not in names]
        if missing:
            raise TtsError(f"espeak-ng 缺少语音：{'，'.join(missing)}（espeak-ng voice not installed）")

    # -- keys ----------------------------------------------------------------------------------
    def params(
        self, locale: Locale | str, rate: int | None, volume: float | None, repeat: bool = False
    ) -> tuple[str, int, float]:
        loc = as_locale(locale)
        if loc not in self.voices:
            raise TtsError(f"没有为 {loc.label} 配置语音（no TTS voice configured for {loc.value}）")
        r = float(rate if rate is not None else self.default_rate)
        v = float(volume if volume is not None else self.default_volume)
        if repeat:
            r, v = r * REPEAT_RATE_FACTOR, v * REPEAT_VOLUME_FACTOR
        return self.voices[loc], int(min(max(r, MIN_RATE), MAX_RATE)), round(min(max(v, MIN_VOLUME), MAX_VOLUME), 3)

    @staticmethod
    def key(text: str, voice: str, rate: int, volume: float) -> str:
        blob = json.dumps([text, voice, rate, volume, PROCESSING_VERSION], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def path_for(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.s16"

    # -- rendering -----------------------------------------------------------------------------
    async def render(
        self,
        text: str,
        locale: Locale | str,
        rate: int | None = None,
        volume: float | None = None,
        repeat: bool = False,
    ) -> bytes:
        """8 kHz mono S16LE audio for ``text``; renders once, then from disk/memory."""
        if not text.strip():
            raise TtsError("提示语为空（empty prompt text）")
        voice, r, v = self.params(locale, rate, volume, repeat)
        key = self.key(text, voice, r, v)
        hit = self._memory_get(key)
        if hit is not None:
            return hit
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            pcm = await asyncio.to_thread(self._read_disk, key)
            if pcm is None:
                raw = await self._synthesize(text, voice, r)
                pcm = await asyncio.to_thread(self._finish, key, raw, v)
            self._memory_put(key, pcm)
            fut.set_result(pcm)
            return pcm
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters (if any) get it re-raised
            raise
        finally:
            del self._inflight[key]

    def render_sync(
        self, text: str, locale: Locale | str, rate: int | None = None, volume: float | None = None,
        repeat: bool = False,
    ) -> bytes:
        """Blocking variant for scripts and tools (not for the event loop)."""
        if not text.strip():
            raise TtsError("提示语为空（empty prompt text）")
        voice, r, v = self.params(locale, rate, volume, repeat)
        key = self.key(text, voice, r, v)
        pcm = self._memory_get(key) or self._read_disk(key)
        if pcm is None:
            pcm = self._finish(key, self._synthesize_sync(text, voice, r), v)
        self._memory_put(key, pcm)
        return pcm

    async def render_all(self, prompts: Iterable[PromptSpec], concurrency: int = 2) -> RenderStats:
        """Pre-render every prompt (and nothing twice); returns how many were new vs cached."""
        sem = asyncio.Semaphore(concurrency)
        rendered = cached = 0
        seconds = 0.0

        async def one(p: PromptSpec) -> None:
            nonlocal rendered, cached, seconds
            async with sem:
                voice, r, v = self.params(p.locale, p.rate, p.volume, p.repeat)
                was = self.path_for(self.key(p.text, voice, r, v)).exists()
                pcm = await self.render(p.text, p.locale, p.rate, p.volume, p.repeat)
                cached += was
                rendered += not was
                seconds += len(pcm) / 2 / SAMPLE_RATE

        async with asyncio.TaskGroup() as tg:
            for p in dict.fromkeys(prompts):
                tg.create_task(one(p))
        return RenderStats(rendered, cached, seconds)

    def cached(self, text: str, locale: Locale | str, rate: int | None = None, volume: float | None = None,
               repeat: bool = False) -> bytes | None:
        """The audio if already rendered (memory or disk), else None. Never synthesises."""
        voice, r, v = self.params(locale, rate, volume, repeat)
        key = self.key(text, voice, r, v)
        return self._memory_get(key) or self._read_disk(key)

    # -- internals -----------------------------------------------------------------------------
    def _argv(self, voice: str, rate: int) -> list[str]:
        return [self.espeak, "-v", voice, "-s", str(rate), "-a", "100", "-b", "1", "--stdin", "--stdout"]

    def _missing_binary(self) -> TtsError:
        return TtsError(
            f"找不到语音合成程序 {self.espeak}，请安装 Debian 包 espeak-ng（TTS engine {self.espeak!r} not found）"
        )

    @staticmethod
    def _failed(voice: str, code: int, stderr: bytes) -> TtsError:
        msg = stderr.decode("utf-8", "replace").strip()
        if "voice" in msg.lower():
            return TtsError(f"espeak-ng 缺少语音 {voice}（espeak-ng voice {voice!r} not available: {msg}）")
        return TtsError(f"espeak-ng 合成失败，退出码 {code}（espeak-ng failed: {msg}）")

    async def _synthesize(self, text: str, voice: str, rate: int) -> tuple[bytes, int]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(voice, rate),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as exc:
            raise self._missing_binary() from exc
        out, err = await proc.communicate(text.encode("utf-8"))
        if proc.returncode != 0 or not out:
            raise self._failed(voice, proc.returncode or 0, err)
        return parse_wav(out)

    def _synthesize_sync(self, text: str, voice: str, rate: int) -> tuple[bytes, int]:
        try:
            res = subprocess.run(self._argv(voice, rate), input=text.encode("utf-8"), capture_output=True, check=False)
        except FileNotFoundError as exc:
            raise self._missing_binary() from exc
        if res.returncode != 0 or not res.stdout:
            raise self._failed(voice, res.returncode, res.stderr)
        return parse_wav(res.stdout)

    def _finish(self, key: str, raw: tuple[bytes, int], volume: float) -> bytes:
        pcm = shape_for_phone(raw[0], raw[1], volume)
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pcm)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        log.info("prompt rendered", extra={"action": "tts.render", "key": key[:12], "ms": len(pcm) // 16})
        return pcm

    def _read_disk(self, key: str) -> bytes | None:
        try:
            return self.path_for(key).read_bytes()
        except FileNotFoundError:
            return None

    def _memory_get(self, key: str) -> bytes | None:
        pcm = self._lru.get(key)
        if pcm is not None:
            self._lru.move_to_end(key)
        return pcm

    def _memory_put(self, key: str, pcm: bytes) -> None:
        if key in self._lru or len(pcm) > self.memory_bytes:
            return
        self._lru[key] = pcm
        self._lru_size += len(pcm)
        while self._lru_size > self.memory_bytes:
            _, old = self._lru.popitem(last=False)
            self._lru_size -= len(old)


def speech_wav(text: str, locale: Locale | str, path: Path, rate: int = 150, cache: PromptCache | None = None) -> Path:
    """Speech as an 8 kHz mono S16LE WAV file (what the baresip "elder" plays with aufile)."""
    pc = cache or PromptCache(Path(tempfile.gettempdir()) / "tanfang-speech-cache")
    return write_wav(path, pc.render_sync(text, locale, rate=rate, volume=1.0))
