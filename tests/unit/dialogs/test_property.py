"""Any sequence of events ends the dialog within a bounded number of steps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dialogs.engine import MAX_TURNS, DialogEngine
from dialogs.events import Answered, Digit, End, HungUp, Silence, Speech
from dialogs.nlu.intents import INTENTS, Intent
from dialogs.result import DialogContext
from dialogs.script import load_scripts
from storage.enums import Locale

ENGINE = DialogEngine(load_scripts())
BOUND = MAX_TURNS + 2

speech = st.builds(lambda t, i: Speech(t, 0.9, Intent(i, 0.8)), st.sampled_from(["是", "明天上午", "暖气不热", ""]),
                   st.sampled_from(INTENTS))
no_intent = st.builds(lambda t: Speech(t, 0.5, None), st.text(max_size=5))
events = st.one_of(speech, no_intent, st.builds(Digit, st.sampled_from(list("0123456789#*"))),
                   st.just(Silence()), st.just(Answered()))
contexts = st.builds(DialogContext, locale=st.sampled_from(list(Locale)), winter_safety=st.booleans(),
                     confirm_identity=st.booleans(), festival=st.sampled_from([None, "春节"]))


@settings(max_examples=300, deadline=None)
@given(ctx=contexts, seq=st.lists(events, min_size=0, max_size=120), hang_up=st.booleans())
def test_any_event_sequence_ends_within_bound(ctx, seq, hang_up):
    state = ENGINE.start(ctx)
    seq = [*seq, HungUp()] if hang_up else seq
    ended_at = None
    for n, event in enumerate(seq, start=1):
        state, actions = ENGINE.step(state, event)
        if state.ended and ended_at is None:
            ended_at = n
            assert isinstance(actions[-1], End)
            assert actions[-1].outcome is ENGINE.result(state).outcome
        elif ended_at is not None:
            assert actions == ()
    if ended_at is not None:
        assert ended_at <= BOUND
    else:
        assert len(seq) <= BOUND
    # keep feeding silence: it must end within the bound from the start
    while not state.ended:
        state, _ = ENGINE.step(state, Silence())
    assert state.turns <= BOUND
