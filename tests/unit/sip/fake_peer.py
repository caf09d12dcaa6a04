"""A tiny scripted SIP peer on a UDP socket, for driving our transaction and dialog state machines.

It does nothing by itself: the test reads what arrived (``expect``) and sends what it wants
(``reply`` / ``send``), which makes races (a 200 after our CANCEL) and losses easy to stage.
"""

from __future__ import annotations

import asyncio
import socket

from aiosipua.message import SipMessage, SipRequest, SipResponse

from ivr.sip.messages import make_response

# SIP timers shortened so that retransmission and timeout paths run in a test's time.
FAST = {"t1_s": 0.05, "t2_s": 0.4, "invite_timeout_s": 1.0, "non_invite_timeout_s": 1.0, "cancel_wait_s": 1.0}

SDP = (
    "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


class FakePeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.inbox: asyncio.Queue[tuple[SipRequest | SipResponse, tuple[str, int]]] = asyncio.Queue()
        self.log: list[SipRequest | SipResponse] = []

    @classmethod
    async def open(cls) -> FakePeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = SipMessage.parse(data)
        self.log.append(msg)
        self.inbox.put_nowait((msg, addr))

    @property
    def uri(self) -> str:
        return f"sip:elder@127.0.0.1:{self.port}"

    async def expect(self, method: str | None = None, *, status: int | None = None,
                     wait_s: float = 3.0) -> tuple[SipRequest | SipResponse, tuple[str, int]]:
        """Next message that is request ``method`` or response ``status`` (others are skipped)."""
        async with asyncio.timeout(wait_s):
            while True:
                msg, addr = await self.inbox.get()
                if method and isinstance(msg, SipRequest) and msg.method == method:
                    return msg, addr
                if status and isinstance(msg, SipResponse) and msg.status_code == status:
                    return msg, addr

    def count(self, method: str) -> int:
        return sum(1 for m in self.log if isinstance(m, SipRequest) and m.method == method)

    def send(self, msg: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(bytes(msg), addr)

    def reply(self, request: SipRequest, addr: tuple[str, int], status: int, reason: str, *,
              tag: str = "peertag", sdp_port: int | None = None, contact: str | None = None,
              record_route: list[str] | None = None) -> SipResponse:
        resp = make_response(request, status, reason, to_tag=tag)
        resp.headers.set_single("Contact", contact or f"<sip:elder@127.0.0.1:{self.port}>")
        for rr in record_route or []:
            resp.headers.append("Record-Route", rr)
        if sdp_port is not None:
            resp.headers.set_single("Content-Type", "application/sdp")
            resp.body = SDP.format(port=sdp_port).encode()
        self.send(resp, addr)
        return resp

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def options_answered(port: int, timeout_s: float = 10.0) -> bool:
    """Whether a UA on ``port`` still answers an OPTIONS with 200 (its socket survived what came before)."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        me = s.getsockname()[1]
        msg = (f"OPTIONS sip:tanfang@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKprobe"
               "\r\nFrom: <sip:probe@x>;tag=1\r\nTo: <sip:tanfang@x>\r\nCall-ID: options-probe\r\nCSeq: 1 OPTIONS\r\n"
               "Content-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), ("127.0.0.1", port))
        data = await asyncio.wait_for(loop.sock_recv(s, 65535), timeout_s)
        return data.startswith(b"SIP/2.0 200")
