"""The intent contract (shared/intents.md) and the parser interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

INTENTS: tuple[str, ...] = (
    "fine",
    "unwell",
    "emergency",
    "home_hazard",
    "need_service",
    "lonely",
    "benefit_inquiry",
    "affirm",
    "deny",
    "call_family",
    "call_later",
    "who_are_you",
    "wrong_person",
    "stop_calling",
    "repeat",
    "out_of_scope",
)
EMERGENCY = "emergency"
OUT_OF_SCOPE = "out_of_scope"


@dataclass(frozen=True, slots=True)
class Intent:
    """One classification: the label, its confidence in [0, 1] and the top alternatives."""

    name: str
    confidence: float
    ranking: tuple[tuple[str, float], ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "confidence": round(self.confidence, 4),
            "ranking": [{"name": n, "confidence": round(c, 4)} for n, c in self.ranking],
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Intent:
        ranking = data.get("ranking") or []
        assert isinstance(ranking, list)
        return cls(
            name=str(data["name"]),
            confidence=float(data["confidence"]),  # type: ignore[arg-type]
            ranking=tuple((str(r["name"]), float(r["confidence"])) for r in ranking),
        )


@runtime_checkable
class IntentParser(Protocol):
    """Anything that labels an utterance: the local classifier, a Rasa server, a test fake."""

    def parse(self, text: str, locale: str) -> Intent: ...


def locale_key(locale: str) -> str:
    """Map a ``Locale`` value ("zh-CN", "ko") or folder name ("zh") to the nlu_data folder name."""
    low = str(locale).strip().lower()
    if low.startswith("ko"):
        return "ko"
    if low.startswith("zh") or low == "":
        return "zh"
    raise ValueError(f"不支持的语言：{locale!r}（可用：zh-CN、ko）")
