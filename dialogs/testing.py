"""Shipped test helper: run a dialog script over a list of events and collect what happened."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dialogs.engine import DialogEngine, DialogState
from dialogs.events import Action, Event, Say
from dialogs.result import DialogContext, DialogResult
from dialogs.script import Script


@dataclass(frozen=True, slots=True)
class Run:
    state: DialogState
    steps: tuple[tuple[Event, tuple[Action, ...]], ...]
    result: DialogResult

    @property
    def actions(self) -> tuple[Action, ...]:
        return tuple(a for _, acts in self.steps for a in acts)

    @property
    def prompts(self) -> tuple[str, ...]:
        """The prompt ids said, in order ("q.how_are_you", "msg.closing", ...)."""
        return tuple(a.prompt_id for a in self.actions if isinstance(a, Say))


def run_script(script: Script, events: Iterable[Event], context: DialogContext | None = None) -> Run:
    """Start a dialog with ``script`` and feed it ``events`` (stops early once it has ended)."""
    ctx = context or DialogContext(locale=script.locale)
    if ctx.locale is not script.locale:
        raise ValueError("context.locale 与话术语言不一致")
    engine = DialogEngine({script.locale: script})
    state = engine.start(ctx)
    steps: list[tuple[Event, tuple[Action, ...]]] = []
    for event in events:
        if state.ended:
            break
        state, actions = engine.step(state, event)
        steps.append((event, actions))
    return Run(state, tuple(steps), engine.result(state))
