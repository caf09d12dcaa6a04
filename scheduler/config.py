"""The visit policy's settings: defaults from ``policy_default.toml``, overridable province-wide
(``[defaults]``) and per county (``[counties."<code>"]``) in a TOML or YAML file.

A bad file is refused when it is loaded (at start-up), with the offending key named in Chinese.
"""

from __future__ import annotations

import copy
import enum
import re
import tomllib
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_FILE = Path(__file__).with_name("policy_default.toml")
FESTIVAL_NAMES = ("除夕", "春节", "元宵", "端午", "中秋", "重阳", "冬至")
_DURATION = re.compile(r"^(\d+)\s*(s|m|min|h|d)$")
_WINDOW = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class PolicyError(ValueError):
    """The policy file is unusable; the message (Chinese) names the file and key."""


class Cadence(enum.StrEnum):
    """How often an elder is contacted, finest first."""

    TWICE_DAILY = "twice_daily"
    DAILY = "daily"
    TWICE_WEEKLY = "twice_weekly"
    WEEKLY = "weekly"
    BIWEEKLY = "biweekly"
    MONTHLY = "monthly"

    def doubled(self) -> Cadence:
        order = list(Cadence)
        return order[max(0, order.index(self) - 1)]

    @property
    def rank(self) -> int:  # lower = more frequent
        return list(Cadence).index(self)


def parse_duration(text: str) -> timedelta:
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"时长格式应为 15m / 2h / 1d，而不是 {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"s": timedelta(seconds=n), "m": timedelta(minutes=n), "min": timedelta(minutes=n),
            "h": timedelta(hours=n), "d": timedelta(days=n)}[unit]


def parse_window(text: str) -> tuple[int, int]:
    """``"09:00-11:30"`` → minutes since midnight ``(540, 690)``; the end is exclusive."""
    m = _WINDOW.match(text.strip())
    if not m:
        raise ValueError(f"时段格式应为 HH:MM-HH:MM，而不是 {text!r}")
    start = int(m.group(1)) * 60 + int(m.group(2))
    end = int(m.group(3)) * 60 + int(m.group(4))
    if end > 24 * 60 or start >= end:
        raise ValueError(f"时段 {text!r} 的结束时间必须晚于开始时间，且不超过 24:00")
    return start, end


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CadenceCfg(_Strict):
    high: Literal["daily", "twice_weekly", "weekly", "biweekly", "monthly"] = "weekly"
    key: Literal["daily", "twice_weekly", "weekly", "biweekly", "monthly"] = "biweekly"
    general: Literal["daily", "twice_weekly", "weekly", "biweekly", "monthly"] = "monthly"
    spread_days: dict[str, int] = Field(
        default_factory=lambda: {"weekly": 3, "biweekly": 5, "monthly": 10}
    )
    guarantee_day: int = Field(20, ge=1, le=28)

    @field_validator("spread_days")
    @classmethod
    def _spread(cls, v: dict[str, int]) -> dict[str, int]:
        for k, n in v.items():
            if k not in ("twice_weekly", "weekly", "biweekly", "monthly"):
                raise ValueError(f"未知频率 {k!r}，可选：twice_weekly、weekly、biweekly、monthly")
            if not 1 <= n <= 14:
                raise ValueError(f"{k} 的分散天数应在 1–14 之间")
        return v


class WindowsCfg(_Strict):
    default: list[str] = Field(default_factory=lambda: ["09:00-11:30", "15:00-18:00"])
    quiet: list[str] = Field(default_factory=lambda: ["00:00-07:00", "12:00-14:00", "20:00-24:00"])

    @field_validator("default", "quiet")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        for w in v:
            parse_window(w)
        return v


class PriorityCfg(_Strict):
    sos: int = 0
    emergency: int = 0
    signal: int = 5
    callback: int = 10
    family_request: int = 15
    surge_high: int = 20
    surge: int = 30
    guarantee: int = 35
    routine_high: int = 40
    routine_key: int = 50
    routine_general: int = 60
    festival: int = 70


class RetryCfg(_Strict):
    ladder: list[str] = Field(default_factory=lambda: ["15m", "15m", "2h", "next_window"], min_length=1)
    trunk_backoff: str = "2m"

    @field_validator("ladder")
    @classmethod
    def _ladder(cls, v: list[str]) -> list[str]:
        for step in v:
            if step != "next_window":
                parse_duration(step)
        return v

    @field_validator("trunk_backoff")
    @classmethod
    def _backoff(cls, v: str) -> str:
        parse_duration(v)
        return v


class LevelCfg(_Strict):
    all: Literal["twice_daily", "daily"] | None = None
    high: Literal["twice_daily", "daily"] | None = None


