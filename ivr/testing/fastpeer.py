"""A minimal, fast SIP UAS standing in for the phone network in chaos tests and benches.

It answers every INVITE at once by a deterministic rule on the dialled number (see
:func:`default_rule`): 200 with an SDP answer and a BYE ``hold_ms`` later, 486 busy, 480
unavailable; ``outage`` makes it a broken trunk (``"503"`` for every INVITE, or ``"silent"``:
no response at all). Every new INVITE (retransmissions are recognised by Call-ID and branch) is
logged with its number, Call-ID and the ``X-Tanfang-Checkin`` header, in memory and optionally
as JSON lines (flushed per line) so a test can count dials per check-in even when the dialer
processes were killed. Built on the project's SIP message helpers; run it as a process with
``python -m ivr.testing.fastpeer --port-file F --log L``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from aiosipua.message import SipMessage, SipRequest, SipResponse

from ivr.sip.messages import address_of, make_response, new_branch, new_tag, uri_of, via_value

SDP = ("v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


class Answer(enum.StrEnum):
    ANSWER = "answer"
    BUSY = "busy"  # 486
    UNAVAILABLE = "unavailable"  # 480 (treated as no answer)


@dataclass(frozen=True)
class Behaviour:
    answer: Answer
    hold_ms: int = 50  # answered: the BYE comes this long after the ACK


def default_rule(number: str) -> Behaviour:
    """Last digit 7 → busy, 8 → unavailable, anything else → answered for 20–80 ms."""
    last = number[-1:] or "0"
    if last == "7":
        return Behaviour(Answer.BUSY)
    if last == "8":
        return Behaviour(Answer.UNAVAILABLE)
    return Behaviour(Answer.ANSWER, 20 + 10 * (int(last) if last.isdigit() else 0) % 70)


@dataclass
class InviteRecord:
    number: str
    call_id: str
    checkin: str | None  # the X-Tanfang-Checkin header ("<id>.<claim version>")
    at: float  # time.time()
    status: int | None  # what we answered (None: nothing)


@dataclass
class _Dialog:
    invite: SipRequest
    source: tuple[str, int]
    to_tag: str
    ok: SipResponse
    acked: bool = False
    bye_done: bool = False


@dataclass
class FastPeer(asyncio.DatagramProtocol):
    rule: Callable[[str], Behaviour] = default_rule
    outage: str | None = None  # None | "503" | "silent"
    log_file: IO[str] | None = None
    invites: list[InviteRecord] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None
    port: int = 0
    _seen: dict[tuple[str, str], SipResponse | None] = field(default_factory=dict)
    _dialogs: dict[str, _Dialog] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    async def open(cls, port: int = 0, **kw: object) -> FastPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(lambda: cls(**kw), local_addr=("127.0.0.1", port))  # type: ignore[arg-type]
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = int(transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self.transport is not None:
            self.transport.close()

    @property
    def template(self) -> str:
        """A dial-plan template for :class:`ivr.dialplan.DialPlan` pointing at this peer."""
        return f"sip:{{number}}@127.0.0.1:{self.port}"

    # ---- wire ------------------------------------------------------------------------------
    def _send(self, msg: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(bytes(msg), addr)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = SipMessage.parse(data)
        except Exception:
            return
        if isinstance(msg, SipResponse):
            d = self._dialogs.get(msg.call_id or "")
            if d is not None and msg.cseq is not None and msg.cseq.method.upper() == "BYE":
                d.bye_done = True
            return
        method = msg.method.upper()
        if method == "INVITE":
            self._invite(msg, addr)
        elif method == "ACK":
            d = self._dialogs.get(msg.call_id or "")
            if d is not None and not d.acked:
                d.acked = True
                self._spawn(self._hang_up_later(d))
        elif method == "BYE":
            self._dialogs.pop(msg.call_id or "", None)
            self._send(make_response(msg, 200, "OK"), addr)
        elif method == "CANCEL":
            self._send(make_response(msg, 200, "OK"), addr)
        elif method == "OPTIONS":
            self._send(make_response(msg, 200, "OK", to_tag=new_tag()), addr)

    def _invite(self, req: SipRequest, addr: tuple[str, int]) -> None:
        call_id = req.call_id or ""
        try:
            branch = req.via[0].branch or ""
        except (ValueError, IndexError):
            branch = ""
        key = (call_id, branch)
        if key in self._seen:  # a retransmission: the same answer again (or silence again)
            again = self._seen[key]
            if again is not None:
                self._send(again, addr)
            return
        number = _user_of(req.uri)
        resp: SipResponse | None
        if self.outage == "silent":
            resp = None
        elif self.outage == "503":
            resp = make_response(req, 503, "Service Unavailable", to_tag=new_tag())
        else:
            b = self.rule(number)
            if b.answer is Answer.BUSY:
                resp = make_response(req, 486, "Busy Here", to_tag=new_tag())
            elif b.answer is Answer.UNAVAILABLE:
                resp = make_response(req, 480, "Temporarily Unavailable", to_tag=new_tag())
            else:
                tag = new_tag()
                resp = make_response(req, 200, "OK", to_tag=tag)
                resp.headers.set_single("Contact", f"<sip:{number}@127.0.0.1:{self.port}>")
                resp.headers.set_single("Content-Type", "application/sdp")
                resp.body = SDP.format(port=9).encode()
                self._dialogs[call_id] = _Dialog(req, addr, tag, resp)
                self._spawn(self._retransmit_ok(call_id, addr))
        self._seen[key] = resp
        if len(self._seen) > 50000:
            for k in list(self._seen)[:10000]:
                del self._seen[k]
        rec = InviteRecord(number, call_id, req.headers.get_first("x-tanfang-checkin"), time.time(),
                           resp.status_code if resp is not None else None)
        self.invites.append(rec)
        if self.log_file is not None:
            self.log_file.write(json.dumps(asdict(rec)) + "\n")
            self.log_file.flush()
        if resp is not None:
            self._send(resp, addr)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retransmit_ok(self, call_id: str, addr: tuple[str, int]) -> None:
        delay = 0.5
        for _ in range(6):  # RFC 3261 §13.3.1.4, shortened
            await asyncio.sleep(delay)
            d = self._dialogs.get(call_id)
            if d is None or d.acked:
                return
            self._send(d.ok, addr)
            delay = min(delay * 2, 4.0)

    async def _hang_up_later(self, d: _Dialog) -> None:
        number = _user_of(d.invite.uri)
        await asyncio.sleep(self.rule(number).hold_ms / 1000)
        if d.invite.call_id not in self._dialogs:
            return  # they hung up first
        contact = d.invite.headers.get_first("contact") or ""
        target = uri_of(contact) if contact else f"sip:127.0.0.1:{d.source[1]}"
        bye = SipRequest(method="BYE", uri=target)
        bye.headers.append("Via", via_value("UDP", "127.0.0.1", self.port, new_branch()))
        bye.headers.set_single("Max-Forwards", "70")
        bye.headers.set_single("From", f"{d.invite.headers.get_first('to')};tag={d.to_tag}")
        bye.headers.set_single("To", d.invite.headers.get_first("from") or "")
        bye.headers.set_single("Call-ID", d.invite.call_id or "")
        bye.headers.set_single("CSeq", "1 BYE")
        bye.headers.set_single("Content-Length", "0")
        try:
            dest = address_of(target)
        except ValueError:
            dest = d.source
        for _ in range(5):
            self._send(bye, dest)
            await asyncio.sleep(0.5)
            if d.bye_done:
                break
        self._dialogs.pop(d.invite.call_id or "", None)


def _user_of(uri: str) -> str:
    rest = uri.split(":", 1)[-1]
    return rest.split("@", 1)[0] if "@" in rest else ""


def _write_port(port_file: str, port: int) -> None:
    tmp = Path(port_file + ".tmp")
    tmp.write_text(str(port))
    tmp.replace(port_file)


async def _serve(port: int, log: IO[str] | None, port_file: str | None) -> None:
    peer = await FastPeer.open(port, log_file=log)
    if port_file:
        await asyncio.to_thread(_write_port, port_file, peer.port)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser(description="fast SIP peer for chaos tests")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--log")
    args = ap.parse_args()
    log = open(args.log, "a", encoding="utf-8") if args.log else None  # noqa: SIM115 - lives as long as the process
    asyncio.run(_serve(args.port, log, args.port_file))


if __name__ == "__main__":
    main()
