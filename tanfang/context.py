"""The assembled application context: settings, database, vault, clock — built once, passed down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.crypto import Vault
from storage.db import make_engine, make_session_factory
from tanfang.keys import load_vault
from tanfang.settings import Settings


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    vault: Vault
    now: Callable[[], datetime] = field(default=utc_now)

    def close(self) -> None:
        self.engine.dispose()


def build_context(settings: Settings, *, now: Callable[[], datetime] = utc_now) -> Context:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    return Context(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        vault=load_vault(settings),
        now=now,
    )
