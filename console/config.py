"""Console configuration: plain values handed in by the assembly (the console never reads settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from scheduler.config import PolicySet
from scheduler.escalations import EscalationConfig


@dataclass(frozen=True)
class ConsoleConfig:
    recordings_dir: Path
    cookie_secure: bool = False
    session_hours: float = 12.0
    service_name: str = "探访关爱服务"
    timezone: str = "Asia/Shanghai"
    page_size: int = 50
    escalations: EscalationConfig = field(default_factory=EscalationConfig)
    upload_dir: Path | None = None  # where uploaded ledgers are kept (None: not kept)
    # The scheduler's policies: with them, a declared/ended lockdown re-plans check-ins at once.
    policies: PolicySet | None = None
    # Login lockout: failures per username and address within the window.
    login_max_failures: int = 5
    login_lockout_minutes: int = 15
    # Consent withdrawn in the console: personal data erased this many days later.
    consent_deletion_days: int = 30
    # A live session (cookie -> staff) is remembered in the process this many seconds, saving a
    # database look-up per request. Logout and login rotation in this process drop it at once; a
    # session ended elsewhere (another worker, ``tanfang staff disable``) stops working within
    # this time. 0 turns the cache off.
    session_cache_seconds: float = 5.0
