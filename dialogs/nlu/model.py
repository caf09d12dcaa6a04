"""A small linear intent model: character n-gram TF-IDF + multinomial logistic regression.

Training uses scikit-learn (imported inside :func:`train`, so importing this module stays free of
its thread pools and sockets). Inference is plain numpy over the exported weights, which keeps a
parse well under a millisecond and lets the model be stored as a pickle-free ``.npz`` blob.
"""

from __future__ import annotations

import io
import json
import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dialogs.nlu.data import Example
from dialogs.nlu.normalise import normalise

FORMAT = "tanfang-intent-model/2"


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Feature and regularisation settings; part of the cache key."""

    min_n: int = 1
    max_n: int = 3
    c: float = 50.0
    class_weight_balanced: bool = True
    word_bigrams: bool = True  # Korean only: adjacent word pairs (chosen by cross-validation)

    def key(self) -> str:
        return (f"{FORMAT}:{self.min_n}-{self.max_n}:C{self.c}:bal{int(self.class_weight_balanced)}"
                f":wb{int(self.word_bigrams)}")


def features(normalised: str, locale: str, config: ModelConfig) -> list[str]:
    """Character n-grams of the normalised text. Mandarin ignores spaces (ASR puts them anywhere);
    Korean keeps them (they separate words) and adds words, word bigrams and jamo trigrams."""
    if locale == "zh":
        s = "<" + normalised.replace(" ", "") + ">"
        extra: list[str] = []
    else:
        s = "<" + normalised + ">"
        # Bare words, and jamo n-grams so that conjugated forms (났어요/났소) share features.
        jamo = unicodedata.normalize("NFD", normalised.replace(" ", "_"))
        words = normalised.split()
        extra = ["w:" + w for w in words]
        if config.word_bigrams:
            padded = ["<", *words, ">"]
            extra += ["b:" + a + "_" + b for a, b in zip(padded, padded[1:], strict=False)]
        extra += ["j:" + jamo[i : i + 3] for i in range(len(jamo) - 2)]
    feats = [s[i : i + n] for n in range(config.min_n, config.max_n + 1) for i in range(len(s) - n + 1)]
    return feats + extra


class IntentModel:
    """Weights of a trained model for one locale; ``proba`` returns one probability per class."""

    def __init__(
        self,
        *,
        locale: str,
        config: ModelConfig,
        classes: Sequence[str],
        vocabulary: dict[str, int],
        idf: np.ndarray,
        coef: np.ndarray,
        intercept: np.ndarray,
        data_hash: str = "",
    ) -> None:
        self.locale = locale
        self.config = config
        self.classes = tuple(classes)
        self.vocabulary = vocabulary
        self.idf = idf.astype(np.float64)
        self.coef_t = np.ascontiguousarray(coef.T.astype(np.float64))  # (features, classes)
        self.intercept = intercept.astype(np.float64)
        self.data_hash = data_hash

    # -- inference ---------------------------------------------------------------------------
    def proba(self, normalised: str) -> np.ndarray:
        counts = Counter(features(normalised, self.locale, self.config))
        idx: list[int] = []
        val: list[float] = []
        vocab = self.vocabulary
        for feat, n in counts.items():
            j = vocab.get(feat)
            if j is not None:
                idx.append(j)
                val.append((1.0 + math.log(n)) * self.idf[j])
        scores = self.intercept.copy()
        if idx:
            v = np.asarray(val)
            v /= math.sqrt(float(v @ v))
            scores += v @ self.coef_t[idx]
        scores -= scores.max()
        e = np.exp(scores)
        return np.asarray(e / e.sum())

    def predict(self, text: str) -> list[tuple[str, float]]:
        """All classes with probabilities, best first (``text`` is raw; it is normalised here)."""
        p = self.proba(normalise(text, self.locale))
        order = np.argsort(-p)
        return [(self.classes[i], float(p[i])) for i in order]

    # -- persistence -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        terms = [""] * len(self.vocabulary)
        for term, j in self.vocabulary.items():
            terms[j] = term
        meta = {
            "format": FORMAT,
            "locale": self.locale,
            "config": [self.config.min_n, self.config.max_n, self.config.c, self.config.class_weight_balanced,
                       self.config.word_bigrams],
            "classes": list(self.classes),
            "terms": terms,
            "data_hash": self.data_hash,
        }
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            meta=np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
            idf=self.idf.astype(np.float32),
            coef=self.coef_t.T.astype(np.float32),
            intercept=self.intercept.astype(np.float32),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> IntentModel:
        """Load a model written by :meth:`to_bytes` (no pickle: arrays and JSON only)."""
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode("utf-8"))
                idf, coef, intercept = z["idf"], z["coef"], z["intercept"]
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"模型文件损坏或格式不符：{exc}") from exc
        if meta.get("format") != FORMAT:
            raise ValueError(f"模型格式不符：{meta.get('format')!r}，需要 {FORMAT}")
        min_n, max_n, c, bal, wb = meta["config"]
        terms = meta["terms"]
        return cls(
            locale=meta["locale"],
            config=ModelConfig(min_n=int(min_n), max_n=int(max_n), c=float(c), class_weight_balanced=bool(bal),
                               word_bigrams=bool(wb)),
            classes=meta["classes"],
            vocabulary={t: j for j, t in enumerate(terms)},
            idf=idf,
            coef=coef,
            intercept=intercept,
            data_hash=meta.get("data_hash", ""),
        )


def train(examples: Sequence[Example], locale: str, config: ModelConfig | None = None,
          data_hash: str = "") -> IntentModel:
    """Fit TF-IDF + logistic regression on ``examples`` (deterministic for the same data)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    cfg = config or ModelConfig()
    texts = [normalise(e.text, locale) for e in examples]
    labels = [e.intent for e in examples]
    vectorizer = TfidfVectorizer(
        analyzer=lambda s: features(s, locale, cfg), sublinear_tf=True, norm="l2", smooth_idf=True
    )
    x = vectorizer.fit_transform(texts)
    clf = LogisticRegression(
        C=cfg.c, max_iter=5000, class_weight="balanced" if cfg.class_weight_balanced else None
    )
    clf.fit(x, labels)
    return IntentModel(
        locale=locale,
        config=cfg,
        classes=[str(c) for c in clf.classes_],
        vocabulary={str(k): int(v) for k, v in vectorizer.vocabulary_.items()},
        idf=np.asarray(vectorizer.idf_),
        coef=np.asarray(clf.coef_),
        intercept=np.asarray(clf.intercept_),
        data_hash=data_hash,
    )
