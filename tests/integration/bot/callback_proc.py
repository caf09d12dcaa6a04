"""A /wechat callback server in its own process (for the cross-process dedup test).

    python -m tests.integration.bot.callback_proc --db-url URL --secret S --token T --aes-key K --appid A [--port P]
Prints "READY … http://127.0.0.1:PORT …" once listening (port 0: any free port).
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime

from aiohttp import web

from bot.adapters import EscalationVisits, QueueCalls
from bot.callback import CallbackService, add_routes
from bot.dedup import DedupStore
from bot.flows import BotConfig, Flows
from bot.wire import CallbackKeys
from storage.crypto import Vault
from storage.db import make_engine


def utc() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("--db-url", "--secret", "--token", "--aes-key", "--appid"):
        ap.add_argument(name, required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    engine = make_engine(args.db_url)
    vault = Vault(args.secret)
    flows = Flows(vault, BotConfig(), calls=QueueCalls(), visits=EscalationVisits())
    service = CallbackService(CallbackKeys(args.token, args.appid, args.aes_key), "safe", engine, flows,
                              DedupStore(engine, vault, "proc", utc), now=utc)
    app = web.Application()
    add_routes(app, service)
    web.run_app(app, host="127.0.0.1", port=args.port, print=lambda msg: print("READY " + str(msg).replace("\n", " "), flush=True), access_log=None)


if __name__ == "__main__":
    main()
