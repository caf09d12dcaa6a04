"""Privacy fixtures: the sample county and ledger imported through the CLI into the test database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage.crypto import Vault
from storage.db import make_engine, make_session_factory
from tanfang.cli import main
from tanfang.keys import load_vault
from tanfang.settings import Settings
from tests.conftest import SAMPLES


@pytest.fixture
def cli_db(settings_env: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Settings pointing at the migrated test database, regions and the sample ledger imported."""
    monkeypatch.setenv("TANFANG_DATABASE_URL", db_url)
    assert main(["regions", "import", str(SAMPLES / "regions.yaml")]) == 0
    assert main(["ledger", "import", str(SAMPLES / "ledger_sample.xlsx")]) == 0
    return db_url


@pytest.fixture
def cli_sessions(cli_db: str) -> sessionmaker[Session]:
    return make_session_factory(make_engine(cli_db))


@pytest.fixture
def cli_vault(cli_db: str) -> Vault:
    return load_vault(Settings())
