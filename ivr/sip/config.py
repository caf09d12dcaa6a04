"""Configuration of the SIP user agent (plain parameters; ``tanfang/`` fills it from settings)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TransportKind(enum.StrEnum):
    UDP = "udp"
    TCP = "tcp"


@dataclass(frozen=True)
class SipConfig:
    """Where we listen, which trunk/proxy we use, and who we are.

    ``proxy`` is an outbound proxy / trunk URI (``sip:host:port``); when set, initial requests
    (INVITE, REGISTER, OPTIONS) go there and the target URI stays in the Request-URI. ``domain``
    completes bare numbers given to :meth:`UserAgent.call` (defaults to the proxy host).
    """

    local_host: str = "127.0.0.1"
    local_port: int = 0  # 0 = pick a free port
    transport: TransportKind = TransportKind.UDP
    proxy: str | None = None
    domain: str | None = None
    username: str = "tanfang"
    password: str | None = None
    auth_username: str | None = None  # defaults to username
    register: bool = False
    register_expires_s: int = 300
    caller_id: str | None = None  # display name in From
    user_agent: str = "Tanfang-IVR/0.1"
    rtp_port_range: tuple[int, int] = (20000, 60000)
    t1_s: float = 0.5  # RFC 3261 T1
    t2_s: float = 4.0  # RFC 3261 T2
    invite_timeout_s: float = 8.0  # our Timer B: no response at all -> timeout (RFC default is 32 s)
    non_invite_timeout_s: float = 8.0  # our Timer F
    cancel_wait_s: float = 8.0  # how long to wait for the 487 after CANCEL
