"""What stops the dialer from starting calls.

:class:`CircuitBreaker` (per trunk): N consecutive trunk failures open it; after a cool-down one probe
call is let through (half-open); its success closes the breaker, its failure opens it again.
:class:`MediaGuard` (per process): no new call while the media loop falls behind its 20 ms grid.

Both are pure (the breaker is given ``now``, a monotonic float; the guard the media clock's counters),
so they are tested without sleeping or a loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    threshold: int = 5
    cooldown_s: float = 300.0
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    opened_count: int = 0  # times it went from closed to open (one staff alert each)
    history: list[str] = field(default_factory=list)

    def allowed(self, now: float) -> int:
        """How many new calls may start now: unlimited (-1) closed, 1 probe half-open, 0 open."""
        if self.state is BreakerState.OPEN and self.opened_at is not None and now - self.opened_at >= self.cooldown_s:
            self._to(BreakerState.HALF_OPEN)
        if self.state is BreakerState.CLOSED:
            return -1
        if self.state is BreakerState.HALF_OPEN and not self.probing:
            return 1
        return 0

    def started(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self.probing = True

    def success(self) -> None:
        self.failures = 0
        self.probing = False
        if self.state is not BreakerState.CLOSED:
            self._to(BreakerState.CLOSED)

    def failure(self, now: float) -> bool:
        """Record a trunk failure; True when this one opened the breaker from closed (alert staff)."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self.probing = False
            self.opened_at = now
            self._to(BreakerState.OPEN)
            return False
        if self.state is BreakerState.CLOSED and self.failures >= self.threshold:
            self.opened_at = now
            self.opened_count += 1
            self._to(BreakerState.OPEN)
            return True
        return False

    def cancelled(self) -> None:
        """A probe that ended without a verdict (shutdown): let another probe go."""
        self.probing = False

    def _to(self, state: BreakerState) -> None:
        self.state = state
        self.history.append(state.value)


@dataclass
class MediaGuard:
    """Holds new calls while this process's media loop falls behind its 20 ms grid.

    A host too slow or too busy for the calls it carries sends every call's audio late at once, and
    each new call makes it worse. :meth:`observe` is fed the media clock's counters at each dialer poll:
    when more than ``max_late_share`` of the prompt frames sent since the last judgement left
    ``late_ms`` or more behind their slot, the dialer starts no new call. Calls in progress go on; as
    they end the load falls, and claiming resumes at the first judgement that finds the frames on time.
    A judgement needs ``min_frames`` frames (a few calls' worth of one poll), so a lone late frame
    among a handful of calls decides nothing; with no prompt playing there is nothing to hold.
    """

    late_ms: int = 40
    max_late_share: float = 0.01
    min_frames: int = 500
    overloaded: bool = False
    episodes: int = 0  # times it went from on time to overloaded
    _frames: int = 0
    _late: int = 0

    def observe(self, frames: int, late: int, playing: int) -> bool:
        """``frames``: prompt frames the clock sent so far, ``late``: how many of them ``late_ms`` or more
        behind; ``playing``: prompts playing now. Returns whether new calls are held."""
        if frames < self._frames or late < self._late:  # the clock's counters were reset
            self._frames, self._late = frames, late
        if playing == 0:
            self.overloaded = False
            self._frames, self._late = frames, late
            return False
        sent = frames - self._frames
        if sent >= self.min_frames:
            was = self.overloaded
            self.overloaded = late - self._late > self.max_late_share * sent
            self.episodes += self.overloaded and not was
            self._frames, self._late = frames, late
        return self.overloaded
