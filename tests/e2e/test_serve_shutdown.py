"""Graceful shutdown of `tanfang serve` (a real subprocess): SIGTERM while a baresip elder is on the
line — the call is ended politely (goodbye prompt, then BYE), the attempt is stored, the check-in
goes back to the queue (not left "dialing", not counted against the elder), the process exits 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from ivr.conversation import GOODBYE_SHUTDOWN
from scheduler.config import load_policy
from scheduler.queue import Queue, RequestKind
from storage.crypto import generate_secret
from storage.db import make_engine, make_session_factory
from storage.enums import CheckInStatus, Locale
from storage.migrate import upgrade
from storage.models.checkin import CallAttempt, CheckIn
from tanfang.demo.peers import BaresipPeer, have_baresip
from tanfang.keys import load_vault
from tanfang.settings import Settings
from tests.integration.ivr.world import make_world

pytestmark = [pytest.mark.sip, pytest.mark.slow,
              pytest.mark.skipif(not have_baresip(), reason="baresip (Debian package) not installed")]
NUMBER = "13800000001"
REPO = Path(__file__).resolve().parents[2]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health(port: int) -> dict[str, object]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def test_sigterm_mid_call_ends_politely_and_requeues(tmp_path: Path) -> None:
    phone = BaresipPeer(tmp_path / "phone", user=NUMBER).start()  # answers, then stays silent
    port = free_port()
    env = {**os.environ, "TANFANG_DATA_DIR": str(tmp_path / "var"), "TANFANG_SECRET_KEY": generate_secret(),
           "TANFANG_PORT": str(port), "TANFANG_SIP_LOCAL_PORT": str(free_port(socket.SOCK_DGRAM)),
           "TANFANG_SIP_DIAL_TEMPLATE": f"sip:{{number}}@127.0.0.1:{phone.sip_port}",
           "TANFANG_SHUTDOWN_GRACE_S": "1"}
    env.pop("TANFANG_DATABASE_URL", None)
    settings = Settings(data_dir=tmp_path / "var", secret_key=env["TANFANG_SECRET_KEY"])
    settings.data_dir.mkdir(parents=True)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    [elder] = make_world(sessions, load_vault(settings), [NUMBER], Locale.ZH)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "tanfang", "serve"], env=env, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # ready when the dialer has its intent parser and UA
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                checks = health(port).get("checks", {})
                if isinstance(checks, dict) and "启动中" not in str(checks.get("dialer", {}).get("detail", "启动中")):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("serve never became ready:\n" + (tmp_path / "serve.log").read_text()[-3000:])
        cid = Queue(sessions, load_policy()).request_call(elder, RequestKind.MANUAL, datetime.now(UTC), reason="测试",
                                                          source="test", ignore_call_window=True).id
        phone.wait_event("CALL_ESTABLISHED", timeout_s=30)
        time.sleep(4)  # mid-call: the greeting is playing or the dialog waits for an answer
        with sessions() as s:
            assert s.get(CheckIn, cid).status is CheckInStatus.DIALING  # type: ignore[union-attr]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, (tmp_path / "serve.log").read_text()[-3000:]
        phone.wait_event("CALL_CLOSED", timeout_s=5)  # we hung up (BYE) before exiting
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        phone.stop()
        log.close()

    with sessions() as s:
        row = s.get(CheckIn, cid)
        assert row is not None
        assert row.status is CheckInStatus.DUE and row.lease_owner is None and row.attempts == 0
        attempt = s.scalars(select(CallAttempt).where(CallAttempt.checkin_id == cid)).one()
        assert attempt.result == "answered" and attempt.ended_at is not None
        said = [t["text"] for t in attempt.transcript if t["who"] == "system"]
        assert said[-1] == GOODBYE_SHUTDOWN[Locale.ZH]  # the polite goodbye was the last thing we said
        stuck = [(r.id, r.kind, r.slot, r.lease_owner, [(t.from_status, t.to_status, t.note) for t in r.transitions],
                  [(c.result, c.ended_at) for c in r.calls])
                 for r in s.scalars(select(CheckIn).where(CheckIn.status == CheckInStatus.DIALING))]
        assert stuck == [], (stuck, (tmp_path / "serve.log").read_text()[-4000:])
    engine.dispose()
