"""Transaction and dialog behaviour of our UA against a scripted in-process peer (no mocks)."""

from __future__ import annotations

import asyncio

from aiosipua.message import SipRequest

from ivr.sip import CallResult, CallState, SipConfig, UserAgent
from ivr.sip.messages import make_response, tag_of, top_branch
from tests.unit.sip.fake_peer import FAST, SDP, FakePeer


def in_dialog_request(peer: FakePeer, invite: SipRequest, method: str, seq: int, ua: UserAgent,
                      body: str = "") -> SipRequest:
    """A request from the callee to us inside the dialog our INVITE created."""
    req = SipRequest(method=method, uri=f"sip:ivr@127.0.0.1:{ua.port}")
    req.headers.append("Via", f"SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bKpeer{method}{seq}")
    req.headers.set_single("From", f"{invite.headers.get_first('to')};tag=peertag")
    req.headers.set_single("To", invite.headers.get_first("from") or "")
    req.headers.set_single("Call-ID", invite.call_id or "")
    req.headers.set_single("CSeq", f"{seq} {method}")
    req.headers.set_single("Contact", f"<sip:elder@127.0.0.1:{peer.port}>")
    if body:
        req.headers.set_single("Content-Type", "application/sdp")
        req.body = body.encode()
    return req


async def answer(ua: UserAgent, peer: FakePeer, **reply_kwargs):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(ua.call(peer.uri, ring_timeout_s=5))
    invite, addr = await peer.expect("INVITE")
    peer.reply(invite, addr, 200, "OK", sdp_port=40000, **reply_kwargs)
    call = await task
    return call, invite, addr


async def test_invite_retransmits_then_acks_each_486(ua: UserAgent, peer: FakePeer) -> None:
    task = asyncio.create_task(ua.call(peer.uri, ring_timeout_s=5))
    invite, addr = await peer.expect("INVITE")
    await peer.expect("INVITE")  # Timer A: T1
    await peer.expect("INVITE")  # 2*T1
    peer.reply(invite, addr, 486, "Busy Here")
    call = await task
    assert call.outcome is CallResult.BUSY and call.sip_status == 486
    ack, _ = await peer.expect("ACK")
    assert top_branch(ack) == top_branch(invite)  # same transaction (§17.1.1.3)
    assert tag_of(ack.headers.get_first("to")) == "peertag"
    assert ack.cseq is not None and ack.cseq.seq == 1 and ack.cseq.method == "ACK"
    peer.reply(invite, addr, 486, "Busy Here")  # a retransmitted final gets the ACK again
    await peer.expect("ACK")
    invites_then = peer.count("INVITE")
    await asyncio.sleep(0.3)
    assert peer.count("INVITE") == invites_then  # no more retransmissions after a final


async def test_timer_b_gives_timeout(ua: UserAgent, peer: FakePeer) -> None:
    call = await ua.call(peer.uri, ring_timeout_s=30)
    assert call.outcome is CallResult.TIMEOUT and call.sip_status is None
    assert peer.count("INVITE") >= 3


async def test_200_racing_cancel_gets_ack_and_bye(ua: UserAgent, peer: FakePeer) -> None:
    task = asyncio.create_task(ua.call(peer.uri, ring_timeout_s=0.3))
    invite, addr = await peer.expect("INVITE")
    peer.reply(invite, addr, 180, "Ringing")
    cancel, caddr = await peer.expect("CANCEL")
    assert top_branch(cancel) == top_branch(invite)
    peer.send(make_response(cancel, 200, "OK", to_tag="peertag"), caddr)
    peer.reply(invite, addr, 200, "OK", sdp_port=40000)  # the callee picked up just then
    ack, _ = await peer.expect("ACK")
    assert top_branch(ack) != top_branch(invite)  # 2xx ACK is its own transaction
    bye, baddr = await peer.expect("BYE")
    peer.send(make_response(bye, 200, "OK"), baddr)
    call = await task
    assert call.outcome is CallResult.NO_ANSWER
    assert call.state is CallState.ENDED


async def test_ack_and_bye_follow_contact_and_record_route(ua: UserAgent, peer: FakePeer) -> None:
    phone = await FakePeer.open()  # the callee's own address, behind the "proxy" peer
    try:
        call, invite, addr = await answer(
            ua, peer, contact=f"<sip:elder@127.0.0.1:{phone.port}>",
            record_route=[f"<sip:127.0.0.1:{peer.port};lr>"])
        ack, _ = await peer.expect("ACK")
        assert ack.uri == f"sip:elder@127.0.0.1:{phone.port}"  # Request-URI = remote target
        assert ack.headers.get("route") == [f"<sip:127.0.0.1:{peer.port};lr>"]
        hang = asyncio.create_task(call.hangup())
        bye, baddr = await peer.expect("BYE")
        assert bye.uri == ack.uri and bye.headers.get("route") == ack.headers.get("route")
        peer.send(make_response(bye, 200, "OK"), baddr)
        await hang
        assert phone.log == []  # everything went through the route set
    finally:
        phone.close()