class WeatherCfg(_Strict):
    red: LevelCfg = LevelCfg(all="daily", high="twice_daily")
    orange: LevelCfg = LevelCfg(all="daily", high="twice_daily")
    yellow: LevelCfg = LevelCfg(high="daily")
    blue: LevelCfg = LevelCfg()
    winter_hazards: list[str] = Field(
        default_factory=lambda: ["cold_wave", "blizzard", "low_temperature", "frost", "ice"]
    )
    winter_questions: list[str] = Field(default_factory=lambda: ["heating", "stove", "kang", "chimney"])

    def level(self, name: str | None) -> LevelCfg:
        return getattr(self, name) if name in ("red", "orange", "yellow", "blue") else LevelCfg()


class LockdownCfg(_Strict):
    multiplier: Literal[1, 2] = 2


class FestivalsCfg(_Strict):
    enabled: list[str] = Field(default_factory=lambda: list(FESTIVAL_NAMES))
    lead_days: int = Field(0, ge=0, le=3)

    @field_validator("enabled")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in FESTIVAL_NAMES:
                raise ValueError(f"未知节日 {name!r}，可选：{'、'.join(FESTIVAL_NAMES)}")
        return v


class SignalsCfg(_Strict):
    water_min_litres_24h: float = Field(10.0, gt=0)
    water_call_within: str = "2h"

    @field_validator("water_call_within")
    @classmethod
    def _within(cls, v: str) -> str:
        parse_duration(v)
        return v


class Policy(_Strict):
    """One county's effective policy (all sections filled)."""

    cadence: CadenceCfg = CadenceCfg()
    windows: WindowsCfg = WindowsCfg()
    priority: PriorityCfg = PriorityCfg()
    retry: RetryCfg = RetryCfg()
    weather: WeatherCfg = WeatherCfg()
    lockdown: LockdownCfg = LockdownCfg()
    festivals: FestivalsCfg = FestivalsCfg()
    signals: SignalsCfg = SignalsCfg()

    @cached_property
    def default_windows(self) -> tuple[tuple[int, int], ...]:
        return tuple(parse_window(w) for w in self.windows.default)

    @cached_property
    def quiet_windows(self) -> tuple[tuple[int, int], ...]:
        return tuple(parse_window(w) for w in self.windows.quiet)

    @cached_property
    def ladder(self) -> tuple[timedelta | None, ...]:
        """Retry steps; ``None`` means "the next call window"."""
        return tuple(None if s == "next_window" else parse_duration(s) for s in self.retry.ladder)

    @cached_property
    def trunk_backoff(self) -> timedelta:
        return parse_duration(self.retry.trunk_backoff)

    @cached_property
    def water_within(self) -> timedelta:
        return parse_duration(self.signals.water_call_within)


class PolicySet:
    """The province default plus per-county overrides; ``for_path`` picks by region path."""

    def __init__(self, default: Policy, counties: dict[str, Policy] | None = None) -> None:
        self.default = default
        self.counties = counties or {}

    def for_path(self, region_path: str) -> Policy:
        if self.counties:
            for code in region_path.split("/"):
                p = self.counties.get(code)
                if p is not None:
                    return p
        return self.default


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("red", "orange", "yellow", "blue"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"无法读取策略文件 {path}：{exc.strerror}") from exc
    try:
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise PolicyError(f"策略文件 {path} 格式错误：{exc}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"策略文件 {path} 的顶层应为表（键值对）")
    return data


def _validate(data: dict[str, Any], where: str, path: Path) -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in (where, *err["loc"]) if p != "")
        msg = "未知的键" if err["type"] == "extra_forbidden" else err["msg"]
        raise PolicyError(f"策略文件 {path} 中的键 {key} 有误：{msg}") from exc


def load_policy(path: Path | None = None) -> PolicySet:
    """The built-in defaults, overridden by ``path`` (TOML or YAML) when given."""
    base = _read(DEFAULT_FILE)
    if path is None:
        return PolicySet(_validate(base, "", DEFAULT_FILE))
    data = _read(path)
    unknown = set(data) - {"defaults", "counties"}
    if unknown:
        raise PolicyError(f"策略文件 {path} 中的键 {sorted(unknown)[0]} 有误：未知的键（只允许 defaults 和 counties）")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise PolicyError(f"策略文件 {path} 中的键 defaults 有误：应为表")
    merged = _merge(base, defaults)
    default = _validate(merged, "defaults", path)
    counties: dict[str, Policy] = {}
    for code, over in (data.get("counties") or {}).items():
        if not isinstance(over, dict):
            raise PolicyError(f"策略文件 {path} 中的键 counties.{code} 有误：应为表")
        counties[str(code)] = _validate(_merge(merged, over), f"counties.{code}", path)
    return PolicySet(default, counties)
