"""What the WeChat bot needs from other rooms, as small Protocols, plus the turn model it renders.

The assembly (``tanfang``) passes real implementations in: the scheduler's queue for "call my
mother now", the escalation service for "send someone round", the dialogs engine for elders'
check-ins, and the ASR for voice without a ``Recognition`` field.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session


class CallNotAllowed(Exception):
    """The elder has not consented to automated calls (the service is voluntary)."""


class CallRequester(Protocol):
    """Schedule a check-in call to the elder now (in the caller's transaction); returns when it is due.
    Raises :class:`CallNotAllowed` when the elder has not consented to automated calls."""

    def request_call_now(
        self, session: Session, *, elder_id: int, now: datetime, requested_by: str
    ) -> datetime | None: ...


class VisitRequester(Protocol):
    """Open a P3 escalation asking staff to visit (in the caller's transaction)."""

    def request_visit(self, session: Session, *, elder_id: int, now: datetime, requested_by: str, note: str) -> None: ...


@dataclass(frozen=True)
class BotTurn:
    """One channel-neutral system turn: what to say and which keypad options to offer."""

    texts: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()  # (digit, label)
    finished: bool = False
    outcome: str | None = None  # storage.enums.Outcome value when finished
    intents: tuple[str, ...] = ()
    result: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        """WeChat text: prompts, then keypad options as "回复1：…" lines."""
        lines = [t for t in self.texts if t]
        if self.options:
            lines.append("\n".join(f"回复{d}：{label}" for d, label in self.options))
        return "\n".join(lines)


class CheckinEngine(Protocol):
    """The dialogs engine behind a check-in, with state kept as JSON between messages."""

    def start(self, *, elder_id: int, elder_name: str, locale: str, now: datetime) -> tuple[dict[str, Any], BotTurn]: ...

    def answer(
        self, state: dict[str, Any], *, text: str | None, digit: str | None, now: datetime, intent: Any = None
    ) -> tuple[dict[str, Any], BotTurn]: ...


class CheckinRecorder(Protocol):
    """Store a finished WeChat check-in (call attempt, outcome, triage) in the caller's transaction."""

    def record(
        self,
        session: Session,
        *,
        elder_id: int,
        started_at: datetime,
        now: datetime,
        transcript: list[dict[str, Any]],
        turn: BotTurn,
    ) -> None: ...


class VoiceRecognizer(Protocol):
    """Turn a WeChat voice message (media id) into text; None when it cannot."""

    def recognize(self, media_id: str, *, locale: str) -> Awaitable[str | None]: ...
