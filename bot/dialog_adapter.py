"""The dialogs engine behind an elder's WeChat check-in, and triage when it ends.

``DialogsCheckin`` implements :class:`bot.ports.CheckinEngine` (state kept as the engine's own
JSON via ``DialogState.to_dict``) and :class:`bot.ports.CheckinRecorder` (a ``wechat`` call
attempt, then :func:`dialogs.triage.triage` and, when it asks for one, an escalation through
:func:`scheduler.escalations.create_from_triage`). Replies are the engine's ``Say.chat_text``,
whose keypad options the script renders as "回复1：…".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot.flows import record_wechat_checkin
from bot.ports import BotTurn
from dialogs.engine import DialogEngine, DialogState
from dialogs.events import Action, Answered, Digit, Say, Speech
from dialogs.nlu.intents import Intent, IntentParser
from dialogs.result import DialogContext
from dialogs.triage import ElderProfile, triage
from scheduler.escalations import DEFAULT_CONFIG, EscalationConfig, Source, create_from_triage
from storage.enums import Locale
from storage.models.elder import Elder


@dataclass
class DialogsCheckin:
    engine: DialogEngine
    parser: IntentParser
    service_name: str = "探访关爱服务"
    hotline: str = "12349"
    escalations: EscalationConfig = field(default_factory=lambda: DEFAULT_CONFIG)

    # -- CheckinEngine -------------------------------------------------------------------
    def start(self, *, elder_id: int, elder_name: str, locale: str, now: datetime) -> tuple[dict[str, Any], BotTurn]:
        loc = Locale(locale) if locale in {m.value for m in Locale} else Locale.ZH
        ctx = DialogContext(locale=loc, hotline=self.hotline, service_name=self.service_name, confirm_identity=False)
        state, actions = self.engine.step(self.engine.start(ctx), Answered())
        return state.to_dict(), self._turn(state, actions)

    def answer(
        self, state: dict[str, Any], *, text: str | None, digit: str | None, now: datetime, intent: Intent | None = None
    ) -> tuple[dict[str, Any], BotTurn]:
        st = DialogState.from_dict(state)
        if digit is not None:
            event: Digit | Speech = Digit(digit)
        else:
            said = text or ""
            parsed = intent if intent is not None and st.ctx.locale is Locale.ZH else self.parser.parse(said, st.ctx.locale.value)
            event = Speech(text=said, intent=parsed)
        st, actions = self.engine.step(st, event)
        return st.to_dict(), self._turn(st, actions)

    def _turn(self, state: DialogState, actions: Sequence[Action]) -> BotTurn:
        texts = tuple(a.chat_text for a in actions if isinstance(a, Say))
        if not state.ended:
            return BotTurn(texts=texts)
        result = self.engine.result(state)
        return BotTurn(
            texts=texts,
            finished=True,
            outcome=result.outcome.value,
            intents=tuple(a.intent for a in result.answers),
            result={"state": state.to_dict()},
        )

    # -- CheckinRecorder -----------------------------------------------------------------
    def record(
        self,
        session: Session,
        *,
        elder_id: int,
        started_at: datetime,
        now: datetime,
        transcript: list[dict[str, Any]],
        turn: BotTurn,
    ) -> None:
        state = DialogState.from_dict(turn.result["state"])
        result = self.engine.result(state)
        elder = session.get(Elder, elder_id)
        if elder is None:
            return
        decision = triage(result, ElderProfile(frozenset(elder.categories or ()), elder.risk_tier), now)
        final = BotTurn(texts=turn.texts, finished=True, outcome=decision.outcome.value, intents=turn.intents,
                        result={"flags": _flags(result.flags), "five_knowns": _plain(result.five_knowns)})
        call = record_wechat_checkin(
            session, elder_id=elder_id, started_at=started_at, now=now, transcript=transcript, turn=final
        )
        if decision.escalation is not None:
            create_from_triage(session, elder, decision.escalation, Source.call(call.id), now, config=self.escalations)


def _plain(obj: object) -> dict[str, Any]:
    import dataclasses

    assert dataclasses.is_dataclass(obj) and not isinstance(obj, type)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(obj).items()}


def _flags(flags: object) -> dict[str, Any]:
    d = _plain(flags)
    if d.get("callback") is not None:
        d["callback"] = {k: str(v) for k, v in d["callback"].items()}
    return d