async def test_2xx_retransmission_is_acked_again(ua: UserAgent, peer: FakePeer) -> None:
    call, invite, addr = await answer(ua, peer)
    await peer.expect("ACK")
    peer.reply(invite, addr, 200, "OK", sdp_port=40000)
    await peer.expect("ACK")
    assert call.state is CallState.ANSWERED


async def test_bye_retransmitted_until_answered(ua: UserAgent, peer: FakePeer) -> None:
    call, _, _ = await answer(ua, peer)
    hang = asyncio.create_task(call.hangup())
    first, _ = await peer.expect("BYE")
    second, baddr = await peer.expect("BYE")  # Timer E retransmission, same branch
    assert top_branch(first) == top_branch(second)
    peer.send(make_response(second, 200, "OK"), baddr)
    await hang
    assert call.ended_by == "local"


async def test_bye_from_peer_and_retransmission(ua: UserAgent, peer: FakePeer) -> None:
    call, invite, _ = await answer(ua, peer)
    uaddr = ("127.0.0.1", ua.port)
    bye = in_dialog_request(peer, invite, "BYE", 1, ua)
    peer.send(bye, uaddr)
    ok, _ = await peer.expect(status=200)
    await asyncio.wait_for(call.hung_up.wait(), 1)
    assert call.ended_by == "remote"
    peer.send(bye, uaddr)  # a retransmitted BYE is answered again
    await peer.expect(status=200)
    stranger = in_dialog_request(peer, invite, "BYE", 2, ua)
    stranger.headers.set_single("Call-ID", "unknown@x")
    peer.send(stranger, uaddr)
    await peer.expect(status=481)


async def test_reinvite_answered_with_current_sdp(ua: UserAgent, peer: FakePeer) -> None:
    call, invite, _ = await answer(ua, peer)
    reinvite = in_dialog_request(peer, invite, "INVITE", 2, ua, body=SDP.format(port=40010))
    peer.send(reinvite, ("127.0.0.1", ua.port))
    ok, _ = await peer.expect(status=200)
    assert f"m=audio {call.media.local_port} " in ok.body.decode()
    assert call.media.remote == ("127.0.0.1", 40010)  # the far end moved its media
    await peer.expect(status=200)  # not ACKed yet: retransmitted
    ack = in_dialog_request(peer, invite, "ACK", 2, ua)
    peer.send(ack, ("127.0.0.1", ua.port))
    await asyncio.sleep(0.3)
    count = sum(1 for m in peer.log if getattr(m, "status_code", 0) == 200)
    await asyncio.sleep(0.5)
    assert sum(1 for m in peer.log if getattr(m, "status_code", 0) == 200) == count
    assert call.state is CallState.ANSWERED


async def test_refer_true_only_on_2xx_notify(ua: UserAgent, peer: FakePeer) -> None:
    call, invite, _ = await answer(ua, peer)
    task = asyncio.create_task(call.refer("sip:duty@127.0.0.1:5999", timeout_s=2))
    refer, raddr = await peer.expect("REFER")
    assert refer.headers.get_first("refer-to") == "<sip:duty@127.0.0.1:5999>"
    peer.send(make_response(refer, 202, "Accepted"), raddr)
    notify = in_dialog_request(peer, invite, "NOTIFY", 2, ua, body="")
    notify.headers.set_single("Event", "refer")
    notify.headers.set_single("Subscription-State", "terminated;reason=noresource")
    notify.headers.set_single("Content-Type", "message/sipfrag")
    notify.body = b"SIP/2.0 200 OK\r\n"
    peer.send(notify, ("127.0.0.1", ua.port))
    assert await task is True


async def test_refer_refused_is_false(ua: UserAgent, peer: FakePeer) -> None:
    call, _, _ = await answer(ua, peer)
    task = asyncio.create_task(call.refer("sip:duty@127.0.0.1:5999", timeout_s=2))
    refer, raddr = await peer.expect("REFER")
    peer.send(make_response(refer, 603, "Decline"), raddr)
    assert await task is False


async def test_407_is_answered_once_then_auth_failed(peer: FakePeer) -> None:
    agent = UserAgent(SipConfig(local_host="127.0.0.1", username="ivr", password="pw", **FAST))
    await agent.start()
    try:
        task = asyncio.create_task(agent.call(peer.uri, ring_timeout_s=5))
        for n in range(3):
            invite, addr = await peer.expect("INVITE")
            if n:
                assert "Proxy-Authorization" in bytes(invite).decode()
            resp = make_response(invite, 407, "Proxy Authentication Required", to_tag=f"t{n}")
            resp.headers.set_single("Proxy-Authenticate", f'Digest realm="x", nonce="n{n}", qop="auth"')
            peer.send(resp, addr)
            await peer.expect("ACK")
        call = await task
        assert call.outcome is CallResult.AUTH_FAILED and call.sip_status == 407
    finally:
        await agent.stop()
