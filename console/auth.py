"""Passwords (argon2), server-side sessions, CSRF tokens and the security headers.

The session cookie carries a random token; the database keeps only its SHA-256 (a stolen
database does not give live sessions). A new token is issued at every login (no fixation).
Each session has its own CSRF token, required on every state-changing request: as the hidden
form field ``_csrf`` for pages, as the ``X-CSRF-Token`` header for the JSON API. The login form,
before any session exists, uses a double-submit cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from console.scope import Principal
from storage.models.escalation import ConsoleSession, append_audit
from storage.models.region import Region
from storage.models.security import LoginFailure
from storage.models.staff import Staff

COOKIE = "tanfang_session"
LOGIN_CSRF_COOKIE = "tanfang_login_csrf"
_hasher = PasswordHasher()
# Verifying against this keeps the timing of "no such user" equal to "wrong password".
_DUMMY_HASH = _hasher.hash("tanfang-dummy-password")

MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"密码至少需要 {MIN_PASSWORD_LENGTH} 个字符")
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class LiveSession:
    principal: Principal
    csrf_token: str


def authenticate(session: Session, username: str, password: str) -> Staff | None:
    staff = session.scalar(select(Staff).where(Staff.username == username.strip()))
    ok = verify_password(staff.password_hash if staff else None, password)
    if staff is None or not ok or not staff.active:
        return None
    if staff.password_hash and _hasher.check_needs_rehash(staff.password_hash):
        staff.password_hash = _hasher.hash(password)
    return staff


def start_session(session: Session, staff: Staff, now: datetime, hours: float,  # noqa: PLR0917
                  remote_addr: str | None, old_token: str | None = None) -> str:
    """Create a session (deleting the previous one, if any) and return the cookie token."""
    if old_token:
        session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == _digest(old_token)))
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
    token = secrets.token_urlsafe(32)
    session.add(ConsoleSession(
        id_hash=_digest(token), staff_id=staff.id, csrf_token=secrets.token_urlsafe(32),
        created_at=now, expires_at=now + timedelta(hours=hours), remote_addr=remote_addr,
    ))
    staff.last_login_at = now
    return token


def end_session(session: Session, token: str) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == _digest(token)))


def load_session(session: Session, token: str, now: datetime) -> LiveSession | None:
    return load_session_expiry(session, token, now)[0]


def load_session_expiry(session: Session, token: str, now: datetime) -> tuple[LiveSession | None, datetime | None]:
    """The live session and when it expires (one query, columns only)."""
    row = session.execute(
        select(ConsoleSession.csrf_token, ConsoleSession.expires_at, Staff.id, Staff.name, Staff.role, Region.id,
               Region.path, Region.name)
        .join(Staff, Staff.id == ConsoleSession.staff_id)
        .join(Region, Region.id == Staff.region_id)
        .where(ConsoleSession.id_hash == _digest(token), ConsoleSession.expires_at > now, Staff.active.is_(True))
    ).first()
    if row is None:
        return None, None
    csrf, expires_at, staff_id, name, role, region_id, region_path, region_name = row
    return LiveSession(
        Principal(staff_id=staff_id, name=name, role=role, region_id=region_id, region_path=region_path,
                  region_name=region_name),
        csrf,
    ), expires_at


class SessionCache:
    """Live sessions remembered for ``ttl_s`` seconds in this process (keyed by the token's digest).

    Only found sessions are kept (a new login is never hidden by an earlier miss). ``drop`` on
    logout and on login rotation; a session ended by another process is seen after ``ttl_s``.
    """

    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000):
        self.ttl_s = ttl_s
        self._clock = clock
        self._max = max_entries
        self._lock = threading.Lock()
        self._items: dict[str, tuple[LiveSession, datetime, float]] = {}

    def get(self, token: str, now: datetime) -> LiveSession | None:
        if self.ttl_s <= 0:
            return None
        key = _digest(token)
        item = self._items.get(key)
        if item is None:
            return None
        live, expires_at, until = item
        if self._clock() >= until or now >= expires_at:
            with self._lock:
                self._items.pop(key, None)
            return None
        return live

    def put(self, token: str, live: LiveSession, expires_at: datetime) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._items) >= self._max:
                self._items.clear()
            self._items[_digest(token)] = (live, expires_at, self._clock() + self.ttl_s)

    def drop(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._items.pop(_digest(token), None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass(frozen=True)
class LoginPolicy:
    """At most ``max_failures`` failed logins per username and address within ``window``; then locked."""

    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)

    @property
    def locked_message(self) -> str:
        minutes = int(self.window.total_seconds() // 60)
        return f"登录失败次数过多，该账号已在本机地址锁定 {minutes} 分钟，请稍后再试或联系管理员重置密码。"


@dataclass(frozen=True)
class LoginResult:
    token: str | None  # the new session's cookie value, None when refused
    locked: bool = False


def _login_key(username: str) -> str:
    return username.strip().lower()[:64]


def login(session: Session, username: str, password: str, now: datetime, *, remote_addr: str | None,
          hours: float, old_token: str | None, policy: LoginPolicy) -> LoginResult:
    """Check the lockout, the password; count failures (audit row when an account locks); start a session."""
    key, addr = _login_key(username), (remote_addr or "-")[:64]
    since = now - policy.window
    recent = session.scalar(select(func.count()).select_from(LoginFailure).where(
        LoginFailure.username == key, LoginFailure.remote_addr == addr, LoginFailure.at > since)) or 0
    if recent >= policy.max_failures:
        return LoginResult(None, locked=True)
    staff = authenticate(session, username, password)
    if staff is None:
        session.execute(delete(LoginFailure).where(LoginFailure.at <= since))
        session.add(LoginFailure(username=key, remote_addr=addr, at=now))
        if recent + 1 >= policy.max_failures:
            known = session.scalar(select(Staff.id).where(Staff.username == username.strip()))
            append_audit(session, at=now, actor="system", action="login_locked", subject_type="staff",
                         subject_id=known, detail=f"账号“{key[:32]}”连续 {recent + 1} 次登录失败，锁定",
                         remote_addr=addr)
            return LoginResult(None, locked=True)
        return LoginResult(None)
    session.execute(delete(LoginFailure).where(LoginFailure.username == key, LoginFailure.remote_addr == addr))
    return LoginResult(start_session(session, staff, now, hours, remote_addr, old_token))


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def new_token() -> str:
    return secrets.token_urlsafe(32)


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
