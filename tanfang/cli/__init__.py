"""The ``tanfang`` command. Each sub-command lives in its own module with a ``register`` function.

A command handler has the signature ``handler(args, settings) -> int`` and is attached with
``parser.set_defaults(handler=...)``. Raise :class:`CliError` for a clear, final error message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tanfang.settings import Settings

# Modules under tanfang.cli that register sub-commands, in help order.
COMMAND_MODULES: list[str] = [
    "demo",
    "serve",
    "db",
    "regions",
    "ledger",
    "staff",
    "plan",
    "events",
    "signals",
    "call",
    "prompts",
    "nlu",
    "report",
    "elder",
    "purge",
    "audit",
    "backup",  # also registers "restore"
]


class CliError(Exception):
    """A final error for the operator: printed as is (Chinese), exit status ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tanfang", description="探访 — 特殊困难老人远程探访系统")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"tanfang.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        settings = Settings()
    except Exception as exc:  # pydantic ValidationError: name the bad variable
        print(f"配置错误：{exc}", file=sys.stderr)
        return 2
    from tanfang.logsetup import setup_logging

    setup_logging(settings)
    try:
        return int(handler(args, settings) or 0)
    except CliError as exc:
        print(f"错误：{exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("已中断。", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
