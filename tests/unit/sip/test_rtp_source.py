"""Only the far end negotiated in SDP is heard on a call's RTP port (security finding, fuzzing a live call).

Real sockets on loopback: 127.0.0.1 is the negotiated far end's host, 127.0.0.2 (also loopback on
Linux) an attacker's host; a second socket on 127.0.0.1 an attacker on the far end's host with
another port. Each sends 20 ms of audio and a complete RFC 4733 key press (updates + 3 end packets).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator, Iterator

import pytest
from aiortp.codecs import get_codec

from ivr.media.rtp import AudioFrame, DtmfDigit, MediaEvent, RtpSession
from ivr.sip import CallState, SipConfig, UserAgent
from tests.unit.sip.fake_peer import FAST, SDP, FakePeer
from tests.unit.sip.test_state_machines import in_dialog_request

DTMF_PT = 101


class Sender:
    """One UDP socket that speaks RTP with its own SSRC, sequence and clock."""

    def __init__(self, host: str, ssrc: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.addr: tuple[str, int] = self.sock.getsockname()
        self.ssrc = ssrc
        self.seq = 1000
        self.ts = 160_000

    def _send(self, dest: tuple[str, int], pt: int, payload: bytes, ts: int, marker: bool = False) -> None:
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, self.seq, ts, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        self.sock.sendto(header + payload, dest)

    def audio(self, dest: tuple[str, int], frames: int = 3, byte: int = 0x80) -> None:
        for _ in range(frames):
            self._send(dest, 0, bytes([byte]) * 160, self.ts)
            self.ts += 160

    def key(self, dest: tuple[str, int], digit: int) -> None:
        """A complete key press: two updates, then the end packet three times (RFC 4733 §2.5.1.4)."""
        for i, dur in enumerate((160, 320)):
            self._send(dest, DTMF_PT, struct.pack("!BBH", digit, 10, dur), self.ts, marker=i == 0)
        for _ in range(3):
            self._send(dest, DTMF_PT, struct.pack("!BBH", digit, 0x80 | 10, 480), self.ts)
        self.ts += 480

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def senders() -> Iterator[list[Sender]]:
    made: list[Sender] = []
    yield made
    for s in made:
        s.close()


def sender(made: list[Sender], host: str, ssrc: int) -> Sender:
    s = Sender(host, ssrc)
    made.append(s)
    return s


async def heard(session: RtpSession) -> list[MediaEvent]:
    await asyncio.sleep(0.15)  # let loopback datagrams land
    return session.drain_events()


def digits(events: list[MediaEvent]) -> list[str]:
    return [e.digit for e in events if isinstance(e, DtmfDigit)]


def frames(events: list[MediaEvent], byte: int) -> int:
    """How many heard frames carry the µ-law byte ``byte`` (each sender uses its own)."""
    pcm = get_codec(0).decode(bytes([byte]) * 160)
    return sum(1 for e in events if isinstance(e, AudioFrame) and e.pcm == pcm)


@pytest.fixture
async def session() -> AsyncIterator[RtpSession]:
    s = await RtpSession.open("127.0.0.1")
    yield s
    await s.close()


async def test_packets_from_another_host_are_not_heard_even_a_complete_key_press(
        session: RtpSession, senders: list[Sender]) -> None:
    far = sender(senders, "127.0.0.1", 1)
    evil = sender(senders, "127.0.0.2", 2)
    session.set_remote(far.addr, 0, DTMF_PT)
    me = ("127.0.0.1", session.local_port)
    evil.audio(me, 5, byte=0x10)
    evil.key(me, 9)  # "9": e.g. "I need help"
    events = await heard(session)
    assert events == [] and session.packets_received == 0
    assert session.packets_foreign == 5 + 5 and session.stats["packets_foreign"] == 10
    far.audio(me, 3, byte=0x20)
    far.key(me, 1)
    evil.key(me, 9)
    events = await heard(session)
    assert digits(events) == ["1"]
    assert frames(events, 0x20) >= 2 and frames(events, 0x10) == 0
    assert session.source == far.addr


async def test_nat_latch_on_the_negotiated_host_then_other_ports_are_dropped(
        session: RtpSession, senders: list[Sender]) -> None:
    """A NAT'd trunk may send from another port than its m= line: the first packet from its host latches."""
    nat = sender(senders, "127.0.0.1", 1)
    same_host = sender(senders, "127.0.0.1", 2)
    session.set_remote(("127.0.0.1", 9), 0, DTMF_PT)  # SDP says port 9; media really comes from nat's port
    me = ("127.0.0.1", session.local_port)
    nat.audio(me, 2)
    await heard(session)
    assert session.source == nat.addr
    same_host.key(me, 5)
    same_host.audio(me, 3, byte=0x10)
    nat.key(me, 3)
    events = await heard(session)
    assert digits(events) == ["3"] and frames(events, 0x10) == 0
    assert session.packets_foreign == 5 + 3


