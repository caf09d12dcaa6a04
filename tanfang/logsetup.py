"""Logging: one format, an ``action`` key on every record, personal numbers always masked."""

from __future__ import annotations

import logging
import sys

from storage.masking import MaskingFilter
from tanfang.settings import Settings


class _ActionDefault(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "action"):
            record.action = "-"
        return True


FORMAT = "%(asctime)s %(levelname)s %(name)s action=%(action)s %(message)s"


def setup_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if getattr(root, "_tanfang_configured", False):
        return
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
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
