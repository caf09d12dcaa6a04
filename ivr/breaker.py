"""Per-trunk circuit breaker: N consecutive trunk failures open it; after a cool-down one probe call
is let through (half-open); its success closes the breaker, its failure opens it again.

Pure and clock-injected (``now`` is a monotonic float), so it is tested without sleeping.
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
