"""Answer each WeChat message once, however often WeChat retries it.

In one process a retry that arrives while the first delivery is still being handled awaits the
same future. Across processes the first to insert the ``wechat_dedup`` row (primary key = the
message key) owns the message; the others poll that row until the owner stores its reply. The
reply is stored encrypted (it may mention an elder's health) and pruned after two days.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.crypto import Vault
from storage.models.wechat import WechatDedup

log = logging.getLogger(__name__)

KEEP = timedelta(days=2)
_CLAIM = insert(WechatDedup).values(key=bindparam("key"), owner=bindparam("owner"), created_at=bindparam("now"))
_COMPLETE = (
    update(WechatDedup)
    .where(WechatDedup.key == bindparam("k"))
    .values(reply=bindparam("reply"), completed_at=bindparam("now"))
)


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A write transaction (``BEGIN IMMEDIATE`` on SQLite, so concurrent writers queue, never fail)."""
    with engine.connect() as conn:
        conn.info["write"] = True
        try:
            with conn.begin(), Session(bind=conn, expire_on_commit=False) as session:
                yield session
                session.flush()
        finally:
            conn.info.pop("write", None)


class DedupStore:
    """The database side: claim a key, store its reply, read another process's reply."""

    def __init__(self, engine: Engine, vault: Vault, owner: str, now: Callable[[], datetime]) -> None:
        self.engine = engine
        self.vault = vault
        self.owner = owner
        self.now = now

    def claim(self, key: str) -> bool:
        """True when this process now owns ``key``; False when someone else inserted it first."""
        with write_session(self.engine) as s:
            return self.claim_in(s, key)

    def claim_in(self, session: Session, key: str) -> bool:
        """Insert the key's row in ``session``'s transaction (PostgreSQL: a concurrent insert of the
        same key waits for ours to commit, then fails). False: it exists (roll back the session)."""
        try:
            session.connection().execute(_CLAIM, {"key": key, "owner": self.owner, "now": self.now()})
        except IntegrityError:
            return False
        return True

    def complete_in(self, session: Session, key: str, reply: str) -> None:
        session.connection().execute(_COMPLETE, {"k": key, "reply": self._seal(reply), "now": self.now()})

    def store(self, session: Session, key: str, reply: str) -> None:
        row = session.get(WechatDedup, key)
        if row is None:  # pruned meanwhile: put it back
            row = WechatDedup(key=key, owner=self.owner, created_at=self.now())
            session.add(row)
        row.reply = self._seal(reply)
        row.completed_at = self.now()

    def replace_reply(self, key: str, reply: str) -> None:
        with write_session(self.engine) as s:
            self.store(s, key, reply)

    def read(self, key: str) -> str | None:
        """The stored reply of a completed key (``""`` = success), or None while still in progress."""
        with Session(self.engine) as s:
            row = s.execute(select(WechatDedup.reply, WechatDedup.completed_at).where(WechatDedup.key == key)).first()
        if row is None or row.completed_at is None:
            return None
        return self._open(row.reply or "")

    def prune(self) -> int:
        with write_session(self.engine) as s:
            result = s.execute(delete(WechatDedup).where(WechatDedup.created_at < self.now() - KEEP))
        return int(getattr(result, "rowcount", 0) or 0)

    def _seal(self, reply: str) -> str:
        return base64.b64encode(self.vault.encrypt(reply)).decode() if reply else ""

    def _open(self, sealed: str) -> str:
        return self.vault.decrypt(base64.b64decode(sealed)) if sealed else ""


async def wait_for_reply(store: DedupStore, key: str, deadline: float, interval: float = 0.05) -> str:
    """Poll until another process stored its reply; ``""`` (success) if it is not there in time."""
    while True:
        reply = await asyncio.to_thread(store.read, key)
        if reply is not None:
            return reply
        if time.monotonic() + interval > deadline:
            log.warning("duplicate still in progress elsewhere", extra={"action": "wechat_dedup_wait_timeout"})
            return ""
        await asyncio.sleep(interval)
