"""The planner's per-class plans equal the policy's per-elder plans (the cache is invisible)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.config import load_policy
from scheduler.planner import ClassPlanner, _materialise, id_modulus
from scheduler.policy import ActiveEvent, ElderFacts, History, plan_elder
from scheduler.windows import LOCAL_TZ
from storage.enums import Category, ConsentStatus, ElderStatus, EventKind, RiskTier
from storage.models.base import categories_to_mask, mask_to_categories

POL = load_policy()
START = datetime(2026, 11, 25, 6, 0, tzinfo=LOCAL_TZ)
PATHS = ["23/2301/230183/230183100", "23/2301/230184", "23/2302/230202"]
EVENTS = [
    ActiveEvent(1, EventKind.WEATHER, START + timedelta(days=3), START + timedelta(days=6), ("23/2301/230183",),
                "寒潮红色预警", "red", "cold_wave"),
    ActiveEvent(2, EventKind.LOCKDOWN, START + timedelta(days=8), START + timedelta(days=20), ("23/2301",), "封控"),
    ActiveEvent(3, EventKind.WEATHER, START + timedelta(days=4), START + timedelta(days=5), ("23/2302",),
                "暴雪橙色预警", "orange", "blizzard"),
]

elders = st.tuples(
    st.integers(1, 3_000_000),
    st.sampled_from(PATHS),
    st.sets(st.sampled_from(list(Category)), max_size=3),
    st.sampled_from(list(RiskTier)),
    st.sampled_from([None, "[]", '["08:00-10:00"]', '["09:00-11:30", "15:00-18:00", "19:00-19:30"]', "bad"]),
    st.one_of(st.none(), st.integers(-5, 40).map(lambda h: START + timedelta(hours=h * 7))),
    st.sampled_from(list(ConsentStatus)),
    st.one_of(st.none(), st.tuples(st.one_of(st.none(), st.integers(-60, 20).map(
        lambda d: START + timedelta(days=d, hours=d % 13))), st.integers(0, 2))),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(elders, min_size=1, max_size=40, unique_by=lambda e: e[0]),
       st.integers(0, 30), st.integers(1, 40))
def test_class_plans_equal_per_elder_plans(batch, start_days, span_days) -> None:
    start = START + timedelta(days=start_days)
    end = start + timedelta(days=span_days)
    now = start + timedelta(hours=start_days % 5)
    cp = ClassPlanner(POL, start, end, now, events=EVENTS, dialect="sqlite")
    rows = [(i, path, categories_to_mask(cats), tier.value, cw, pause, consent.value)
            for i, path, cats, tier, cw, pause, consent, _h in batch]
    hist = {e[0]: e[7] for e in batch if e[7] is not None}
    for _ in range(2):  # second round: served from the cache
        out, _tasks, planned, pairs = cp.expand(rows, hist, want_plans=True)
        assert [e for e, _ in pairs] == [r[0] for r in rows]  # every elder, also one planned nothing
        got = sorted(_materialise(pairs), key=lambda p: (p.elder_id, p.slot))
        want = []
        for i, path, cats, tier, cw, pause, consent, h in batch:
            windows = tuple(json.loads(cw)) if cw and cw.startswith("[") else ()
            facts = ElderFacts(i, path, mask_to_categories(categories_to_mask(cats)), tier, windows, pause, consent,
                               ElderStatus.ACTIVE)
            want.extend(plan_elder(facts, start, end, now=now, policy=POL.for_path(path), events=EVENTS,
                                   history=History(*h) if h else History()))
        want.sort(key=lambda p: (p.elder_id, p.slot))
        assert [replace(p, reasons=tuple(p.reasons)) for p in got] == want
        assert planned == len(want) == sum(len(tpl.params) for _, tpl in out)


def test_modulus_is_small_for_the_default_policy() -> None:
    assert id_modulus(POL.default, 2) is not None and id_modulus(POL.default, 2) <= 1000

