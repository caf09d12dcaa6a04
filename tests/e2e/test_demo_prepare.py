"""`tanfang demo --no-serve`: the README's first command prepares a working sample county, twice."""

from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.db import make_engine
from storage.models import Elder, Staff
from tanfang.cli import main
from tanfang.settings import Settings


def test_demo_prepares_sample_county_idempotently(settings_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--no-serve"]) == 0
    first = capsys.readouterr().out
    assert "新建 50" in first and "演示账号：demo" in first
    assert main(["demo", "--no-serve"]) == 0
    second = capsys.readouterr().out
    assert "未变 50" in second
    password = (settings_env / "demo-login.txt").read_text().strip()
    assert f"密码：{password}" in first and f"密码：{password}" in second
    engine = make_engine(Settings().db_url)
    with engine.connect() as c:
        assert c.scalar(select(func.count()).select_from(Elder)) == 50
        assert c.scalar(select(func.count()).select_from(Staff).where(Staff.username == "demo")) == 1
    engine.dispose()
