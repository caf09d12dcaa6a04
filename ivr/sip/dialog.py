"""UAC dialog state (RFC 3261 §12): identifiers, CSeq, remote target, route set, request routing.

aiosipua's ACK/BYE ignore the 200's Contact and Record-Route, so calls through a proxy died at
32 s; here the remote target comes from the 2xx Contact and the route set from its Record-Route
(reversed, §12.1.2), and every in-dialog request (ACK, BYE, REFER, …) is built from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiosipua.message import SipRequest, SipResponse

from ivr.sip.messages import address_of, is_loose, tag_of, uri_of


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_from: str  # our From header value, with tag
    remote_to: str  # the To header value of the 2xx, with the far end's tag
    remote_target: str  # URI from the 2xx Contact
    route_set: list[str] = field(default_factory=list)  # Route header values, in order
    local_seq: int = 1
    remote_seq: int | None = None
    invite_seq: int = 1

    @classmethod
    def from_2xx(cls, invite: SipRequest, response: SipResponse) -> Dialog:
        """Dialog state established by a 2xx (or 1xx with tag) to our INVITE (§12.1.2)."""
        local_from = invite.headers.get_first("from") or ""
        remote_to = response.headers.get_first("to") or ""
        contact = response.headers.get_first("contact")
        target = uri_of(contact) if contact else invite.uri
        if not _usable(target):
            target = invite.uri  # no host or a bad port: BYE would have nowhere to go
        routes = list(reversed(response.headers.get("record-route")))
        seq = invite.cseq.seq if invite.cseq else 1
        return cls(
            call_id=invite.call_id or "",
            local_tag=tag_of(local_from) or "",
            remote_tag=tag_of(remote_to) or "",
            local_from=local_from,
            remote_to=remote_to,
            remote_target=target,
            route_set=routes,
            local_seq=seq,
            invite_seq=seq,
        )

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    def matches(self, request: SipRequest) -> bool:
        """An incoming request belongs here: Call-ID, and its To tag is ours, its From tag theirs."""
        return (
            request.call_id == self.call_id
            and tag_of(request.headers.get_first("to")) == self.local_tag
            and tag_of(request.headers.get_first("from")) == self.remote_tag
        )

    def next_hop(self) -> tuple[str, list[str], tuple[str, int]]:
        """(Request-URI, Route values, destination address) for the next in-dialog request (§12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, [], address_of(self.remote_target)
        first = uri_of(self.route_set[0])
        if is_loose(first):
            return self.remote_target, list(self.route_set), address_of(first)
        # strict router: first route becomes the Request-URI, remote target goes last
        routes = [*self.route_set[1:], f"<{self.remote_target}>"]
        return first, routes, address_of(first)

    def build(self, method: str, *, contact: str, user_agent: str, seq: int | None = None) -> tuple[SipRequest, tuple[str, int]]:
        """A new in-dialog request (without Via, added by the UA) and where to send it.

        ACK reuses the INVITE's CSeq number (pass ``seq``); other methods take the next local one.
        """
        if seq is None:
            self.local_seq += 1
            seq = self.local_seq
        uri, routes, dest = self.next_hop()
        req = SipRequest(method=method, uri=uri)
        req.headers.set_single("Max-Forwards", "70")
        req.headers.set_single("From", self.local_from)
        req.headers.set_single("To", self.remote_to)
        req.headers.set_single("Call-ID", self.call_id)
        req.headers.set_single("CSeq", f"{seq} {method}")
        for route in routes:
            req.headers.append("Route", route)
        if method not in ("ACK", "CANCEL", "BYE"):
            req.headers.set_single("Contact", contact)
        req.headers.set_single("User-Agent", user_agent)
        return req, dest

    def refresh_target(self, request: SipRequest) -> None:
        """A re-INVITE from the far end may move its Contact (target refresh, §12.2.2)."""
        contact = request.headers.get_first("contact")
        if contact and _usable(uri_of(contact)):
            self.remote_target = uri_of(contact)


def _usable(uri: str) -> bool:
    """A remote target we can send to (an unusable Contact is ignored, not adopted)."""
    try:
        address_of(uri)
    except (ValueError, IndexError):
        return False
    return True
