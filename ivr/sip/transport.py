"""SIP over UDP or TCP on top of aiosipua's transports (parser + framing), with the parts we need.

Adds what aiosipua's transports leave to the caller: the bound port when asked for port 0,
connect-on-send for TCP (connections reused per peer), a reply path (UDP: Via ``received``/
``rport``; TCP: the connection the request came in on) and one error type for send failures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiosipua.message import SipRequest, SipResponse
from aiosipua.transport import TcpSipTransport, UdpSipTransport, _response_destination

from ivr.sip.config import TransportKind

logger = logging.getLogger(__name__)


class _UnparsableFilter(logging.Filter):
    """aiosipua logs a WARNING with a full traceback for every datagram it cannot parse (and one for
    every body that does not match its Content-Length), so a junk flood would become a log flood.
    Keep the first line of such a warning, without the traceback, at most once per ``every_s`` and
    say how many were left out."""

    def __init__(self, every_s: float = 60.0, prefixes: tuple[str, ...] = ("Failed to parse SIP message",)) -> None:
        super().__init__()
        self.every_s = every_s
        self.prefixes = prefixes
        self._last = -every_s
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefixes):
            return True
        record.exc_info = None
        record.exc_text = None
        now = record.created
        if now - self._last < self.every_s:
            self.suppressed += 1
            return False
        self._last = now
        if self.suppressed:
            record.msg = f"{record.msg} ({self.suppressed} more since the last report)"
            self.suppressed = 0
        return True


unparsable_filter = _UnparsableFilter()
logging.getLogger("aiosipua.transport").addFilter(unparsable_filter)
content_length_filter = _UnparsableFilter(prefixes=("Body shorter than Content-Length",
                                                    "Body longer than Content-Length"))
logging.getLogger("aiosipua.message").addFilter(content_length_filter)

Handler = Callable[[SipRequest | SipResponse, tuple[str, int]], None]


class _UdpReceiver(asyncio.DatagramProtocol):
    """Feeds datagrams to aiosipua's parser/dispatcher (its own protocol asserts on the transport type)."""

    def __init__(self, owner: UdpSipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._owner._dispatch(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        logger.debug("SIP UDP socket error: %s", exc, extra={"action": "sip_udp_error"})


class SipTransportError(Exception):
    """A message could not be sent (connection refused, reset, socket closed)."""


def check_destination(addr: tuple[str, int]) -> None:
    """Raise :class:`SipTransportError` unless ``addr`` is a host and a port 1–65535."""
    host, port = addr
    if not isinstance(host, str) or not host or not isinstance(port, int) or not 0 < port < 65536:
        raise SipTransportError(f"invalid destination {host!r}:{port!r}")


class SipTransport:
    """One listening socket (UDP) or server plus outgoing connections (TCP)."""

    def __init__(self, kind: TransportKind, host: str, port: int, handler: Handler) -> None:
        self.kind = kind
        self.host = host
        self.port = port
        self._handler = handler
        self._udp: UdpSipTransport | None = None
        self._tcp: TcpSipTransport | None = None
        self._connecting: dict[tuple[str, int], asyncio.Future[None]] = {}

    @property
    def via_transport(self) -> str:
        return "TCP" if self.kind is TransportKind.TCP else "UDP"

    @property
    def reliable(self) -> bool:
        return self.kind is TransportKind.TCP

    async def start(self) -> None:
        if self.kind is TransportKind.UDP:
            self._udp = UdpSipTransport(local_addr=(self.host, self.port), on_message=self._safe_handler)
            loop = asyncio.get_running_loop()
            udp_transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpReceiver(self._udp), local_addr=(self.host, self.port))  # type: ignore[arg-type]
            self._udp._udp_transport = udp_transport
            self.port = int(udp_transport.get_extra_info("sockname")[1])
        else:
            self._tcp = TcpSipTransport(local_addr=(self.host, self.port), on_message=self._safe_handler)
            await self._tcp.start()
            assert self._tcp._server is not None
            self.port = int(self._tcp._server.sockets[0].getsockname()[1])

    def _safe_handler(self, msg: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        try:
            self._handler(msg, addr)
        except Exception:
            logger.exception("SIP message handler failed", extra={"action": "sip_handler_error"})

    async def send(self, msg: SipRequest | SipResponse, addr: tuple[str, int]) -> None:
        """Send to ``addr``; for TCP open (or reuse) a connection first.

        The address is checked first: asyncio's datagram transport treats anything but an
        ``OSError`` from ``sendto`` (a port outside 0–65535 raises ``OverflowError``) as fatal and
        closes the socket, so one forged Via or Contact port would leave the UA deaf.
        """
        check_destination(addr)
        try:
            if self._udp is not None:
                self._udp.send(msg, addr)
                return
            if self._tcp is None:
                raise SipTransportError("transport not started")
            if addr not in self._tcp._connections:
                await self._connect(addr)
            self._tcp.send(msg, addr)
        except (OSError, RuntimeError, ValueError) as exc:
            raise SipTransportError(f"cannot send to {addr[0]}:{addr[1]} over {self.kind}: {exc}") from exc

    async def _connect(self, addr: tuple[str, int]) -> None:
        assert self._tcp is not None
        pending = self._connecting.get(addr)
        if pending is not None:
            await pending
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._connecting[addr] = fut
        try:
            await asyncio.wait_for(self._tcp.connect(addr), timeout=5)
            fut.set_result(None)
        except (OSError, TimeoutError) as exc:
            fut.set_exception(SipTransportError(str(exc)))
            fut.exception()  # mark retrieved
            raise SipTransportError(f"TCP connect to {addr[0]}:{addr[1]} failed: {exc}") from exc
        finally:
            self._connecting.pop(addr, None)

    async def reply(self, response: SipResponse, source: tuple[str, int]) -> None:
        """Send a response: TCP back on the connection it came from, UDP per Via (RFC 3261 §18.2.2)."""
        if self.kind is TransportKind.TCP:
            dest = source
        else:
            dest = _response_destination(response) or source
        try:
            await self.send(response, dest)
        except SipTransportError as exc:
            logger.warning("could not send response: %s", exc, extra={"action": "sip_reply_failed"})

    async def stop(self) -> None:
        if self._udp is not None:
            await self._udp.stop()
            self._udp = None
        if self._tcp is not None:
            await self._tcp.stop()
            self._tcp = None
