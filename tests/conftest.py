"""Shared fixtures: one database suite over SQLite and PostgreSQL, a vault, a settings object.

``db_url`` is parametrised over ``sqlite`` and ``postgres``. The PostgreSQL variant uses
``TANFANG_TEST_DATABASE_URL`` (e.g. postgresql://postgres@127.0.0.1:5432/test); each test gets
its own schema, dropped afterwards. Without the variable those tests are skipped, with a reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from storage.crypto import Vault, generate_secret
from storage.db import make_engine, make_session_factory
from storage.migrate import upgrade

PG_URL = os.environ.get("TANFANG_TEST_DATABASE_URL")
REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"

_pg_reason = "PostgreSQL 未配置：设置 TANFANG_TEST_DATABASE_URL 以运行（CI 会设置）"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """The run's log file (scripts/test.sh: artifacts/test-run.log) masks numbers like production's
    handlers (tanfang.logsetup) do; scripts/check_logs.py then greps it for the sample's numbers."""
    from storage.masking import MaskingFilter

    plugin = config.pluginmanager.get_plugin("logging-plugin")
    handler = getattr(plugin, "log_file_handler", None)
    if handler is not None:
        handler.addFilter(MaskingFilter())


def pytest_report_header(config: pytest.Config) -> str:
    return f"tanfang: PostgreSQL tests {'on ' + PG_URL if PG_URL else 'SKIPPED (' + _pg_reason + ')'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database URL on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    if not PG_URL:
        pytest.skip(_pg_reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = pg_schema_url(PG_URL, schema)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def pg_schema_url(base: str, schema: str) -> str:
    """A PostgreSQL URL whose connections use ``schema`` as search_path."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    yield e
    e.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture(scope="session")
def vault() -> Vault:
    return Vault(generate_secret())


@pytest.fixture
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point TANFANG_* at a temporary data dir (for CLI tests that build Settings themselves)."""
    data = tmp_path / "var"
    monkeypatch.setenv("TANFANG_DATA_DIR", str(data))
    monkeypatch.delenv("TANFANG_DATABASE_URL", raising=False)
    monkeypatch.setenv("TANFANG_SECRET_KEY", generate_secret())
    return data