async def test_the_exact_sdp_address_takes_the_latch_over(session: RtpSession, senders: list[Sender]) -> None:
    exact = sender(senders, "127.0.0.1", 1)
    first = sender(senders, "127.0.0.1", 2)  # same host, latched first (e.g. a stray port on the trunk)
    session.set_remote(exact.addr, 0, DTMF_PT)
    me = ("127.0.0.1", session.local_port)
    first.audio(me, 1)
    await heard(session)
    assert session.source == first.addr
    exact.audio(me, 1)
    await heard(session)
    assert session.source == exact.addr
    first.key(me, 7)
    exact.key(me, 2)
    assert digits(await heard(session)) == ["2"]


async def test_media_before_the_sdp_answer_is_kept_only_if_it_came_from_the_far_end(
        session: RtpSession, senders: list[Sender], caplog: pytest.LogCaptureFixture) -> None:
    far = sender(senders, "127.0.0.1", 1)
    evil = sender(senders, "127.0.0.2", 2)
    me = ("127.0.0.1", session.local_port)
    evil.key(me, 9)
    far.key(me, 4)  # the callee answered and pressed before we processed the 200's SDP
    await asyncio.sleep(0.15)
    assert session.drain_events() == []
    session.set_remote(far.addr, 0, DTMF_PT)
    assert digits(session.drain_events()) == ["4"]
    assert session.packets_foreign == 5
    caplog.set_level(logging.INFO, logger="ivr.media.rtp")
    for _ in range(3):
        evil.audio(me, 50)
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    await session.close()
    await session.close()
    logged = [r for r in caplog.records if getattr(r, "action", None) == "rtp_foreign_dropped"]
    assert len(logged) == 1  # once per call, with the count, not once per packet
    assert "155 packets" in logged[0].getMessage() and "127.0.0.2" in logged[0].getMessage()


async def test_reinvite_moves_the_expected_source() -> None:
    ua = UserAgent(SipConfig(local_host="127.0.0.1", **FAST))
    await ua.start()
    peer = await FakePeer.open()
    old = Sender("127.0.0.1", 1)
    new = Sender("127.0.0.2", 2)
    try:
        task = asyncio.create_task(ua.call(peer.uri, ring_timeout_s=5))
        invite, addr = await peer.expect("INVITE")
        peer.reply(invite, addr, 200, "OK", sdp_port=old.addr[1])
        call = await task
        assert call.state is CallState.ANSWERED and call.media.remote == old.addr
        me = ("127.0.0.1", call.media.local_port)
        old.key(me, 1)
        new.key(me, 9)
        assert digits(await heard(call.media)) == ["1"]
        moved = SDP.format(port=new.addr[1]).replace("c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0.2")
        peer.send(in_dialog_request(peer, invite, "INVITE", 2, ua, body=moved), ("127.0.0.1", ua.port))
        await peer.expect(status=200)
        assert call.media.remote == new.addr
        old.key(me, 1)
        new.key(me, 6)
        assert digits(await heard(call.media)) == ["6"]
        assert call.media.source == new.addr
    finally:
        await ua.stop()
        peer.close()
        old.close()
        new.close()
