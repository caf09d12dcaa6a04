"""REGISTER with digest auth and a refresh loop (RFC 3261 §10), for trunks that need it."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiosipua.message import SipRequest, SipResponse

from ivr.sip.messages import new_tag

if TYPE_CHECKING:
    from ivr.sip.ua import UserAgent

logger = logging.getLogger(__name__)


class RegistrationError(Exception):
    """The registrar refused or did not answer; the message names the status."""


class Registration:
    """Keeps one binding alive: same Call-ID, rising CSeq, refresh at half the granted time."""

    def __init__(self, ua: UserAgent) -> None:
        self._ua = ua
        self._call_id = ua.new_call_id()
        self._tag = new_tag()
        self._seq = 0
        self.expires_s = 0
        self.registered = asyncio.Event()
        self.last_status: int | None = None
        self.refreshes = 0
        self._task: asyncio.Task[None] | None = None

    def _registrar_uri(self) -> str:
        return f"sip:{self._ua.domain}"

    def _build(self, expires: int) -> SipRequest:
        ua = self._ua
        self._seq += 1
        aor = f"sip:{ua.config.username}@{ua.domain}"
        req = SipRequest(method="REGISTER", uri=self._registrar_uri())
        req.headers.set_single("Max-Forwards", "70")
        req.headers.set_single("From", f"<{aor}>;tag={self._tag}")
        req.headers.set_single("To", f"<{aor}>")
        req.headers.set_single("Call-ID", self._call_id)
        req.headers.set_single("CSeq", f"{self._seq} REGISTER")
        req.headers.set_single("Contact", f"{ua.contact};expires={expires}")
        req.headers.set_single("Expires", str(expires))
        req.headers.set_single("User-Agent", ua.config.user_agent)
        return req

    async def _register(self, expires: int) -> SipResponse | None:
        ua = self._ua
        req = self._build(expires)
        resp = await ua.send_request(req, ua.initial_destination(req.uri))
        if req.cseq is not None:
            self._seq = req.cseq.seq  # auth retries raised it
        return resp

    async def start(self) -> None:
        """Register once (raising :class:`RegistrationError` on failure), then refresh in the background."""
        await self._once()
        self._task = asyncio.ensure_future(self._refresh_loop())

    async def _once(self) -> None:
        resp = await self._register(self._ua.config.register_expires_s)
        self.last_status = resp.status_code if resp is not None else None
        if resp is None:
            self.registered.clear()
            raise RegistrationError("注册服务器无响应 (REGISTER timed out)")
        if not 200 <= resp.status_code < 300:
            self.registered.clear()
            raise RegistrationError(f"注册被拒绝: {resp.status_code} {resp.reason_phrase}")
        self.expires_s = self._granted(resp)
        self.registered.set()
        logger.info("registered for %s s", self.expires_s, extra={"action": "sip_registered"})

    def _granted(self, resp: SipResponse) -> int:
        for contact in resp.contact:
            if contact.uri.port == self._ua.port and "expires" in contact.params:
                try:
                    return int(contact.params["expires"] or 0)
                except ValueError:
                    break
        try:
            return int(resp.headers.get_first("expires") or self._ua.config.register_expires_s)
        except ValueError:
            return self._ua.config.register_expires_s

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.expires_s / 2))
            try:
                await self._once()
                self.refreshes += 1
            except RegistrationError as exc:
                logger.error("registration refresh failed: %s", exc, extra={"action": "sip_register_failed"})
                await asyncio.sleep(5)

    async def stop(self) -> None:
        """Stop refreshing and remove the binding (Expires: 0)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.registered.is_set():
            await self._register(0)
            self.registered.clear()
