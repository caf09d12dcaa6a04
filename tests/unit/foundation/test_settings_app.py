"""Settings from the environment, the secret key on first run, /healthz and /metrics."""

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from storage.db import make_engine
from storage.migrate import upgrade
from tanfang.app import build_app
from tanfang.context import build_context
from tanfang.settings import Settings


def test_defaults_put_sqlite_under_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANFANG_DATABASE_URL", raising=False)
    monkeypatch.setenv("TANFANG_DATA_DIR", str(tmp_path / "d"))
    s = Settings()
    assert s.db_url == f"sqlite:///{(tmp_path / 'd' / 'tanfang.db').resolve()}"
    assert s.port == 8080 and s.host == "127.0.0.1"


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANFANG_PORT", "eighty")
    with pytest.raises(Exception, match="port"):
        Settings()


def test_secret_generated_once_with_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("TANFANG_SECRET_KEY", raising=False)
    monkeypatch.setenv("TANFANG_DATA_DIR", str(tmp_path))
    ctx = build_context(Settings())
    key_file = tmp_path / "secret.key"
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert "TANFANG_SECRET_KEY" in caplog.text
    token = ctx.vault.encrypt("x")
    ctx.close()
    ctx2 = build_context(Settings())  # the same key again, not a new one
    assert ctx2.vault.decrypt(token) == "x"
    ctx2.close()


async def test_healthz_reports_unmigrated_then_ok(settings_env: Path) -> None:
    ctx = build_context(Settings())
    client = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    try:
        r = await client.get("/healthz")
        assert r.status == 503
        body = await r.json()
        assert "tanfang db upgrade" in body["checks"]["database"]["detail"]
        upgrade(make_engine(ctx.settings.db_url))
        r = await client.get("/healthz")
        assert r.status == 200 and (await r.json())["status"] == "ok"
        m = await client.get("/metrics")
        assert "tanfang_up 1.0" in await m.text()
    finally:
        await client.close()
        ctx.close()
