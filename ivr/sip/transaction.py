"""Client transactions (RFC 3261 §17.1): INVITE (Timers A/B, ACK of non-2xx) and non-INVITE (E/F).

Written here because aiosipua's UAC neither retransmits INVITE nor ACKs 486/487, and does not
retransmit in-dialog requests. Responses are matched by the top Via branch plus CSeq method
(§17.1.3); the user agent routes them with :meth:`TransactionTable.dispatch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiosipua.message import SipRequest, SipResponse

from ivr.sip.messages import cseq_of, top_branch
from ivr.sip.transport import SipTransport, SipTransportError

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (branch, method)


def _spawn(coro: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]]) -> asyncio.Task[None]:
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


class ClientTransaction:
    """Non-INVITE client transaction (§17.1.2): UDP retransmits T1, 2T1 … capped at T2."""

    def __init__(self, transport: SipTransport, request: SipRequest, dest: tuple[str, int], *,
                 t1: float, t2: float, timeout_s: float) -> None:
        self.transport = transport
        self.request = request
        self.dest = dest
        self.t1, self.t2, self.timeout_s = t1, t2, timeout_s
        branch = top_branch(request) or ""
        self.key: Key = (branch, request.method.upper())
        self._final: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._provisional = False

    def receive(self, response: SipResponse) -> None:
        if response.status_code < 200:
            self._provisional = True
        elif not self._final.done():
            self._final.set_result(response)

    async def run(self) -> SipResponse | None:
        """Send and wait for the final response; ``None`` when Timer F fires or sending fails."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        interval = self.t1
        try:
            await self.transport.send(self.request, self.dest)
        except SipTransportError as exc:
            logger.warning("request not sent: %s", exc, extra={"action": "sip_send_failed"})
            return None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            wait = remaining if self.transport.reliable else min(interval, remaining)
            try:
                return await asyncio.wait_for(asyncio.shield(self._final), wait)
            except TimeoutError:
                pass
            if not self.transport.reliable and loop.time() < deadline:
                interval = self.t2 if self._provisional else min(interval * 2, self.t2)
                try:
                    await self.transport.send(self.request, self.dest)
                except SipTransportError:
                    return None


class InviteClientTransaction:
    """INVITE client transaction (§17.1.1).

    Timer A retransmits over UDP until any response; Timer B (``timeout_s``, shorter than the
    RFC's 32 s so a dead trunk is noticed quickly) fires ``on_timeout`` when nothing at all came
    back. A non-2xx final is ACKed here, also each retransmission of it (§17.1.1.3); 2xx
    responses (and their retransmissions) go to the TU, which ACKs them end to end (§13.2.2.4).
    """

    def __init__(self, transport: SipTransport, request: SipRequest, dest: tuple[str, int], *,
                 t1: float, timeout_s: float, on_response: Callable[[SipResponse], None],
                 on_timeout: Callable[[], None]) -> None:
        self.transport = transport
        self.request = request
        self.dest = dest
        self.t1 = t1
        self.timeout_s = timeout_s
        self.key: Key = (top_branch(request) or "", "INVITE")
        self._on_response = on_response
        self._on_timeout = on_timeout
        self.state = "calling"
        self.final_status: int | None = None
        self._ack: SipRequest | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.transport.send(self.request, self.dest)
        _spawn(self._timers(), self._tasks)

    async def _timers(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        interval = self.t1
        while self.state == "calling":
            wait = min(interval, deadline - loop.time()) if not self.transport.reliable else deadline - loop.time()
            if wait <= 0:
                self.state = "terminated"
                self._on_timeout()
                return
            await asyncio.sleep(wait)
            if self.state != "calling":
                return
            if loop.time() >= deadline:
                self.state = "terminated"
                self._on_timeout()
                return
            if not self.transport.reliable:
                interval *= 2
                with contextlib.suppress(SipTransportError):
                    await self.transport.send(self.request, self.dest)

    def stop(self) -> None:
        """Stop retransmitting (the TU gave up, e.g. ring timeout without any provisional)."""
        self.state = "terminated"
        for task in list(self._tasks):
            task.cancel()

    def receive(self, response: SipResponse) -> None:
        status = response.status_code
        if status < 200:
            if self.state in ("calling", "proceeding"):
                self.state = "proceeding"
                self._on_response(response)
            return
        if 200 <= status < 300:
            self.final_status = status
            self.state = "accepted"
            self._on_response(response)  # every 2xx: the TU (re)sends its ACK
            return
        ack_needed = self._ack is None
        if ack_needed:
            self._ack = self._build_ack(response)
        _spawn(self._send_ack(), self._tasks)
        if self.state in ("calling", "proceeding"):
            self.state = "completed"
            self.final_status = status
            self._on_response(response)

    async def _send_ack(self) -> None:
        assert self._ack is not None
        try:
            await self.transport.send(self._ack, self.dest)
        except SipTransportError as exc:
            logger.warning("ACK not sent: %s", exc, extra={"action": "sip_ack_failed"})

    def _build_ack(self, response: SipResponse) -> SipRequest:
        """ACK for a non-2xx final: same branch, To from the response, Route as the INVITE (§17.1.1.3)."""
        inv = self.request
        ack = SipRequest(method="ACK", uri=inv.uri)
        ack.headers.append("Via", inv.headers.get("via")[0])
        for name in ("Max-Forwards", "From", "Call-ID"):
            value = inv.headers.get_first(name)
            if value is not None:
                ack.headers.set_single(name, value)
        ack.headers.set_single("To", response.headers.get_first("to") or inv.headers.get_first("to") or "")
        seq = cseq_of(inv)
        ack.headers.set_single("CSeq", f"{seq[0] if seq else 1} ACK")
        for route in inv.headers.get("route"):
            ack.headers.append("Route", route)
        return ack


class TransactionTable:
    """Routes responses to their client transaction by (branch, method)."""

    def __init__(self) -> None:
        self._items: dict[Key, ClientTransaction | InviteClientTransaction] = {}

    def add(self, txn: ClientTransaction | InviteClientTransaction) -> None:
        self._items[txn.key] = txn

    def remove(self, txn: ClientTransaction | InviteClientTransaction) -> None:
        if self._items.get(txn.key) is txn:
            del self._items[txn.key]

    def forget_later(self, txn: ClientTransaction | InviteClientTransaction, delay_s: float) -> None:
        """Keep routing retransmitted finals (ACK them) for a while, then drop (Timer D / K)."""
        asyncio.get_running_loop().call_later(delay_s, self.remove, txn)

    def dispatch(self, response: SipResponse) -> bool:
        branch = top_branch(response)
        seq = cseq_of(response)
        if branch is None or seq is None:
            return False
        txn = self._items.get((branch, seq[1]))
        if txn is None:
            return False
        txn.receive(response)
        return True

    def __len__(self) -> int:
        return len(self._items)
