"""Evaluation of a parser on labelled examples: accuracy, macro-F1, per intent, confusions,
emergency recall and the false-emergency rate (share of non-emergencies labelled emergency)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from dialogs.nlu.data import Example
from dialogs.nlu.intents import EMERGENCY, INTENTS, IntentParser


@dataclass(frozen=True, slots=True)
class IntentScore:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, slots=True)
class Miss:
    text: str
    gold: str
    predicted: str
    confidence: float


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    n: int
    accuracy: float
    macro_f1: float
    emergency_recall: float
    false_emergency_rate: float
    per_intent: dict[str, IntentScore]
    confused_pairs: list[tuple[str, str, int]]  # (gold, predicted, count), most frequent first
    misses: list[Miss]

    def to_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "emergency_recall": round(self.emergency_recall, 4),
            "false_emergency_rate": round(self.false_emergency_rate, 4),
            "per_intent": {
                k: {"precision": round(v.precision, 4), "recall": round(v.recall, 4),
                    "f1": round(v.f1, 4), "support": v.support}
                for k, v in self.per_intent.items()
            },
            "confused_pairs": [{"gold": g, "predicted": p, "count": c} for g, p, c in self.confused_pairs],
        }


def score(gold: Sequence[str], predicted: Sequence[str], texts: Sequence[str] = (),
          confidences: Sequence[float] = ()) -> EvaluationReport:
    """Metrics over parallel lists of gold and predicted labels."""
    n = len(gold)
    if n == 0:
        raise ValueError("评估数据为空")
    labels = [i for i in INTENTS if i in set(gold) | set(predicted)]
    per: dict[str, IntentScore] = {}
    for label in labels:
        tp = sum(1 for g, p in zip(gold, predicted, strict=True) if g == label and p == label)
        fp = sum(1 for g, p in zip(gold, predicted, strict=True) if g != label and p == label)
        fn = sum(1 for g, p in zip(gold, predicted, strict=True) if g == label and p != label)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[label] = IntentScore(prec, rec, f1, tp + fn)
    supported = [s for s in per.values() if s.support > 0]
    macro = sum(s.f1 for s in supported) / len(supported)
    correct = sum(1 for g, p in zip(gold, predicted, strict=True) if g == p)
    n_em = sum(1 for g in gold if g == EMERGENCY)
    em_hit = sum(1 for g, p in zip(gold, predicted, strict=True) if g == EMERGENCY and p == EMERGENCY)
    n_non = n - n_em
    false_em = sum(1 for g, p in zip(gold, predicted, strict=True) if g != EMERGENCY and p == EMERGENCY)
    pairs = Counter((g, p) for g, p in zip(gold, predicted, strict=True) if g != p)
    misses = [
        Miss(texts[i] if i < len(texts) else "", g, p, confidences[i] if i < len(confidences) else 0.0)
        for i, (g, p) in enumerate(zip(gold, predicted, strict=True)) if g != p
    ]
    return EvaluationReport(
        n=n,
        accuracy=correct / n,
        macro_f1=macro,
        emergency_recall=em_hit / n_em if n_em else 1.0,
        false_emergency_rate=false_em / n_non if n_non else 0.0,
        per_intent=per,
        confused_pairs=[(g, p, c) for (g, p), c in pairs.most_common(10)],
        misses=misses,
    )


def evaluate(parser: IntentParser, examples: Sequence[Example], locale: str) -> EvaluationReport:
    intents = [parser.parse(e.text, locale) for e in examples]
    return score(
        [e.intent for e in examples], [i.name for i in intents],
        [e.text for e in examples], [i.confidence for i in intents],
    )
