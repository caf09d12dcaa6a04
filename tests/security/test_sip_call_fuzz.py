"""Fuzzing the dialer's SIP and RTP sockets DURING a live check-in call (issue #9 item 5).

The real dialer (queue claim → ``CallRunner`` → conversation → ``CallAttempt``) calls an elder
through the real UA; the in-process fast peer answers, sends a few frames of silence from the RTP
address its SDP announced, and then stays silent on the line. While the call is up we throw at the
UA's SIP socket (a) targeted forgeries that carry the live call's Call-ID (BYE / CANCEL with wrong
or missing tags, re-INVITEs with junk SDP, INFO, responses with wrong branch/CSeq, huge/negative
Content-Length, truncated headers, non-UTF-8, compact headers, Via ports out of range), then
(b) hypothesis-generated random bytes and SIP-shaped messages, and junk RTP at the call's media
port, then (c) complete forged key presses (RFC 4733 events with the callee's SSRC, and in-band
DTMF tones) from another port of the callee's host and from another host (127.0.0.2). Then the
peer sends its proper BYE.

Asserted: the call survived every forgery (no BYE from us, still one active call), the UA still
answers OPTIONS, no forged key press was heard (the call is still at its first question, its RTP
session counted the forged packets as foreign and logged that once), the proper BYE ended it,
exactly one ``CallAttempt`` (answered, 200, no digits, outcome "unreached" as nobody answered a
question), no exception reached the event loop's handler, no ERROR log with a traceback, and no
500 among the fuzzer's answers.

The UA is configured for UDP (the dialer's default); it does not listen on TCP then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiortp.dtmf import DtmfEvent
from aiosipua.message import SipMessage, SipRequest, SipResponse
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dialogs.engine import DialogEngine
from dialogs.script import load_scripts
from ivr.call import CallRunner, RunnerConfig
from ivr.dialer import Dialer, DialerConfig
from ivr.dialplan import DialPlan
from ivr.media.dtmf import generate_dtmf
from ivr.media.g711 import ulaw_encode
from ivr.sip import SipConfig, UserAgent
from ivr.sip.messages import tag_of, top_branch
from ivr.testing.fastpeer import Answer, Behaviour, FastPeer, _Dialog
from ivr.tts import PromptCache
from scheduler.config import load_policy
from scheduler.queue import Queue, RequestKind
from storage.crypto import Vault
from storage.db import make_engine, make_session_factory
from storage.enums import Outcome
from storage.migrate import upgrade
from storage.models.checkin import CallAttempt
from tests.integration.ivr.world import make_world
from tests.unit.sip.fake_peer import options_answered

pytestmark = pytest.mark.sip
NUMBER = "13800000001"
DTMF_PT = 101


PEER_SSRC = 0x5EED


@dataclass
class HeldPeer(FastPeer):
    """The fast peer, but the callee hangs up only when ``release`` is set; logs what we send it.

    Its SDP answer announces ``rtp`` (a real socket on 127.0.0.1), and on the ACK it sends a few
    frames of µ-law silence from there, as a phone picking up does.
    """

    release: asyncio.Event = field(default_factory=asyncio.Event)
    requests: list[SipRequest] = field(default_factory=list)
    invite: SipRequest | None = None
    to_tag: str | None = None
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    rtp: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))

    def __post_init__(self) -> None:
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)

    @property
    def rtp_addr(self) -> tuple[str, int]:
        host, port = self.rtp.getsockname()
        return str(host), int(port)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(Exception):
            msg = SipMessage.parse(data)
            if isinstance(msg, SipRequest):
                self.requests.append(msg)
                if msg.method == "INVITE" and self.invite is None:
                    self.invite = msg
                if msg.method == "ACK" and not self.acked.is_set():
                    self.acked.set()
                    self._pick_up_noise()
        super().datagram_received(data, addr)

    def _pick_up_noise(self) -> None:
        assert self.invite is not None
        ua_rtp = ("127.0.0.1", _m_port(self.invite))
        for i in range(5):
            self.rtp.sendto(_rtp_packet(0, 1 + i, 160 * i, b"\xff" * 160, PEER_SSRC), ua_rtp)

    def _send(self, msg: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        if isinstance(msg, SipResponse) and msg.status_code == 200 and self.to_tag is None:
            self.to_tag = tag_of(msg.headers.get_first("to"))
        if isinstance(msg, SipResponse) and b"m=audio 9 " in msg.body:  # announce the real RTP socket
            msg.body = msg.body.replace(b"m=audio 9 ", f"m=audio {self.rtp_addr[1]} ".encode())
        super()._send(msg, addr)

    def close(self) -> None:
        super().close()
        self.rtp.close()

    async def _hang_up_later(self, d: _Dialog) -> None:
        await self.release.wait()
        await super()._hang_up_later(d)

    def sent_by_us(self, method: str) -> int:
        return sum(1 for r in self.requests if r.method == method)


@dataclass(frozen=True)
class Live:
    """What an attacker who saw the INVITE knows about the call."""

    call_id: str
    our_tag: str  # the UA's From tag (To tag of requests towards the UA)
    peer_tag: str  # the callee's To tag
    ua_port: int
    rtp_port: int
    invite_branch: str
    our_from: str
    peer_to: str


@pytest.fixture
def db(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'fuzz.db'}")
    upgrade(engine)
    return make_session_factory(engine)


# ---- forgeries ------------------------------------------------------------------------------
def _msg(start: str, headers: list[tuple[str, str]], body: bytes = b"", *, length: str | None = None) -> bytes:
    lines = [start, *(f"{k}: {v}" for k, v in headers)]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def forgeries(live: Live, me: int) -> list[bytes]:
    """Targeted in-dialog forgeries. No BYE/CANCEL here carries both right tags."""
    cid = live.call_id
    uri = f"sip:tanfang@127.0.0.1:{live.ua_port}"
    peer_from = f"<sip:{NUMBER}@127.0.0.1>;tag={live.peer_tag}"
    ours = f"<sip:tanfang@127.0.0.1>;tag={live.our_tag}"
    n = iter(range(100, 10_000))

    def h(method: str, frm: str, to: str, *, seq: int | None = None, via_port: int | str = me,
          call_id: str = cid, extra: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
        s = next(n) if seq is None else seq
        return [("Via", f"SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bKfz{s};rport"), ("Max-Forwards", "70"),
                ("From", frm), ("To", to), ("Call-ID", call_id), ("CSeq", f"{s} {method}"), *extra]

    junk_sdps = [
        b"\xff\xfe\x00\x01 not sdp at all",
        b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 99999 RTP/AVP 0\r\n",
        b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio -7 RTP/AVP 0\r\n",
        b"v=0\r\nc=IN IP4 media.invalid\r\nm=audio 4000 RTP/AVP 0\r\n",
        b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 18\r\n",  # G.729 only
        b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n",
        b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=video 4000 RTP/AVP 96\r\n",
        b"v=0\r\nc=IN\r\nm=audio\r\n",
        b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000/2 RTP/AVP 0\r\n",
        "v=0\r\nc=IN IP4 １２７.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n".encode(),
    ]
    out: list[bytes] = []
    wrong = "<sip:x@127.0.0.1>;tag=forged"
    untagged_ours = "<sip:tanfang@127.0.0.1>"
    untagged_peer = f"<sip:{NUMBER}@127.0.0.1>"
    # BYE: wrong From tag, wrong To tag, no tags, tags swapped, other Call-ID, compact, non-UTF-8 tag
    for frm, to in ((wrong, ours), (peer_from, wrong), (untagged_peer, untagged_ours), (ours, peer_from),
                    (peer_from, untagged_ours), (untagged_peer, ours)):
        out.append(_msg(f"BYE {uri} SIP/2.0", h("BYE", frm, to), length="0"))
    out.append(_msg(f"BYE {uri} SIP/2.0", h("BYE", peer_from, ours, call_id="x" + cid), length="0"))
    out.append((f"BYE {uri} SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKc1\r\ni: {cid}\r\n"
                f"f: {untagged_peer};tag=nope\r\nt: {ours}\r\nCSeq: 7 BYE\r\nl: 0\r\n\r\n").encode())
    out.append(f"BYE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKnu\r\nCall-ID: {cid}\r\n"
               f"From: {untagged_peer};tag=".encode() + b"\xff\xfe\xc3(" + f"\r\nTo: {ours}\r\nCSeq: 8 BYE\r\n"
               "Content-Length: 0\r\n\r\n".encode())
    for length in ("999999", "-1", "abc", "18446744073709551617"):
        out.append(_msg(f"BYE {uri} SIP/2.0", h("BYE", wrong, ours), length=length))
    out.append(f"BYE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKtr\r\nCall-ID: {cid}\r\n"
               f"From: {untagged_peer};tag=x\r\nTo: {ours}\r\nCSeq: 9".encode())  # truncated, no blank line
    out.append(f"BYE {uri} SIP/2.0\r\nCall-ID: {cid}\r\nFrom: {peer_from}\r\nTo: {ours}\r\n\r\n".encode())  # no Via/CSeq
    # CANCEL of "our" INVITE (we are the UAC; there is nothing of ours to cancel)
    out.append(_msg(f"CANCEL {uri} SIP/2.0", [("Via", f"SIP/2.0/UDP 127.0.0.1:{me};branch={live.invite_branch}"),
                                               ("From", live.our_from), ("To", untagged_peer), ("Call-ID", cid),
                                               ("CSeq", "1 CANCEL")], length="0"))
    out.append(_msg(f"CANCEL {uri} SIP/2.0", h("CANCEL", wrong, untagged_ours), length="0"))
    out.append(_msg(f"CANCEL {uri} SIP/2.0", h("CANCEL", peer_from, untagged_ours), length="0"))
    # re-INVITE: junk SDP in the dialog (refused, 488), and with wrong tags (481)
    for body in junk_sdps:
        out.append(_msg(f"INVITE {uri} SIP/2.0", h("INVITE", peer_from, ours, extra=(
            ("Contact", f"<sip:{NUMBER}@127.0.0.1:{me}>"), ("Content-Type", "application/sdp"))), body,
            length=str(len(body))))
        out.append(_msg(f"INVITE {uri} SIP/2.0", h("INVITE", wrong, ours, extra=(
            ("Content-Type", "application/sdp"),)), body, length=str(len(body))))
    for contact in ("<sip:>", "<sip:x@127.0.0.1:99999>", "<junk>", "<tel:+8613800000001>", "*"):
        out.append(_msg(f"INVITE {uri} SIP/2.0", h("INVITE", peer_from, ours, extra=(
            ("Contact", contact), ("Content-Type", "application/sdp"))), junk_sdps[1], length=str(len(junk_sdps[1]))))
    out.append(_msg(f"INVITE {uri} SIP/2.0", h("INVITE", peer_from, ours, seq=2**63), length="0"))
    out.append(_msg(f"INVITE {uri} SIP/2.0", h("INVITE", peer_from, ours, seq=-1), length="0"))
    # INFO / other in-dialog methods, right and wrong tags, odd lengths and bodies
    for frm in (peer_from, wrong):
        out.append(_msg(f"INFO {uri} SIP/2.0", h("INFO", frm, ours, extra=(("Content-Type", "application/dtmf-relay"),)),
                        b"Signal=5\r\nDuration=160\r\n", length="26"))
        out.append(_msg(f"INFO {uri} SIP/2.0", h("INFO", frm, ours), b"\x80\x81\xfe", length="999999"))
        out.append(_msg(f"INFO {uri} SIP/2.0", h("INFO", frm, ours), b"abc", length="-5"))
        out.append(_msg(f"NOTIFY {uri} SIP/2.0", h("NOTIFY", frm, ours, extra=(
            ("Event", "refer"), ("Subscription-State", "terminated"))), b"SIP/2.0 abc", length="11"))
        out.append(_msg(f"FROB {uri} SIP/2.0", h("FROB", frm, ours), length="0"))
        out.append(_msg(f"UPDATE {uri} SIP/2.0", h("UPDATE", frm, ours), length="0"))
        out.append(_msg(f"ACK {uri} SIP/2.0", h("ACK", frm, ours, seq=1), length="0"))
        out.append(_msg(f"REFER {uri} SIP/2.0", h("REFER", frm, ours, extra=(("Refer-To", "<sip:evil@127.0.0.1:1>"),)),
                        length="0"))
    # replies must not go out of range (this once closed the UA's socket)
    for via_port in (99999, 0, -1, "65536"):
        out.append(_msg(f"OPTIONS {uri} SIP/2.0", [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bKvp{via_port}"), ("From", peer_from),
            ("To", ours), ("Call-ID", cid), ("CSeq", "3 OPTIONS")], length="0"))
    out.append(_msg(f"OPTIONS {uri} SIP/2.0", [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKrp;rport=99999;received=not-an-ip"), ("From", wrong),
        ("To", untagged_ours), ("Call-ID", cid), ("CSeq", "4 OPTIONS")], length="0"))
    # responses: wrong branch, wrong CSeq, right branch with a forked tag, retransmitted 2xx, odd codes
    for status, branch, cseq, to in (
            (200, "z9hG4bKnotours", "1 INVITE", peer_from),
            (200, live.invite_branch, "1 INVITE", f"{untagged_peer};tag=forked"),
            (200, live.invite_branch, "1 INVITE", peer_from),  # a 2xx retransmission: ACKed again
            (486, live.invite_branch, "1 INVITE", peer_from),
            (200, live.invite_branch, "2 BYE", peer_from),
            (200, live.invite_branch, "abc INVITE", peer_from),
            (200, live.invite_branch, "-1 INVITE", peer_from),
            (999, live.invite_branch, "1 INVITE", peer_from),
            (100, "z9hG4bKnotours", "1 BYE", peer_from),
            (401, "z9hG4bKnotours", "5 BYE", peer_from)):
        out.append(_msg(f"SIP/2.0 {status} Forged", [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{live.ua_port};branch={branch}"), ("From", live.our_from),
            ("To", to), ("Call-ID", cid), ("CSeq", cseq)], length="0"))
    out.append(f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch={live.invite_branch}\r\nCall-ID: {cid}".encode())
    # oversize and folded headers with the live Call-ID
    big = [("X-Junk", "a" * 200)] * 250
    out.append(_msg(f"BYE {uri} SIP/2.0", h("BYE", wrong, ours, extra=tuple(big)), length="0"))
    out.append(f"BYE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKfold\r\nCall-ID: {cid}\r\n"
               f"From: {untagged_peer}\r\n ;tag=folded\r\nTo: {ours}\r\nCSeq: 10 BYE\r\n\r\n".encode())
    return out


def sipish(live: Live) -> st.SearchStrategy[bytes]:
    """Random SIP-shaped messages around the live call (never a BYE/CANCEL with both right tags)."""
    tags = st.sampled_from(["", ";tag=forged", f";tag={live.our_tag}x", ";tag=\u00e9\u4e2d", ";tag="])
    header_value = st.text(max_size=40).map(lambda s: s.replace("\r", "").replace("\n", ""))
    methods = st.sampled_from(["BYE", "CANCEL", "INVITE", "INFO", "ACK", "OPTIONS", "NOTIFY", "REFER", "b\u00fft", ""])
    uri = f"sip:tanfang@127.0.0.1:{live.ua_port}"

    def build(method: str, start_kind: int, from_tag: str, to_tag: str, extra: list[tuple[str, str]],
              seq: int, length: str | None, body: bytes, compact: bool) -> bytes:
        start = (f"{method} {uri} SIP/2.0", f"SIP/2.0 {seq % 1000} X", f"{method}", f"{method} {uri}")[start_kind]
        names = ("v", "f", "t", "i") if compact else ("Via", "From", "To", "Call-ID")
        headers = [(names[0], f"SIP/2.0/UDP 127.0.0.1:{seq % 70000};branch=z9hG4bK{seq}"),
                   (names[1], f"<sip:{NUMBER}@127.0.0.1>{from_tag}"),
                   (names[2], f"<sip:tanfang@127.0.0.1>{to_tag}"), (names[3], live.call_id),
                   ("CSeq", f"{seq} {method or 'X'}"), *extra]
        return _msg(start, headers, body, length=length)

    return st.builds(
        build, methods, st.integers(0, 3), tags, tags,
        st.lists(st.tuples(st.sampled_from(["Via", "v", "CSeq", "Contact", "m", "Record-Route", "Route",
                                            "Content-Type", "c", "Content-Length", "l", "X"]), header_value),
                 max_size=5),
        st.integers(-(2**33), 2**33), st.sampled_from([None, "0", "-3", "9999999", "x", "4"]),
        st.binary(max_size=80), st.booleans())


def _rtp_packet(pt: int, seq: int, ts: int, payload: bytes, ssrc: int, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def _m_port(msg: SipMessage) -> int:
    return int(next(line for line in msg.body.decode().splitlines() if line.startswith("m=audio")).split()[1])


def rtp_junk() -> st.SearchStrategy[bytes]:
    """Random bytes and RTP-shaped packets with odd headers (may be a complete RFC 4733 key press)."""
    shaped = st.builds(
        lambda first, pt, marker, seq, ts, ssrc, payload: struct.pack(
            "!BBHII", first, (marker << 7) | pt, seq, ts, ssrc) + payload,
        st.integers(0, 255), st.sampled_from([0, 8, 13, 96, 127, DTMF_PT]), st.integers(0, 1),
        st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.binary(max_size=24))
    return st.one_of(st.binary(max_size=200), shaped)


def forged_key_presses(ua_rtp: tuple[str, int], socks: list[socket.socket]) -> int:
    """Complete key presses from each socket: RFC 4733 events (updates + the end packet three times,
    the callee's SSRC, fresh timestamps) for 1, 2 and 9, then 300 ms of in-band DTMF "1" as µ-law
    frames, then the same RFC 4733 press again. Returns how many packets were sent."""
    sent = 0
    for n, sock in enumerate(socks):
        seq, ts = 30_000 + 1000 * n, 8_000_000 + 800_000 * n
        for digit in (1, 2, 9):
            for i, dur in enumerate((160, 320, 480)):
                sock.sendto(_rtp_packet(DTMF_PT, seq, ts, DtmfEvent(digit, False, 10, dur).serialize(), PEER_SSRC,
                                        marker=i == 0), ua_rtp)
                seq += 1
            for _ in range(3):
                sock.sendto(_rtp_packet(DTMF_PT, seq, ts, DtmfEvent(digit, True, 10, 640).serialize(), PEER_SSRC),
                            ua_rtp)
                seq += 1
            ts += 800
            sent += 6
        tone = ulaw_encode(generate_dtmf("1", 300))
        for i in range(0, len(tone), 160):
            sock.sendto(_rtp_packet(0, seq, ts, tone[i:i + 160], PEER_SSRC, marker=i == 0), ua_rtp)
            seq, ts, sent = seq + 1, ts + 160, sent + 1
    return sent


def _drain(sock: socket.socket, into: list[bytes]) -> None:
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            into.append(sock.recv(65535))


def fuzz(live: Live, sip_sock: socket.socket, rtp_sock: socket.socket, answers: list[bytes]) -> int:
    """Runs in a worker thread while the call is up; returns how many datagrams were sent."""
    sent = 0
    me = sip_sock.getsockname()[1]
    for data in forgeries(live, me):
        sip_sock.sendto(data, ("127.0.0.1", live.ua_port))
        sent += 1
    _drain(sip_sock, answers)

    @settings(max_examples=200, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(sip=st.lists(st.one_of(st.binary(max_size=400), sipish(live)), min_size=1, max_size=8),
           rtp=st.lists(rtp_junk(), max_size=6))
    def one(sip: list[bytes], rtp: list[bytes]) -> None:
        nonlocal sent
        for data in sip:
            sip_sock.sendto(data, ("127.0.0.1", live.ua_port))
        for data in rtp:
            rtp_sock.sendto(data, ("127.0.0.1", live.rtp_port))
        sent += len(sip) + len(rtp)
        _drain(sip_sock, answers)

    one()
    return sent


async def _until(cond: Any, timeout_s: float) -> None:
    for _ in range(int(timeout_s * 20)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {timeout_s} s: {cond}")


def _live(peer: HeldPeer, ua: UserAgent) -> Live:
    invite = peer.invite
    assert invite is not None and peer.to_tag is not None
    return Live(call_id=invite.call_id or "", our_tag=tag_of(invite.headers.get_first("from")) or "",
                peer_tag=peer.to_tag, ua_port=ua.port, rtp_port=_m_port(invite),
                invite_branch=top_branch(invite) or "", our_from=invite.headers.get_first("from") or "",
                peer_to=invite.headers.get_first("to") or "")


class Prompts:
    """Observer: which prompts the runner started (fuzzing starts once the first one plays)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def prompt_started(self, prompt_id: str, at: float) -> None:
        self.started.append(prompt_id)


async def test_fuzzing_a_live_call_never_crashes_the_dialer(db: sessionmaker[Session], vault: Vault, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    caplog.set_level(logging.WARNING)
    [elder] = make_world(db, vault, [NUMBER])
    cid = Queue(db, load_policy()).request_call(elder, RequestKind.MANUAL, datetime.now(UTC), reason="模糊测试",
                                                 source="test", ignore_call_window=True).id
    peer = await HeldPeer.open(rule=lambda _n: Behaviour(Answer.ANSWER, 0))
    ua = UserAgent(SipConfig(local_host="127.0.0.1"))
    await ua.start()
    prompts = Prompts()
    runner = CallRunner(ua, PromptCache(tmp_path / "prompts"), asr=None, parser=None,
                        config=RunnerConfig(ring_timeout_s=10, recordings_dir=tmp_path / "rec"))
    dialer = Dialer(sessions=db, runner=runner, engine=DialogEngine(load_scripts()), dial_plan=DialPlan(peer.template),
                    vault=vault, config=DialerConfig(worker="fuzz-dialer", poll_s=0.2), policy=load_policy(),
                    observer=prompts)
    task = asyncio.create_task(dialer.run())
    answers: list[bytes] = []
    try:
        await _until(lambda: peer.acked.is_set() and ua.active_calls == 1 and prompts.started, 60)
        live = _live(peer, ua)
        [call] = ua._calls.values()
        await _until(lambda: call.media.source == peer.rtp_addr, 10)  # the callee's media is heard
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sip_sock, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp_sock, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other_host:
            sip_sock.bind(("127.0.0.1", 0))
            rtp_sock.bind(("127.0.0.1", 0))  # the callee's host, another port
            other_host.bind(("127.0.0.2", 0))
            sent = await asyncio.to_thread(fuzz, live, sip_sock, rtp_sock, answers)
            forged = await asyncio.to_thread(forged_key_presses, ("127.0.0.1", live.rtp_port), [rtp_sock, other_host])
            await asyncio.sleep(0.5)
            _drain(sip_sock, answers)
        # the call survived: we never sent BYE, it is still live, and the UA still answers
        assert peer.sent_by_us("BYE") == 0
        assert ua.active_calls == 1 and not dialer.stats.settled
        assert prompts.started[-1] == "q.identity"  # still at the first question: nothing was "pressed"
        assert call.media.source == peer.rtp_addr
        assert call.media.packets_foreign >= forged  # every forged key press (and the RTP junk) dropped
        assert await options_answered(ua.port)
        # the callee's proper BYE ends it
        peer.release.set()
        await _until(lambda: len(dialer.stats.settled) == 1, 60)
    finally:
        await dialer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 60)
        await ua.stop()
        peer.close()
        loop.set_exception_handler(previous_handler)
    assert peer.sent_by_us("BYE") == 0  # the call ended by the callee's BYE, not by us
    with db() as s:
        attempts = s.scalars(select(CallAttempt).where(CallAttempt.checkin_id == cid)).all()
        assert len(attempts) == 1
        [attempt] = attempts
        assert attempt.result == "answered" and attempt.sip_status == 200 and not attempt.trunk_failure
        assert not attempt.digits  # no key press was invented by forged RTP, RTP junk or SIP INFO
        assert attempt.outcome is Outcome.UNREACHED  # answered, but no question was answered before the hang-up
    assert loop_errors == []
    foreign = [r for r in caplog.records if getattr(r, "action", None) == "rtp_foreign_dropped"]
    assert len(foreign) == 1 and "127.0.0.1" in foreign[0].getMessage()  # once per call, not per packet
    tracebacks = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert tracebacks == [], [r.getMessage() for r in tracebacks]
    statuses = [a.split(b" ", 2)[1] for a in answers if a.startswith(b"SIP/2.0 ")]
    assert b"500" not in statuses
    assert {b"200", b"481", b"488"} <= set(statuses)  # in-dialog OPTIONS/INFO, forged BYEs, junk SDP
    assert all(s == b"501" for s in statuses if s.startswith(b"5"))  # only "Not Implemented" for unknown methods
    print(f"\nSIP/RTP fuzz during a live call: {sent} datagrams sent, {len(answers)} answers "
          f"({', '.join(sorted({s.decode() for s in statuses}))}); {forged} forged key-press packets, "
          f"{call.media.packets_foreign} RTP packets dropped as foreign; call ended by the callee's BYE")
