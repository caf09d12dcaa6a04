"""Malformed input never crashes the UA; RTP receive path (jitter reorder, DTMF dedupe); mappings."""

from __future__ import annotations

import asyncio
import socket
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ivr.media.rtp import AudioFrame, DtmfDigit, RtpSession
from ivr.sip import CallResult, SipConfig, UserAgent, result_for_status
from ivr.sip.sdp import SdpError, build_sdp, parse_remote
from tests.unit.sip.fake_peer import options_answered

SIPISH = st.builds(
    lambda start, headers, body: (start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode()
    + body,
    st.sampled_from(["INVITE sip:x@y SIP/2.0", "BYE sip:a SIP/2.0", "SIP/2.0 200 OK", "SIP/2.0 abc", "OPTIONS",
                     "ACK sip:x SIP/2.0", "SIP/2.0 180", "CANCEL * SIP/2.0", ""]),
    st.lists(st.tuples(st.sampled_from(["Via", "v", "CSeq", "From", "To", "Call-ID", "i", "Content-Length", "l",
                                        "Contact", "Record-Route", "X"]),
                       st.text(max_size=40).map(lambda s: s.replace("\r", "").replace("\n", ""))), max_size=8),
    st.binary(max_size=64),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=300), SIPISH), min_size=1, max_size=15))
def test_random_datagrams_never_crash_the_ua(datagrams: list[bytes]) -> None:
    async def run() -> None:
        ua = UserAgent(SipConfig(local_host="127.0.0.1"))
        await ua.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for d in datagrams:
                    s.sendto(d, ("127.0.0.1", ua.port))
            await asyncio.sleep(0.02)
            assert await options_answered(ua.port, timeout_s=2)
        finally:
            await ua.stop()

    asyncio.run(run())


def _rtp(pt: int, seq: int, ts: int, payload: bytes, marker: int = 0, ssrc: int = 7) -> bytes:
    return struct.pack("!BBHII", 0x80, (marker << 7) | pt, seq, ts, ssrc) + payload


async def test_rtp_reorders_and_dedupes_dtmf_end_packets() -> None:
    session = await RtpSession.open("127.0.0.1")
    session.set_remote(("127.0.0.1", 9), 0, 101)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            dest = ("127.0.0.1", session.local_port)
            order = [0, 1, 3, 2, 4, 5, 6, 7, 8, 9]  # 3 and 2 swapped
            for i in order:
                s.sendto(_rtp(0, 100 + i, 160 * i, bytes([0xFF - i]) * 160), dest)
            for seq in (110, 111, 112):  # one digit, end packet sent three times
                end = struct.pack("!BBH", 5, 0x80 | 10, 1280)
                s.sendto(_rtp(101, seq, 160 * 10, end), dest)
            s.sendto(b"\x00garbage", dest)
            s.sendto(_rtp(0, 113, 160 * 13, b"\xff" * 160), dest)
        await asyncio.sleep(0.2)
        events = session.drain_events()
        frames = [e for e in events if isinstance(e, AudioFrame)]
        digits = [e for e in events if isinstance(e, DtmfDigit)]
        assert [d.digit for d in digits] == ["5"] and digits[0].duration_ms == 160
        stamps = [f.ts for f in frames]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert all(len(f.pcm) == 320 for f in frames)
    finally:
        await session.close()
    assert await session.get(wait_s=0.1) is None


def test_status_mapping() -> None:
    assert result_for_status(486) is CallResult.BUSY
    assert result_for_status(480) is CallResult.UNAVAILABLE
    assert result_for_status(404) is CallResult.NOT_FOUND
    assert result_for_status(408) is CallResult.TIMEOUT
    assert result_for_status(503) is CallResult.TRUNK_ERROR
    assert result_for_status(487) is CallResult.NO_ANSWER
    assert result_for_status(603) is CallResult.REJECTED
    assert CallResult.BUSY.label == "忙线"


def test_sdp_answer_parsing() -> None:
    ours = build_sdp("127.0.0.1", 20000, 1, 1)
    remote = parse_remote(ours)
    assert remote.addr == ("127.0.0.1", 20000) and remote.payload_type == 0 and remote.dtmf_payload_type == 101
    only_pcma = ours.replace(b"RTP/AVP 0 8 101", b"RTP/AVP 8")
    assert parse_remote(only_pcma).payload_type == 8
    try:
        parse_remote(ours.replace(b"RTP/AVP 0 8 101", b"RTP/AVP 18"))
    except SdpError as exc:
        assert "codec" in str(exc)
    else:
        raise AssertionError("G.729-only SDP must be refused")
