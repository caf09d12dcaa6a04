"""The local intent parser: per-locale models, the confidence threshold and the safety net."""

from __future__ import annotations

from collections.abc import Mapping

from dialogs.nlu.intents import EMERGENCY, OUT_OF_SCOPE, Intent, locale_key
from dialogs.nlu.model import IntentModel
from dialogs.nlu.normalise import normalise
from dialogs.nlu.safety import emergency_trigger

RANKING_SIZE = 5
SAFETY_CONFIDENCE = 0.95


class ClassifierParser:
    """``parse(text, locale)`` over trained :class:`IntentModel` objects (one per locale).

    Below ``threshold`` the answer is ``out_of_scope`` (the dialog then re-asks or offers the
    keypad); an uncertain emergency guess is re-asked too, while the unmistakable phrases are
    caught by the safety net, which can only raise a label to ``emergency``.
    """

    def __init__(self, models: Mapping[str, IntentModel], threshold: float = 0.45) -> None:
        self.models = {locale_key(k): m for k, m in models.items()}
        self.threshold = threshold

    def parse(self, text: str, locale: str) -> Intent:
        key = locale_key(locale)
        model = self.models.get(key)
        if model is None:
            raise ValueError(f"没有 {key} 的意图模型（请先运行 tanfang nlu train --locale {key}）")
        norm = normalise(text, key)
        if not norm.strip():
            return Intent(OUT_OF_SCOPE, 0.0, ())
        ranking = [(n, p) for n, p in zip(model.classes, model.proba(norm).tolist(), strict=True)]
        ranking.sort(key=lambda r: -r[1])
        name, conf = ranking[0]
        if conf < self.threshold:
            name = OUT_OF_SCOPE
        if name != EMERGENCY and emergency_trigger(norm, key) is not None:
            p_em = dict(ranking).get(EMERGENCY, 0.0)
            name, conf = EMERGENCY, max(p_em, SAFETY_CONFIDENCE)
        return Intent(name, float(conf), tuple((n, float(p)) for n, p in ranking[:RANKING_SIZE]))
