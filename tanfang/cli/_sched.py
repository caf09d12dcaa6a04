"""Shared bits of the scheduler commands: policy loading, time parsing, a context."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.config import PolicyError, PolicySet, load_policy
from scheduler.windows import LOCAL_TZ
from tanfang.cli import CliError
from tanfang.settings import Settings


def policies(settings: Settings) -> PolicySet:
    try:
        return load_policy(settings.policy_file)
    except PolicyError as exc:
        raise CliError(str(exc)) from exc


def parse_time(text: str | None, what: str = "时间") -> datetime:
    """ISO time; without a zone it is Asia/Shanghai local time. None → now."""
    if not text:
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError as exc:
        raise CliError(f"{what}格式错误：{text!r}（例如 2026-12-03T09:00 或 2026-12-03）") from exc
    return t.replace(tzinfo=LOCAL_TZ) if t.tzinfo is None else t
