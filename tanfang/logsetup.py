"""Logging: one format, an ``action`` key on every record, personal numbers always masked."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from storage.masking import MaskingFilter
from tanfang.settings import Settings


class _ActionDefault(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "action"):
            record.action = "-"
        return True


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Writes to whatever ``sys.stderr`` is now (it may be replaced after set-up, e.g. by a test runner)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:  # type: ignore[override,unused-ignore]
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


FORMAT = "%(asctime)s %(levelname)s %(name)s action=%(action)s %(message)s"


def setup_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if getattr(root, "_tanfang_configured", False):
        return
    handlers: list[logging.Handler] = [_Stderr()]
    if settings.log_file:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(settings.log_file, encoding="utf-8"))
    for h in handlers:
        h.addFilter(_ActionDefault())
        h.addFilter(MaskingFilter())
        h.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(h)
    root.setLevel(settings.log_level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)
    root._tanfang_configured = True  # type: ignore[attr-defined]
