"""RtpSession.set_consumer: received frames and digits handed over as they arrive (the call's Line reads
this way: no task woken per 20 ms frame): the same items in the same order as ``get`` would give, what
queued before first, and None once at close."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable

import pytest

from ivr.media.rtp import MediaEvent, RtpSession

DTMF_PT = 101


class Sender:
    """A far end on loopback: 20 ms µ-law frames and complete RFC 4733 key presses."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.addr: tuple[str, int] = self.sock.getsockname()
        self.seq = 1000
        self.ts = 160_000

    def _send(self, dest: tuple[str, int], pt: int, payload: bytes, ts: int) -> None:
        self.sock.sendto(struct.pack("!BBHII", 0x80, pt, self.seq, ts, 1) + payload, dest)
        self.seq = (self.seq + 1) & 0xFFFF

    def audio(self, dest: tuple[str, int], frames: int) -> None:
        for _ in range(frames):
            self._send(dest, 0, bytes([0x80]) * 160, self.ts)
            self.ts += 160

    def key(self, dest: tuple[str, int], digit: int) -> None:
        self._send(dest, DTMF_PT, struct.pack("!BBH", digit, 10, 160), self.ts)
        for _ in range(3):
            self._send(dest, DTMF_PT, struct.pack("!BBH", digit, 0x80 | 10, 480), self.ts)
        self.ts += 480

    def close(self) -> None:
        self.sock.close()


class Twin:
    """One far end sending the same packets to two sessions: one read by a consumer, one queued."""

    def __init__(self, a: RtpSession, b: RtpSession) -> None:
        self.a, self.b = a, b
        self.far = Sender()
        a.set_remote(self.far.addr, 0, DTMF_PT)
        b.set_remote(self.far.addr, 0, DTMF_PT)

    def audio(self, frames: int) -> None:
        for _ in range(frames):
            self._both(lambda dest: self.far.audio(dest, 1))

    def key(self, digit: int) -> None:
        self._both(lambda dest: self.far.key(dest, digit))

    def _both(self, send: Callable[[tuple[str, int]], None]) -> None:
        """The same packets (sequence numbers, timestamps) to both sessions."""
        seq, ts = self.far.seq, self.far.ts
        for s in (self.a, self.b):
            self.far.seq, self.far.ts = seq, ts
            send(("127.0.0.1", s.local_port))


@pytest.fixture
async def twin() -> AsyncIterator[Twin]:
    t = Twin(await RtpSession.open("127.0.0.1"), await RtpSession.open("127.0.0.1"))
    yield t
    await t.a.close()
    await t.b.close()
    t.far.close()


async def landed() -> None:
    await asyncio.sleep(0.15)  # loopback datagrams


async def test_same_items_in_the_same_order_as_get_queued_ones_first_none_once_at_close(twin: Twin) -> None:
    twin.audio(4)
    twin.key(3)
    await landed()
    got: list[MediaEvent | None] = []
    twin.a.set_consumer(got.append)
    before = twin.b.drain_events()
    assert got == before and any(not hasattr(i, "pcm") for i in got)  # what queued, at once, digit included
    twin.audio(5)
    twin.key(5)
    twin.audio(3)
    await landed()
    assert got == before + twin.b.drain_events()
    assert twin.a.drain_events() == []  # nothing was left for get()
    await twin.a.close()
    assert got[-1] is None and got.count(None) == 1


async def test_detached_consumer_leaves_items_to_get(twin: Twin) -> None:
    got: list[MediaEvent | None] = []
    twin.a.set_consumer(got.append)
    twin.audio(3)
    await landed()
    n = len(got)
    assert n > 0
    twin.a.set_consumer(None)
    twin.audio(4)
    await landed()
    assert len(got) == n
    assert len(twin.a.drain_events()) >= 3
    await twin.a.close()
    assert None not in got


async def test_consumer_of_a_closed_session_hears_the_close_at_once(twin: Twin) -> None:
    await twin.a.close()
    got: list[MediaEvent | None] = []
    twin.a.set_consumer(got.append)
    assert got == [None]


async def test_a_failing_consumer_is_logged_and_detached(twin: Twin, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[MediaEvent | None] = []

    def broken(item: MediaEvent | None) -> None:
        calls.append(item)
        raise RuntimeError("bug")

    caplog.set_level(logging.ERROR, logger="ivr.media.rtp")
    twin.a.set_consumer(broken)
    twin.audio(5)
    await landed()
    assert len(calls) == 1  # detached after its first failure; the datagram callback kept working
    assert len(twin.a.drain_events()) == len(twin.b.drain_events()) - 1
    assert [r.getMessage() for r in caplog.records].count("media consumer failed") == 1
