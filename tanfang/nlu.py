"""Assembly of the intent parser: the on-disk model cache and the optional Rasa HTTP backend.

``build_intent_parser(settings)`` is what the IVR call runner, the WeChat bot and the CLI call.
The local model is cached under ``<data_dir>/models`` keyed by a hash of the training data and
model configuration, so it is retrained only when ``nlu_data/`` changes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from dialogs.nlu import (
    INTENTS,
    OUT_OF_SCOPE,
    ClassifierParser,
    Intent,
    IntentModel,
    IntentParser,
    ModelConfig,
    data_hash,
    emergency_trigger,
    load_training,
    locale_key,
    normalise,
    train,
)
from dialogs.nlu.intents import EMERGENCY
from dialogs.nlu.parser import RANKING_SIZE, SAFETY_CONFIDENCE
from tanfang.settings import Settings

log = logging.getLogger(__name__)

LOCALES = ("zh", "ko")
DEFAULT_NLU_DATA = Path(__file__).resolve().parent.parent / "nlu_data"


def nlu_data_dir(settings: Settings) -> Path:
    return settings.nlu_data_dir or DEFAULT_NLU_DATA


def model_path(models_dir: Path, locale: str, digest: str) -> Path:
    return models_dir / f"intent-{locale}-{digest}.npz"


def load_or_train(locale: str, data_root: Path, models_dir: Path, config: ModelConfig | None = None,
                  force: bool = False) -> tuple[IntentModel, bool]:
    """The model for ``locale``: from the cache if the data hash matches, else trained and stored.

    Returns ``(model, trained)``. The file is written atomically; older models of the locale are
    removed after the new one is in place.
    """
    cfg = config or ModelConfig()
    examples = load_training(data_root / locale)
    digest = data_hash(examples, cfg.key())
    path = model_path(models_dir, locale, digest)
    if path.exists() and not force:
        try:
            return IntentModel.from_bytes(path.read_bytes()), False
        except ValueError as exc:
            log.warning("cached intent model unreadable, retraining: %s", exc,
                        extra={"action": "nlu.cache_invalid"})
    model = train(examples, locale, cfg, data_hash=digest)
    models_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".intent-{locale}-", dir=models_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model.to_bytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in models_dir.glob(f"intent-{locale}-*.npz"):
        if old != path:
            old.unlink(missing_ok=True)
    log.info("trained intent model %s (%d examples)", locale, len(examples),
             extra={"action": "nlu.trained"})
    return model, True


def build_local_parser(settings: Settings, locales: tuple[str, ...] = LOCALES) -> ClassifierParser:
    models = {loc: load_or_train(loc, nlu_data_dir(settings), settings.models_dir)[0] for loc in locales}
    return ClassifierParser(models, threshold=settings.nlu_threshold)


class RasaUnavailable(RuntimeError):
    """The Rasa server did not answer usefully."""


class RasaParser:
    """``IntentParser`` over a Rasa 3.x server's ``POST /model/parse``.

    The same threshold and emergency safety net as the local parser apply. Rasa serves the
    ``rasa_locales`` (one model per server; zh by default); other locales, and any Rasa failure,
    go to ``fallback`` so a check-in never stops because the NLU server is down. ``parse`` blocks;
    async callers run it with ``asyncio.to_thread``.
    """

    def __init__(self, url: str, threshold: float, fallback: IntentParser | None = None,
                 rasa_locales: tuple[str, ...] = ("zh",), timeout_s: float = 2.0) -> None:
        self.endpoint = url.rstrip("/") + "/model/parse"
        self.threshold = threshold
        self.fallback = fallback
        self.rasa_locales = rasa_locales
        self.timeout_s = timeout_s

    def _post(self, text: str) -> dict[str, object]:
        body = json.dumps({"text": text}, ensure_ascii=False).encode("utf-8")
        req = urllib.request.Request(  # noqa: S310 - URL comes from settings (http to our Rasa)
            self.endpoint, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                data = json.loads(resp.read().decode("utf-8"))
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            raise RasaUnavailable(f"Rasa 服务无响应：{exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("intent"), dict):
            raise RasaUnavailable("Rasa 返回内容缺少 intent")
        return data

    def parse(self, text: str, locale: str) -> Intent:
        key = locale_key(locale)
        if key not in self.rasa_locales:
            if self.fallback is None:
                raise RasaUnavailable(f"Rasa 后端不处理 {key}，且没有本地模型")
            return self.fallback.parse(text, key)
        try:
            data = self._post(text)
        except RasaUnavailable as exc:
            if self.fallback is None:
                raise
            log.warning("rasa unavailable, using local model: %s", exc, extra={"action": "nlu.rasa_fallback"})
            return self.fallback.parse(text, key)
        intent = data["intent"]
        assert isinstance(intent, dict)
        ranking_raw = data.get("intent_ranking") or [intent]
        assert isinstance(ranking_raw, list)
        ranking = tuple(
            (str(r.get("name")), float(r.get("confidence") or 0.0))
            for r in ranking_raw[:RANKING_SIZE] if isinstance(r, dict)
        )
        name = str(intent.get("name") or OUT_OF_SCOPE)
        conf = float(intent.get("confidence") or 0.0)
        if name not in INTENTS or conf < self.threshold:
            name = OUT_OF_SCOPE
        if name != EMERGENCY and emergency_trigger(normalise(text, key), key) is not None:
            p_em = dict(ranking).get(EMERGENCY, 0.0)
            name, conf = EMERGENCY, max(p_em, SAFETY_CONFIDENCE)
        return Intent(name, conf, ranking)


def build_intent_parser(settings: Settings) -> IntentParser:
    """The configured parser: the local classifier, or Rasa (``TANFANG_NLU_BACKEND=rasa``) with the
    local classifier as fallback and for locales Rasa does not serve."""
    local = build_local_parser(settings)
    if settings.nlu_backend == "rasa":
        return RasaParser(settings.rasa_url, settings.nlu_threshold, fallback=local)
    return local
