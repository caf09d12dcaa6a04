"""The SIP user agent: one transport, outbound calls, answers OPTIONS / BYE / re-INVITE, registration."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from aiosipua.message import SipRequest, SipResponse, missing_required_headers

from ivr.media.rtp import RtpSession
from ivr.sip.auth import DigestAuthenticator
from ivr.sip.call import Call
from ivr.sip.config import SipConfig, TransportKind
from ivr.sip.dialog import Dialog
from ivr.sip.messages import (
    ALLOW,
    address_of,
    cseq_of,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    tag_of,
    via_value,
)
from ivr.sip.registration import Registration
from ivr.sip.transaction import ClientTransaction, TransactionTable
from ivr.sip.transport import SipTransport

logger = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class UserAgent:
    """Outbound-call SIP UA. ``await start()``, then ``await call(target)`` as often as needed."""

    def __init__(self, config: SipConfig, *, now: Callable[[], datetime] = _utcnow) -> None:
        self.config = config
        self._now = now
        self.transport = SipTransport(config.transport, config.local_host, config.local_port, self._on_message)
        self.transactions = TransactionTable()
        self.authenticator = DigestAuthenticator(config.auth_username or config.username, config.password)
        self.registration: Registration | None = None
        self._calls: dict[str, Call] = {}
        self._recent: collections.OrderedDict[tuple[str, str, str], SipResponse] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False

    # ---- identity ------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.config.local_host

    @property
    def port(self) -> int:
        return self.transport.port

    @property
    def domain(self) -> str:
        if self.config.domain:
            return self.config.domain
        if self.config.proxy:
            host, port = address_of(self.config.proxy)
            return host if port == 5060 else f"{host}:{port}"
        return f"{self.host}:{self.port}"

    @property
    def contact(self) -> str:
        params = ";transport=tcp" if self.config.transport is TransportKind.TCP else ""
        return f"<sip:{self.config.username}@{self.host}:{self.port}{params}>"

    def from_address(self) -> str:
        name = f'"{self.config.caller_id}" ' if self.config.caller_id else ""
        return f"{name}<sip:{self.config.username}@{self.domain}>"

    def new_call_id(self) -> str:
        return new_call_id(self.host)

    def target_uri(self, target: str) -> str:
        """``sip:``/``sips:`` URIs pass through; a bare number or user gets our domain."""
        if target.startswith(("sip:", "sips:")):
            return target
        return f"sip:{target}@{self.domain}"

    def initial_destination(self, uri: str) -> tuple[str, int]:
        return address_of(self.config.proxy) if self.config.proxy else address_of(uri)

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the transport; with ``register=True`` also REGISTER and keep it refreshed.

        Raises :class:`ivr.sip.registration.RegistrationError` when the registrar refuses.
        """
        await self.transport.start()
        self._started = True
        logger.info("SIP UA listening on %s:%s/%s", self.host, self.port, self.config.transport,
                    extra={"action": "sip_ua_started"})
        if self.config.register:
            self.registration = Registration(self)
            await self.registration.start()

    async def stop(self) -> None:
        """Hang up live calls, unregister, close the transport."""
        for call in list(self._calls.values()):
            await call.hangup()
        if self.registration is not None:
            await self.registration.stop()
        for task in list(self._tasks):
            task.cancel()
        await self.transport.stop()
        self._started = False

    async def __aenter__(self) -> UserAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- calls ---------------------------------------------------------------------------
    async def call(self, target: str, *, ring_timeout_s: float = 45.0, headers: dict[str, str] | None = None) -> Call:
        """Place a call and return when it is answered or has failed (see ``Call.outcome``)."""
        if not self._started:
            raise RuntimeError("UserAgent.start() was not awaited")
        media = await RtpSession.open(self.host, self.config.rtp_port_range)
        call = Call(self, self.target_uri(target), media, ring_timeout_s=ring_timeout_s, headers=headers,
                    started_at=self._now())
        try:
            await call._dial()
        except BaseException:
            await media.close()
            raise
        if call.outcome is not None:
            logger.info("call finished dialling: %s (%s)", call.outcome, call.sip_status,
                        extra={"action": "sip_call_dialled"})
        return call

    def register_call(self, call: Call) -> None:
        self._calls[call.call_id] = call

    def unregister_call(self, call: Call) -> None:
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    # ---- requests we send ------------------------------------------------------------------
    async def send_request(self, req: SipRequest, dest: tuple[str, int], *, dialog: Dialog | None = None,
                           authenticate: bool = True, timeout_s: float | None = None,
                           keep_via: bool = False) -> SipResponse | None:
        """Run a non-INVITE client transaction, answering one 401/407; ``None`` on timeout.

        ``keep_via`` sends the request with the Via it has (CANCEL must reuse the INVITE's branch).
        """
        resp: SipResponse | None = None
        for _ in range(3):
            if not keep_via or not req.headers.get("via"):
                req.headers.remove("via")
                req.headers.append("Via", via_value(self.transport.via_transport, self.host, self.port, new_branch()))
            txn = ClientTransaction(self.transport, req, dest, t1=self.config.t1_s, t2=self.config.t2_s,
                                    timeout_s=timeout_s or self.config.non_invite_timeout_s)
            self.transactions.add(txn)
            try:
                resp = await txn.run()
            finally:
                self.transactions.remove(txn)
            if resp is None or resp.status_code not in (401, 407) or not authenticate:
                return resp
            seq = cseq_of(req)
            next_seq = (seq[0] if seq else 1) + 1
            if dialog is not None:
                dialog.local_seq = max(dialog.local_seq + 1, next_seq)
                next_seq = dialog.local_seq
            req.headers.set_single("CSeq", f"{next_seq} {req.method}")
            if not self.authenticator.authorize(req, resp):
                return resp
        return resp

    async def options(self, target: str, *, timeout_s: float = 5.0) -> int | None:
        """Ping a peer or trunk with OPTIONS; its status code, or ``None`` when nothing answered."""
        uri = self.target_uri(target)
        req = SipRequest(method="OPTIONS", uri=uri)
        req.headers.set_single("Max-Forwards", "70")
        req.headers.set_single("From", f"{self.from_address()};tag={new_tag()}")
        req.headers.set_single("To", f"<{uri}>")
        req.headers.set_single("Call-ID", self.new_call_id())
        req.headers.set_single("CSeq", "1 OPTIONS")
        req.headers.set_single("User-Agent", self.config.user_agent)
        resp = await self.send_request(req, self.initial_destination(uri), timeout_s=timeout_s)
        return resp.status_code if resp is not None else None

    # ---- what arrives ----------------------------------------------------------------------
    def _on_message(self, msg: SipRequest | SipResponse, source: tuple[str, int]) -> None:
        if not self.transport.reliable and not _body_complete(msg):
            self._on_truncated(msg, source)
            return
        if isinstance(msg, SipResponse):
            if not self.transactions.dispatch(msg):
                logger.debug("stray response %s", msg.status_code, extra={"action": "sip_stray_response"})
            return
        if missing_required_headers(msg) or cseq_of(msg) is None:
            return  # §8.2: not even worth a 400 when Via may be missing
        task = asyncio.ensure_future(self._on_request(msg, source))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_truncated(self, msg: SipRequest | SipResponse, source: tuple[str, int]) -> None:
        """A datagram whose body is shorter than its Content-Length (RFC 3261 §18.3): a response is
        discarded, a request answered 400 (ACK, and a request too broken to answer, dropped)."""
        logger.debug("datagram from %s:%s shorter than its Content-Length (%s)", source[0], source[1],
                     msg.headers.get_first("content-length"), extra={"action": "sip_truncated_body"})
        if isinstance(msg, SipResponse) or msg.method.upper() == "ACK":
            return
        if missing_required_headers(msg) or cseq_of(msg) is None:
            return
        resp = make_response(msg, 400, "Bad Request (body shorter than Content-Length)", to_tag=new_tag())
        task = asyncio.ensure_future(self.transport.reply(resp, source))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_request(self, req: SipRequest, source: tuple[str, int]) -> None:
        try:
            await self._handle_request(req, source)
        except Exception:
            logger.exception("failed to handle %s", req.method, extra={"action": "sip_request_error"})

    async def _handle_request(self, req: SipRequest, source: tuple[str, int]) -> None:
        method = req.method.upper()
        seq = cseq_of(req)
        key = (req.call_id or "", f"{seq[0] if seq else 0}", method)
        cached = self._recent.get(key)
        if cached is not None and method not in ("ACK", "INVITE"):
            await self.transport.reply(cached, source)  # a retransmitted request: same answer
            return
        call = self._calls.get(req.call_id or "")
        if call is not None and call.dialog is not None and call.dialog.matches(req):
            await call.on_request(req, source)
            if method == "BYE":
                self._remember(key, make_response(req, 200, "OK"))
            return
        if method == "ACK":
            return
        if method == "OPTIONS":
            resp = self.options_response(req)
        elif method in ("CANCEL", "BYE") or tag_of(req.headers.get_first("to")):  # BYE matches no dialog (§15.1.2)
            resp = make_response(req, 481, "Call/Transaction Does Not Exist")
        elif method == "INVITE":
            resp = make_response(req, 480, "Temporarily Unavailable", to_tag=new_tag())  # we only call out
        else:
            resp = make_response(req, 405, "Method Not Allowed", to_tag=new_tag())
            resp.headers.set_single("Allow", ALLOW)
        self._remember(key, resp)
        await self.transport.reply(resp, source)

    def options_response(self, req: SipRequest) -> SipResponse:
        resp = make_response(req, 200, "OK", to_tag=new_tag())
        resp.headers.set_single("Allow", ALLOW)
        resp.headers.set_single("Accept", "application/sdp")
        resp.headers.set_single("Contact", self.contact)
        resp.headers.set_single("User-Agent", self.config.user_agent)
        return resp

    def _remember(self, key: tuple[str, str, str], resp: SipResponse) -> None:
        self._recent[key] = resp
        while len(self._recent) > 512:
            self._recent.popitem(last=False)


def _body_complete(msg: SipRequest | SipResponse) -> bool:
    """False when the Content-Length says more bytes than the datagram carried, or is not a number
    (``1*DIGIT``, RFC 3261 §20.14): such a message was cut short or is forged. No header: the body
    is the rest of the datagram (§18.3). aiosipua already trims a body longer than declared."""
    raw = msg.headers.get_first("content-length")
    if raw is None:
        return True
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit():
        return False
    return len(raw) <= 10 and int(raw) <= len(msg.body)
