"""MediaGuard: no new call while the media loop falls behind; dialling resumes once it keeps time."""

from __future__ import annotations

from ivr.breaker import MediaGuard


def test_on_time_frames_never_hold() -> None:
    g = MediaGuard(min_frames=500)
    assert g.observe(0, 0, 0) is False
    assert g.observe(10_000, 99, 200) is False  # 0.99 % late: within the 1 %
    assert g.observe(20_000, 99, 200) is False
    assert g.episodes == 0


def test_late_frames_hold_until_a_judgement_finds_them_on_time() -> None:
    g = MediaGuard(min_frames=500)
    assert g.observe(10_000, 300, 200) is True  # 3 % of the frames 40 ms or more late
    assert g.overloaded and g.episodes == 1
    # too few frames since the last judgement to decide anything: the hold stays
    assert g.observe(10_200, 300, 200) is True
    # the next 1,000 frames (counted from the last judgement) were on time: dialling resumes
    assert g.observe(11_000, 300, 180) is False
    # late again: a second episode
    assert g.observe(12_000, 330, 190) is True
    assert g.episodes == 2


def test_a_lone_late_frame_among_few_calls_decides_nothing() -> None:
    g = MediaGuard(min_frames=500)
    assert g.observe(100, 5, 2) is False  # 5 % late, but only 100 frames: no judgement yet
    assert g.observe(600, 5, 2) is False  # 600 frames, 5 late: 0.8 %


def test_nothing_playing_releases_the_hold() -> None:
    g = MediaGuard(min_frames=500)
    assert g.observe(10_000, 500, 200) is True
    # every call ended (no prompt playing): nothing to protect, and frames no longer advance
    assert g.observe(10_050, 500, 0) is False
    # the counters start again from there: the old late frames are not judged twice
    assert g.observe(10_650, 505, 3) is False


def test_a_reset_clock_is_followed() -> None:
    g = MediaGuard(min_frames=500)
    assert g.observe(50_000, 2_000, 200) is True
    # the clock's statistics were reset (counters went down): judged afresh from the new counts
    assert g.observe(100, 0, 200) is True  # no judgement on 100 frames: the hold stays
    assert g.observe(700, 1, 200) is False
