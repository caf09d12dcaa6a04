"""Forged or broken values inside well-formed SIP messages (bugs found by tests/security/test_sip_call_fuzz.py).

Each test stages one message against a live UA over a real UDP socket (no mocks).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from ivr.sip import CallState, UserAgent
from ivr.sip.messages import make_response
from ivr.sip.sdp import SdpError, build_sdp, parse_remote
from ivr.sip.transport import unparsable_filter
from tests.unit.sip.fake_peer import SDP, FakePeer
from tests.unit.sip.test_state_machines import answer, in_dialog_request


def _options(agent: UserAgent, via_port: int, call_id: str) -> bytes:
    return (f"OPTIONS sip:ivr@127.0.0.1:{agent.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:f@x>;tag=1\r\nTo: <sip:ivr@x>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


async def test_reply_to_a_via_port_out_of_range_keeps_the_socket_open(ua: UserAgent, peer: FakePeer) -> None:
    """asyncio closes a datagram socket when sendto raises anything but OSError (port 99999: OverflowError)."""
    assert peer.transport is not None
    peer.transport.sendto(_options(ua, 99999, "bad-port"), ("127.0.0.1", ua.port))
    await asyncio.sleep(0.1)
    peer.transport.sendto(_options(ua, peer.port, "good"), ("127.0.0.1", ua.port))
    ok, _ = await peer.expect(status=200)
    assert ok.call_id == "good"


@pytest.mark.parametrize("sdp", [
    SDP.format(port=99999),
    SDP.format(port=-5),
    SDP.format(port=40010).replace("c=IN IP4 127.0.0.1", "c=IN IP4 media.invalid"),
])
async def test_reinvite_with_unusable_media_address_is_refused(ua: UserAgent, peer: FakePeer, sdp: str) -> None:
    call, invite, _ = await answer(ua, peer)
    before = call.media.remote
    peer.send(in_dialog_request(peer, invite, "INVITE", 2, ua, body=sdp), ("127.0.0.1", ua.port))
    await peer.expect(status=488)
    assert call.media.remote == before and call.state is CallState.ANSWERED


def test_parse_remote_names_the_bad_port_or_address() -> None:
    ours = build_sdp("127.0.0.1", 20000, 1, 1)
    with pytest.raises(SdpError, match="port 70000"):
        parse_remote(ours.replace(b"m=audio 20000", b"m=audio 70000"))
    with pytest.raises(SdpError, match="not an IP address"):
        parse_remote(ours.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 example.invalid"))


@pytest.mark.parametrize("contact", ["<sip:>", "<sip:elder@127.0.0.1:99999>"])
async def test_reinvite_with_unusable_contact_keeps_the_remote_target(ua: UserAgent, peer: FakePeer,
                                                                       contact: str) -> None:
    call, invite, _ = await answer(ua, peer)
    reinvite = in_dialog_request(peer, invite, "INVITE", 2, ua)
    reinvite.headers.set_single("Contact", contact)
    peer.send(reinvite, ("127.0.0.1", ua.port))
    await peer.expect(status=200)
    assert call.dialog is not None and call.dialog.remote_target == f"sip:elder@127.0.0.1:{peer.port}"
    await call.hangup()  # raised ValueError ("SIP URI without host") or lost the BYE
    await peer.expect("BYE")


async def test_2xx_with_unusable_contact_is_acked_at_the_request_uri(ua: UserAgent, peer: FakePeer) -> None:
    call, _, _ = await answer(ua, peer, contact="<sip:elder@127.0.0.1:99999>")
    await peer.expect("ACK")
    assert call.state is CallState.ANSWERED


async def test_bye_matching_no_dialog_gets_481_even_without_to_tag(ua: UserAgent, peer: FakePeer) -> None:
    call, invite, _ = await answer(ua, peer)
    bye = in_dialog_request(peer, invite, "BYE", 2, ua)
    bye.headers.set_single("To", f"<sip:ivr@127.0.0.1:{ua.port}>")  # no tag: not our dialog
    peer.send(bye, ("127.0.0.1", ua.port))
    resp, _ = await peer.expect(status=481)
    assert resp.cseq is not None and resp.cseq.method == "BYE"
    assert call.state is CallState.ANSWERED and not call.hung_up.is_set()


async def test_junk_flood_is_not_a_traceback_flood(ua: UserAgent, peer: FakePeer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """aiosipua logs a WARNING with a traceback per unparsable datagram; we keep at most one line a minute."""
    assert peer.transport is not None
    caplog.set_level(logging.DEBUG, logger="aiosipua.transport")
    before = unparsable_filter.suppressed
    for i in range(30):
        peer.transport.sendto(b"\x00junk %d\r\n\r\n" % i, ("127.0.0.1", ua.port))
    peer.transport.sendto(_options(ua, peer.port, "after-junk"), ("127.0.0.1", ua.port))
    ok, _ = await peer.expect(status=200)
    assert ok.call_id == "after-junk"
    records = [r for r in caplog.records if r.name == "aiosipua.transport"]
    assert len(records) <= 1 and all(r.exc_info is None and r.exc_text is None for r in records)
    # the 30 datagrams: one line (the counter restarts after it) or all counted as left out
    assert unparsable_filter.suppressed == (29 if records else before + 30)


def _short_body(msg: bytes, missing: int = 40) -> bytes:
    """``msg`` with a Content-Length ``missing`` bytes larger than its body (a cut-short datagram)."""
    head, _, body = msg.partition(b"\r\n\r\n")
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"content-length:")]
    return b"\r\n".join([*lines, b"Content-Length: %d" % (len(body) + missing)]) + b"\r\n\r\n" + body


async def test_udp_request_shorter_than_its_content_length_gets_400_and_is_not_processed(
        ua: UserAgent, peer: FakePeer, caplog: pytest.LogCaptureFixture) -> None:
    """RFC 3261 §18.3: over UDP a request whose body is shorter than Content-Length gets 400."""
    assert peer.transport is not None
    caplog.set_level(logging.DEBUG, logger="aiosipua.message")
    call, invite, _ = await answer(ua, peer)
    # the callee's own BYE, right tags and all, but cut short: the call must not end
    bye = in_dialog_request(peer, invite, "BYE", 2, ua, body="x" * 20)
    peer.transport.sendto(_short_body(bytes(bye)), ("127.0.0.1", ua.port))
    resp, _ = await peer.expect(status=400)
    assert resp.cseq is not None and resp.cseq.method == "BYE" and resp.call_id == invite.call_id
    reinvite = in_dialog_request(peer, invite, "INVITE", 3, ua, body=SDP.format(port=40010))
    peer.transport.sendto(_short_body(bytes(reinvite), 1), ("127.0.0.1", ua.port))
    resp, _ = await peer.expect(status=400)
    assert resp.cseq is not None and resp.cseq.method == "INVITE"
    assert call.state is CallState.ANSWERED and not call.hung_up.is_set()
    assert call.media.remote == ("127.0.0.1", 40000)  # the re-INVITE's SDP was not applied
    for length in ("-1", "abc", "18446744073709551617"):  # not a Content-Length at all
        opts = _options(ua, peer.port, f"cl{length}").replace(b"Content-Length: 0", f"Content-Length: {length}".encode())
        peer.transport.sendto(opts, ("127.0.0.1", ua.port))
        resp, _ = await peer.expect(status=400)
        assert resp.call_id == f"cl{length}"
    for i in range(20):  # a flood of them is not a log flood
        peer.transport.sendto(_short_body(_options(ua, peer.port, f"flood{i}")), ("127.0.0.1", ua.port))
    # an ACK cut short is dropped (an ACK is never answered); a complete request still works
    ack = in_dialog_request(peer, invite, "ACK", 3, ua, body="v=0")
    peer.transport.sendto(_short_body(bytes(ack)), ("127.0.0.1", ua.port))
    peer.transport.sendto(_options(ua, peer.port, "whole"), ("127.0.0.1", ua.port))
    ok, _ = await peer.expect(status=200)
    assert ok.call_id == "whole"
    assert sum(1 for m in peer.log if getattr(m, "status_code", None) == 400) == 2 + 3 + 20
    assert len([r for r in caplog.records if r.name == "aiosipua.message"]) <= 1
    # the complete BYE ends the call
    peer.send(in_dialog_request(peer, invite, "BYE", 4, ua), ("127.0.0.1", ua.port))
    await peer.expect(status=200)
    assert call.hung_up.is_set()


async def test_udp_response_shorter_than_its_content_length_is_discarded(ua: UserAgent, peer: FakePeer) -> None:
    """RFC 3261 §18.3: a cut-short response MUST be discarded; the next complete one is used."""
    assert peer.transport is not None
    task = asyncio.create_task(ua.call(peer.uri, ring_timeout_s=5))
    invite, addr = await peer.expect("INVITE")
    ok = make_response(invite, 200, "OK", to_tag="peertag")
    ok.headers.set_single("Contact", f"<sip:elder@127.0.0.1:{peer.port}>")
    ok.headers.set_single("Content-Type", "application/sdp")
    ok.body = SDP.format(port=40000).encode()
    peer.transport.sendto(_short_body(bytes(ok)), addr)
    await asyncio.sleep(0.3)
    assert not task.done() and peer.count("ACK") == 0  # not answered by the cut-short 200
    peer.send(ok, addr)  # the callee's retransmission
    call = await task
    assert call.state is CallState.ANSWERED and call.media.remote == ("127.0.0.1", 40000)
    await peer.expect("ACK")
