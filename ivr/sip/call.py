"""One outbound call: the INVITE procedure (ring, early media, answer, CANCEL, auth) and the dialog after it."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiosipua.message import SipRequest, SipResponse

from ivr.media.rtp import RtpSession
from ivr.sip.dialog import Dialog
from ivr.sip.messages import make_response, new_branch, new_tag, tag_of, via_value
from ivr.sip.outcome import CallResult, result_for_status
from ivr.sip.sdp import SdpError, build_sdp, parse_remote
from ivr.sip.transaction import InviteClientTransaction
from ivr.sip.transport import SipTransportError

if TYPE_CHECKING:
    from ivr.sip.ua import UserAgent

logger = logging.getLogger(__name__)


class CallState(enum.StrEnum):
    CALLING = "calling"  # INVITE sent, nothing back yet
    PROCEEDING = "proceeding"  # 100 Trying
    RINGING = "ringing"  # 180 / 183
    ANSWERED = "answered"  # 2xx ACKed, media flowing
    ENDED = "ended"


class Call:
    """An outbound call. :meth:`UserAgent.call` returns it once answered or failed.

    Check ``outcome`` (``CallResult.ANSWERED`` means talk); ``media`` is the RTP session (also
    receiving early media from a 183); ``hung_up`` is set when the far end sends BYE; ``ended``
    when the call is over either way.
    """

    def __init__(self, ua: UserAgent, target: str, media: RtpSession, *, ring_timeout_s: float,
                 headers: dict[str, str] | None, started_at: datetime) -> None:
        self._ua = ua
        self.target = target
        self.media = media
        self.ring_timeout_s = ring_timeout_s
        self._extra_headers = dict(headers or {})
        self.started_at = started_at
        self.state = CallState.CALLING
        self.sip_status: int | None = None
        self.reason: str = ""
        self.outcome: CallResult | None = None
        self.early_media = False
        self.ended_by: str | None = None  # "local" | "remote"
        self.hung_up = asyncio.Event()
        self.ended = asyncio.Event()
        self.call_id = ""
        self.dialog: Dialog | None = None
        self._loop = asyncio.get_running_loop()
        self.invite_at = self._loop.time()
        self.ringing_at: float | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self._ack: tuple[SipRequest, tuple[str, int]] | None = None
        self._sdp_session = int(self._loop.time() * 1000) & 0x7FFFFFFF
        self._sdp_version = 1
        self._reinvite_acked: asyncio.Event | None = None
        self._last_reinvite: tuple[int, SipResponse] | None = None
        self._refer_result: asyncio.Future[int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- timing --------------------------------------------------------------------------
    @property
    def ring_duration_s(self) -> float:
        """Seconds from sending the INVITE until it was answered or given up."""
        end = self.answered_at or self.ended_at or self._loop.time()
        return round(end - self.invite_at, 3)

    @property
    def talk_duration_s(self) -> float:
        if self.answered_at is None:
            return 0.0
        return round((self.ended_at or self._loop.time()) - self.answered_at, 3)

    # ---- the INVITE procedure ------------------------------------------------------------
    def _offer(self) -> bytes:
        return build_sdp(self.media.local_host, self.media.local_port, self._sdp_session, self._sdp_version)

    def _build_invite(self, seq: int, from_tag: str) -> tuple[SipRequest, tuple[str, int]]:
        ua = self._ua
        req = SipRequest(method="INVITE", uri=self.target)
        req.headers.append("Via", via_value(ua.transport.via_transport, ua.host, ua.port, new_branch()))
        req.headers.set_single("Max-Forwards", "70")
        req.headers.set_single("From", f"{ua.from_address()};tag={from_tag}")
        req.headers.set_single("To", f"<{self.target}>")
        req.headers.set_single("Call-ID", self.call_id)
        req.headers.set_single("CSeq", f"{seq} INVITE")
        req.headers.set_single("Contact", ua.contact)
        req.headers.set_single("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY, REFER, INFO")
        req.headers.set_single("User-Agent", ua.config.user_agent)
        for name, value in self._extra_headers.items():
            req.headers.set_single(name, value)
        req.headers.set_single("Content-Type", "application/sdp")
        req.body = self._offer()
        return req, ua.initial_destination(self.target)

    async def _dial(self) -> None:
        ua = self._ua
        self.call_id = ua.new_call_id()
        from_tag = new_tag()
        seq = 1
        ring_deadline = self.invite_at + self.ring_timeout_s
        invite, dest = self._build_invite(seq, from_tag)
        for _attempt in range(3):
            queue: asyncio.Queue[SipResponse | None] = asyncio.Queue()
            txn = InviteClientTransaction(
                ua.transport, invite, dest, t1=ua.config.t1_s, timeout_s=ua.config.invite_timeout_s,
                on_response=queue.put_nowait, on_timeout=lambda q=queue: q.put_nowait(None))  # type: ignore[misc]
            ua.transactions.add(txn)
            try:
                await txn.start()
            except SipTransportError as exc:
                ua.transactions.remove(txn)
                logger.warning("INVITE not sent: %s", exc, extra={"action": "sip_invite_unsent"})
                self._finish_unanswered(CallResult.TRUNK_ERROR, None, "transport error")
                return
            provisional = False
            while True:
                remaining = ring_deadline - self._loop.time()
                try:
                    resp = await asyncio.wait_for(queue.get(), max(0.0, remaining))
                except TimeoutError:
                    if provisional:
                        await self._cancel(invite, dest, txn, queue)
                    else:
                        txn.stop()
                        ua.transactions.remove(txn)
                        self._finish_unanswered(CallResult.TIMEOUT, None, "no response")
                    return
                if resp is None:  # our Timer B
                    ua.transactions.remove(txn)
                    self._finish_unanswered(CallResult.TIMEOUT, None, "no response")
                    return
                status = resp.status_code
                self.sip_status = status
                self.reason = resp.reason_phrase
                if status < 200:
                    provisional = True
                    self._on_provisional(resp)
                    continue
                if status < 300:
                    await self._on_answer(invite, resp, txn)
                    return
                ua.transactions.forget_later(txn, 0 if ua.transport.reliable else 32 * ua.config.t1_s)
                if status in (401, 407):
                    seq += 1
                    retry, dest = self._build_invite(seq, from_tag)
                    if ua.authenticator.authorize(retry, resp):
                        invite = retry
                        break
                self._finish_unanswered(result_for_status(status), status, resp.reason_phrase)
                return
        self._finish_unanswered(CallResult.AUTH_FAILED, self.sip_status, self.reason)

    def _on_provisional(self, resp: SipResponse) -> None:
        if resp.status_code == 100:
            self.state = CallState.PROCEEDING
            return
        self.state = CallState.RINGING
        if self.ringing_at is None:
            self.ringing_at = self._loop.time()
        if resp.body and "sdp" in (resp.content_type or "").lower():
            try:
                remote = parse_remote(resp.body)
            except SdpError as exc:
                logger.info("early media SDP ignored: %s", exc, extra={"action": "sip_early_sdp_bad"})
                return
            self.media.set_remote(remote.addr, remote.payload_type, remote.dtmf_payload_type)
            self.early_media = True

    async def _on_answer(self, invite: SipRequest, resp: SipResponse, txn: InviteClientTransaction) -> None:
        ua = self._ua
        self.dialog = Dialog.from_2xx(invite, resp)
        ack, ack_dest = self.dialog.build("ACK", contact=ua.contact, user_agent=ua.config.user_agent,
                                          seq=self.dialog.invite_seq)
        ack.headers.append("Via", via_value(ua.transport.via_transport, ua.host, ua.port, new_branch()))
        self._ack = (ack, ack_dest)
        await self._send_ack()
        txn._on_response = self._on_late_2xx  # 2xx retransmissions: ACK again (§13.2.2.4)
        ua.transactions.forget_later(txn, 64 * ua.config.t1_s)
        try:
            remote = parse_remote(resp.body)
        except SdpError as exc:
            logger.warning("answer without usable SDP: %s", exc, extra={"action": "sip_answer_sdp_bad"})
            self.answered_at = self._loop.time()
            self.state = CallState.ANSWERED
            self.outcome = CallResult.ANSWERED
            ua.register_call(self)
            await self.hangup()
            self.outcome = CallResult.TRUNK_ERROR
            return
        self.media.set_remote(remote.addr, remote.payload_type, remote.dtmf_payload_type)
        self.answered_at = self._loop.time()
        self.state = CallState.ANSWERED
        self.outcome = CallResult.ANSWERED
        ua.register_call(self)

    async def _send_ack(self) -> None:
        if self._ack is None:
            return
        try:
            await self._ua.transport.send(*self._ack)
        except SipTransportError as exc:
            logger.warning("ACK not sent: %s", exc, extra={"action": "sip_ack_failed"})

    def _on_late_2xx(self, resp: SipResponse) -> None:
        if resp.status_code >= 300 or resp.status_code < 200:
            return
        if self.dialog is not None and tag_of(resp.headers.get_first("to")) != self.dialog.remote_tag:
            return  # a forked 2xx from another branch: not handled (single-target outbound calls)
        self._spawn(self._send_ack())

    async def _cancel(self, invite: SipRequest, dest: tuple[str, int], txn: InviteClientTransaction,
                      queue: asyncio.Queue[SipResponse | None]) -> None:
        """Ring timeout: CANCEL (§9.1), expect 487; a 200 that raced the CANCEL gets ACK + BYE."""
        ua = self._ua
        cancel = SipRequest(method="CANCEL", uri=invite.uri)
        cancel.headers.append("Via", invite.headers.get("via")[0])
        for name in ("Max-Forwards", "From", "To", "Call-ID"):
            cancel.headers.set_single(name, invite.headers.get_first(name) or "")
        cancel.headers.set_single("CSeq", f"{invite.cseq.seq if invite.cseq else 1} CANCEL")
        for route in invite.headers.get("route"):
            cancel.headers.append("Route", route)
        cancel.headers.set_single("User-Agent", ua.config.user_agent)
        self._spawn(self._run_cancel(cancel, dest))
        deadline = self._loop.time() + ua.config.cancel_wait_s
        while True:
            try:
                resp = await asyncio.wait_for(queue.get(), max(0.0, deadline - self._loop.time()))
            except TimeoutError:
                resp = None
            if resp is None:
                txn.stop()
                ua.transactions.remove(txn)
                self._finish_unanswered(CallResult.NO_ANSWER, self.sip_status, "cancelled, no 487")
                return
            if resp.status_code < 200:
                continue
            self.sip_status = resp.status_code
            self.reason = resp.reason_phrase
            if resp.status_code < 300:  # the callee answered just as we gave up
                await self._on_answer(invite, resp, txn)
                await self.hangup()
                self.outcome = CallResult.NO_ANSWER
                return
            ua.transactions.forget_later(txn, 0 if ua.transport.reliable else 32 * ua.config.t1_s)
            self._finish_unanswered(CallResult.NO_ANSWER, resp.status_code, resp.reason_phrase)
            return

    async def _run_cancel(self, cancel: SipRequest, dest: tuple[str, int]) -> None:
        await self._ua.send_request(cancel, dest, authenticate=False, keep_via=True)

    def _finish_unanswered(self, outcome: CallResult, status: int | None, reason: str) -> None:
        self.outcome = outcome
        if status is not None:
            self.sip_status = status
        self.reason = reason
        self._end(None)

    def _end(self, by: str | None) -> None:
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        self.ended_by = by
        self.ended_at = self._loop.time()
        self._ua.unregister_call(self)
        self._spawn(self.media.close())
        self.ended.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- in-dialog, ours ------------------------------------------------------------------
    async def hangup(self) -> None:
        """Send BYE (retransmitted over UDP until answered or our Timer F) and end the call."""
        if self.state is not CallState.ANSWERED or self.dialog is None:
            return
        self._end("local")
        bye, dest = self.dialog.build("BYE", contact=self._ua.contact, user_agent=self._ua.config.user_agent)
        resp = await self._ua.send_request(bye, dest, dialog=self.dialog)
        if resp is None or resp.status_code >= 300:
            logger.info("BYE not confirmed (%s)", resp.status_code if resp else "timeout",
                        extra={"action": "sip_bye_unconfirmed"})

    async def refer(self, target: str, *, timeout_s: float = 15.0) -> bool:
        """Blind transfer with REFER (RFC 3515); True only when the NOTIFY reports a 2xx.

        Refused, unsupported (4xx/5xx/501), or no final report within ``timeout_s`` -> False.
        """
        if self.state is not CallState.ANSWERED or self.dialog is None:
            return False
        self._refer_result = self._loop.create_future()
        req, dest = self.dialog.build("REFER", contact=self._ua.contact, user_agent=self._ua.config.user_agent)
        req.headers.set_single("Refer-To", f"<{target}>")
        req.headers.set_single("Referred-By", self._ua.contact)
        resp = await self._ua.send_request(req, dest, dialog=self.dialog)
        if resp is None or resp.status_code >= 300:
            return False
        try:
            status = await asyncio.wait_for(asyncio.shield(self._refer_result), timeout_s)
        except TimeoutError:
            return False
        return 200 <= status < 300

    # ---- in-dialog, theirs (called by the UA) ---------------------------------------------
    async def on_request(self, req: SipRequest, source: tuple[str, int]) -> None:
        method = req.method.upper()
        ua = self._ua
        if method == "ACK":
            if self._reinvite_acked is not None:
                self._reinvite_acked.set()
            return
        assert self.dialog is not None
        if method == "BYE":
            await ua.transport.reply(make_response(req, 200, "OK"), source)
            self.hung_up.set()
            self._end("remote")
        elif method == "INVITE":
            await self._on_reinvite(req, source)
        elif method == "NOTIFY":
            await ua.transport.reply(make_response(req, 200, "OK"), source)
            self._on_notify(req)
        elif method in ("INFO", "OPTIONS", "UPDATE"):
            await ua.transport.reply(ua.options_response(req) if method == "OPTIONS" else make_response(req, 200, "OK"), source)
        else:
            await ua.transport.reply(make_response(req, 501, "Not Implemented"), source)

    def _on_notify(self, req: SipRequest) -> None:
        if self._refer_result is None or self._refer_result.done():
            return
        text = req.body.decode("utf-8", errors="replace").strip()
        parts = text.split(None, 2)
        if len(parts) >= 2 and parts[0].upper().startswith("SIP/") and parts[1].isdigit():
            status = int(parts[1])
            if status >= 200:
                self._refer_result.set_result(status)
        if "terminated" in (req.headers.get_first("subscription-state") or "") and not self._refer_result.done():
            self._refer_result.set_result(0)

    async def _on_reinvite(self, req: SipRequest, source: tuple[str, int]) -> None:
        """Answer a re-INVITE with our current SDP (session refresh, hold, media move)."""
        ua = self._ua
        assert self.dialog is not None
        seq = req.cseq.seq if req.cseq else 0
        if self._last_reinvite is not None and self._last_reinvite[0] == seq:
            await ua.transport.reply(self._last_reinvite[1], source)  # retransmission
            return
        self.dialog.refresh_target(req)
        if req.body:
            try:
                remote = parse_remote(req.body)
                self.media.set_remote(remote.addr, remote.payload_type if remote.payload_type == self.media.payload_type
                                      else remote.payload_type, remote.dtmf_payload_type)
            except SdpError:
                await ua.transport.reply(make_response(req, 488, "Not Acceptable Here"), source)
                return
        self._sdp_version += 1
        resp = make_response(req, 200, "OK", to_tag=self.dialog.local_tag)
        resp.headers.set_single("Contact", ua.contact)
        resp.headers.set_single("Content-Type", "application/sdp")
        resp.body = build_sdp(self.media.local_host, self.media.local_port, self._sdp_session, self._sdp_version,
                              payload_types=(self.media.payload_type,))
        self._last_reinvite = (seq, resp)
        self._reinvite_acked = asyncio.Event()
        await ua.transport.reply(resp, source)
        if not ua.transport.reliable:
            self._spawn(self._retransmit_2xx(resp, source, self._reinvite_acked))

    async def _retransmit_2xx(self, resp: SipResponse, source: tuple[str, int], acked: asyncio.Event) -> None:
        cfg = self._ua.config
        interval, waited = cfg.t1_s, 0.0
        while waited < 64 * cfg.t1_s and not acked.is_set() and self.state is CallState.ANSWERED:
            try:
                await asyncio.wait_for(acked.wait(), interval)
                return
            except TimeoutError:
                waited += interval
                interval = min(interval * 2, cfg.t2_s)
                await self._ua.transport.reply(resp, source)
