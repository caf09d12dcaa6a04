"""Digest authentication for 401/407 challenges, on aiosipua's digest computation (RFC 7616/2617)."""

from __future__ import annotations

from aiosipua.auth import SipDigestAuth, build_credentials
from aiosipua.headers import parse_auth, stringify_auth
from aiosipua.message import SipRequest, SipResponse


class DigestAuthenticator:
    """Answers one challenge per request; a second challenge for the same nonce means bad credentials."""

    def __init__(self, username: str, password: str | None) -> None:
        self._auth = SipDigestAuth(username=username, password=password or "")
        self._enabled = password is not None
        self._answered: set[str] = set()

    def authorize(self, request: SipRequest, challenge: SipResponse) -> bool:
        """Add (Proxy-)Authorization for ``challenge`` to ``request``; False if it cannot be answered.

        Returns False without credentials, for an unsupported scheme or algorithm, and when the same
        nonce was already answered unless the server says it was only ``stale``.
        """
        if not self._enabled:
            return False
        status = challenge.status_code
        header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        out_name = "Authorization" if status == 401 else "Proxy-Authorization"
        values = challenge.headers.get(header)
        if not values:
            return False
        added = False
        request.headers.remove(out_name)
        for value in values:
            try:
                parsed = parse_auth(value)
            except (ValueError, IndexError):
                continue
            nonce = parsed.params.get("nonce", "")
            stale = parsed.params.get("stale", "").lower() == "true"
            if nonce in self._answered and not stale:
                continue
            creds = build_credentials(self._auth, parsed, request.method, request.uri)
            if creds is None:
                continue
            self._answered.add(nonce)
            request.headers.append(out_name, stringify_auth(creds))
            added = True
        return added
