"""Small builders and helpers for SIP messages (identifiers, Via, next hop, responses)."""

from __future__ import annotations

import secrets

from aiosipua.headers import parse_address, parse_uri
from aiosipua.message import SipRequest, SipResponse

BRANCH_MAGIC = "z9hG4bK"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY, REFER, INFO"


def new_branch() -> str:
    return BRANCH_MAGIC + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def via_value(transport: str, host: str, port: int, branch: str) -> str:
    return f"SIP/2.0/{transport} {host}:{port};branch={branch};rport"


def top_branch(msg: SipRequest | SipResponse) -> str | None:
    raw = msg.headers.get_first("via")
    if not raw:
        return None
    try:
        return msg.via[0].branch
    except (ValueError, IndexError):
        return None


def cseq_of(msg: SipRequest | SipResponse) -> tuple[int, str] | None:
    try:
        cs = msg.cseq
    except (ValueError, IndexError):
        return None
    if cs is None:
        return None
    return cs.seq, cs.method.upper()


def uri_of(header_value: str) -> str:
    """The bare URI inside a name-addr (``"x" <sip:a@b;lr>;p=1`` -> ``sip:a@b;lr``)."""
    value = header_value.strip()
    if "<" in value and ">" in value:
        return value[value.index("<") + 1 : value.index(">")]
    return value.split(";", 1)[0] if value.startswith("sip") and ">" not in value else value


def is_loose(route_uri: str) -> bool:
    try:
        return "lr" in parse_uri(route_uri).params
    except (ValueError, IndexError):
        return False


def address_of(uri: str) -> tuple[str, int]:
    """Host and port a request for ``uri`` is sent to (no DNS SRV: IP or host name, default 5060)."""
    parsed = parse_uri(uri)
    if not parsed.host:
        raise ValueError(f"SIP URI without host: {uri!r}")
    host = parsed.host.strip("[]")
    port = parsed.port or 5060
    if not 0 < port < 65536:
        raise ValueError(f"SIP URI with port out of range: {uri!r}")
    return host, port


def tag_of(header_value: str | None) -> str | None:
    if not header_value:
        return None
    try:
        return parse_address(header_value).tag
    except (ValueError, IndexError):
        return None


def make_response(request: SipRequest, status: int, reason: str, *, to_tag: str | None = None) -> SipResponse:
    """A response copying Via, From, To (adding our tag if it has none), Call-ID and CSeq (§8.2.6)."""
    resp = SipResponse(status_code=status, reason_phrase=reason)
    for v in request.headers.get("via"):
        resp.headers.append("Via", v)
    for name in ("From", "Call-ID", "CSeq"):
        value = request.headers.get_first(name)
        if value is not None:
            resp.headers.set_single(name, value)
    to = request.headers.get_first("to") or ""
    if to_tag and tag_of(to) is None and status > 100:
        to = f"{to};tag={to_tag}"
    resp.headers.set_single("To", to)
    return resp
