"""One shared 20 ms media clock per event loop: it sends the next frame of every playing prompt.

Why: with one sleeping task per prompt, 200 calls mean 200 timers, each with its own phase, so the
loop wakes up to 10 000 times a second and every late wake-up delays the sessions behind it. The
shared clock wakes the loop once per 20 ms tick and sends one frame for every active
:class:`Playback` in a tight loop (payloads encoded once per prompt, sliced per frame).

Timing: ticks sit on an absolute grid (``loop.call_at``; no drift). A late tick sends the frames
that fell due in a burst of at most ``max_burst`` per session; if the loop was starved for longer
than that, the grid slips forward (the skipped slots are not sent; no audio is dropped, the rest of
each prompt goes out later) and ``resyncs`` counts it. A prompt joining a running clock starts on
the next tick (0-20 ms after ``play()``); an idle clock starts at once.

Every frame's lateness (send time minus its nominal slot) goes into a 1 ms histogram
(:meth:`MediaClock.snapshot`), which ``bench/sip_calls.py`` reports.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from time import thread_time
from typing import Protocol

FRAME_S = 0.020
MAX_BURST = 3  # frames per session in one tick when catching up (60 ms: inside any jitter buffer)
HIST_MS = 1000  # lateness histogram: 1 ms buckets, the last one collects everything later


class PlaybackOwner(Protocol):
    """What the clock needs from an RTP session (``ivr.media.rtp.RtpSession`` implements it)."""

    def _clock_send(self, payload: bytes, first: bool, slot: float, pcm_at: int) -> bool: ...

    def _clock_late(self, lateness_s: float) -> None: ...


@dataclass(eq=False, slots=True)
class Playback:
    """One prompt on the clock: pre-encoded payload, position, and how it ended."""

    owner: PlaybackOwner
    payload: bytes  # the whole prompt, G.711-encoded, padded to whole frames
    frame_bytes: int  # payload bytes per 20 ms frame (160 for G.711)
    done: asyncio.Future[bool]
    index: int = 0
    frames: int = field(init=False)

    def __post_init__(self) -> None:
        self.frames = len(self.payload) // self.frame_bytes

    def finish(self, result: bool) -> None:
        if not self.done.done():
            self.done.set_result(result)


@dataclass
class ClockStats:
    ticks: int
    frames: int
    resyncs: int
    active: int
    max_lateness_s: float
    histogram_ms: list[int]
    busy_s: float = 0.0
    max_tick_s: float = 0.0
    cpu_s: float = 0.0

    def percentile_ms(self, q: float) -> float:
        """Lateness (ms, bucket upper bound) that ``q`` of all frames stayed within."""
        total = sum(self.histogram_ms)
        if not total:
            return 0.0
        need = q * total
        seen = 0
        for ms, count in enumerate(self.histogram_ms):
            seen += count
            if seen >= need:
                return float(ms + 1)
        return float(HIST_MS)


class MediaClock:
    """The 20 ms tick for every prompt playing on one event loop. Get it with :meth:`for_loop`."""

    _clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop, *, frame_s: float = FRAME_S,
                 max_burst: int = MAX_BURST) -> None:
        self._loop = loop
        self.frame_s = frame_s
        self.max_burst = max(1, max_burst)
        self._active: dict[Playback, None] = {}  # insertion-ordered set
        self._joining: list[Playback] = []
        self._slot = 0.0  # nominal time of the next grid slot
        self._handle: asyncio.TimerHandle | None = None
        self.ticks = 0
        self.frames = 0
        self.resyncs = 0
        self.max_lateness_s = 0.0
        self.busy_s = 0.0  # time spent inside ticks (wall clock)
        self.cpu_s = 0.0  # CPU time of this thread inside ticks
        self.max_tick_s = 0.0
        self._hist = [0] * HIST_MS

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop | None = None) -> MediaClock:
        """The clock of ``loop`` (default: the running loop), created on first use."""
        loop = loop or asyncio.get_running_loop()
        clock = cls._clocks.get(loop)
        if clock is None:
            clock = cls._clocks[loop] = cls(loop)
        return clock

    # ---- registration ------------------------------------------------------------------------
    def start(self, playback: Playback) -> None:
        """Put ``playback`` on the clock; its first frame goes out on the next tick."""
        self._joining.append(playback)
        if self._handle is None:  # idle: keep the grid if its next slot is still ahead (back-to-back prompts)
            self._slot = max(self._slot, self._loop.time())
            self._handle = self._loop.call_at(self._slot, self._tick)

    def stop(self, playback: Playback, result: bool) -> None:
        """Take ``playback`` off the clock now and resolve it with ``result`` (no-op when done)."""
        self._active.pop(playback, None)
        if playback in self._joining:
            self._joining.remove(playback)
        playback.finish(result)
        if not self._active and not self._joining and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def active(self) -> int:
        return len(self._active) + len(self._joining)

    # ---- the tick ------------------------------------------------------------------------------
    def _tick(self) -> None:
        self._handle = None
        now = self._loop.time()
        cpu0 = thread_time()
        fs = self.frame_s
        due = max(1, int((now - self._slot) / fs) + 1)
        first_slot = self._slot  # the earliest slot due: lateness is measured against it
        burst = min(due, self.max_burst)
        if due > burst:
            self.resyncs += 1
        self.ticks += 1
        hist = self._hist
        time = self._loop.time
        for pb in self._joining:
            self._active[pb] = None
        joining = set(self._joining)
        self._joining.clear()
        finished: list[tuple[Playback, bool]] = []
        for pb in list(self._active):  # a copy: a sink may stop a prompt while we iterate
            if pb.done.done():
                self._active.pop(pb, None)
                continue
            owner = pb.owner
            if pb in joining:  # a new prompt starts with one frame on this tick's last due slot
                frames = 1
                slot = first_slot + (due - 1) * fs
            else:
                frames = min(burst, pb.frames - pb.index)
                slot = first_slot
            for _ in range(frames):
                i = pb.index
                start = i * pb.frame_bytes
                if not owner._clock_send(pb.payload[start:start + pb.frame_bytes], i == 0, slot, i):
                    finished.append((pb, False))  # closed, interrupted, or the far end pressed a key
                    break
                pb.index = i + 1
                late = time() - slot
                hist[min(HIST_MS - 1, int(late * 1000)) if late > 0 else 0] += 1
                self.max_lateness_s = max(self.max_lateness_s, late)
                owner._clock_late(late)
                slot += fs
            else:
                if pb.index >= pb.frames:
                    finished.append((pb, True))
            self.frames += frames
        # the grid: slots sent this tick, plus the ones skipped when starved
        self._slot = first_slot + due * fs
        for pb, result in finished:
            self._active.pop(pb, None)
            pb.finish(result)
        if self._active or self._joining:
            self._handle = self._loop.call_at(self._slot, self._tick)
        spent = time() - now
        self.cpu_s += thread_time() - cpu0
        self.busy_s += spent
        self.max_tick_s = max(self.max_tick_s, spent)

    # ---- figures -------------------------------------------------------------------------------
    def snapshot(self) -> ClockStats:
        return ClockStats(self.ticks, self.frames, self.resyncs, self.active, self.max_lateness_s, list(self._hist),
                          self.busy_s, self.max_tick_s, self.cpu_s)

    def frames_later_than(self, ms: int) -> int:
        """Frames sent ``ms`` or more behind their slot (since the last :meth:`reset_stats`)."""
        return sum(self._hist[max(0, min(ms, HIST_MS - 1)):])

    def reset_stats(self) -> None:
        self.ticks = self.frames = self.resyncs = 0
        self.max_lateness_s = self.busy_s = self.cpu_s = self.max_tick_s = 0.0
        self._hist = [0] * HIST_MS
