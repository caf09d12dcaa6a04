"""Answer each WeChat message once, however often WeChat retries it.

In one process a retry that arrives while the first delivery is still being handled awaits the
same future. Across processes the ``wechat_dedup`` row (primary key = the message key) decides:
the callback handles a message and inserts its row, with the reply, at the end of the same
transaction (:meth:`DedupStore.record_in`); a delivery that finds the row already there rolls its
whole transaction back and answers with the stored reply. On PostgreSQL a concurrent insert of
the same key waits for the first transaction and then finds the row (the follower row, locked by
the first statement of every message, already makes deliveries of one follower wait their turn).
The reply is stored encrypted (it may mention an elder's health) and pruned after two days.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import Engine, String, Text, bindparam, delete, select, text
from sqlalchemy.orm import Session

from storage.crypto import Vault
from storage.models.base import UTCDateTime
from storage.models.wechat import WechatDedup

log = logging.getLogger(__name__)

KEEP = timedelta(days=2)
# Handled and answered in one statement; no row inserted = the key existed (plain SQL, the same
# on PostgreSQL and SQLite, compiled once: the dialects' on_conflict constructs have no cache key).
_RECORD = text(
    "INSERT INTO wechat_dedup (key, owner, created_at, completed_at, reply) "
    "VALUES (:key, :owner, :now, :now, :reply) ON CONFLICT (key) DO NOTHING"
).bindparams(
    bindparam("key", type_=String()), bindparam("owner", type_=String()), bindparam("now", type_=UTCDateTime()),
    bindparam("reply", type_=Text()),
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
    """The database side: record a handled key with its reply, read another delivery's reply."""

    def __init__(self, engine: Engine, vault: Vault, owner: str, now: Callable[[], datetime]) -> None:
        self.engine = engine
        self.vault = vault
        self.owner = owner
        self.now = now

    def record_in(self, session: Session, key: str, reply: str) -> bool:
        """Insert the key's row, completed with ``reply``, in ``session``'s transaction. False: the
        key exists (another delivery was handled first; roll the session back). On PostgreSQL an
        uncommitted insert of the same key elsewhere makes this wait for that transaction."""
        result = session.connection().execute(
            _RECORD, {"key": key, "owner": self.owner, "now": self.now(), "reply": self._seal(reply)}
        )
        return int(getattr(result, "rowcount", 0) or 0) == 1

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
