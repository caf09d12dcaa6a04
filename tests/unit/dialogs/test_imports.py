"""``dialogs`` does no I/O: importing it pulls in no network, database or event-loop modules."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ["socket", "ssl", "asyncio", "sqlalchemy", "aiohttp", "urllib.request", "http.client",
             "multiprocessing", "sklearn", "selectors"]


def test_importing_dialogs_imports_nothing_that_does_io():
    code = (
        "import sys\n"
        "import dialogs, dialogs.engine, dialogs.events, dialogs.result, dialogs.script, dialogs.triage\n"
        "import dialogs.extract, dialogs.testing, dialogs.nlu, dialogs.nlu.model, dialogs.nlu.parser\n"
        "import dialogs.nlu.evaluate, dialogs.nlu.data\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"dialogs imported: {out.stdout.strip()}"


def test_dialogs_imports_only_storage_enums_of_ours():
    code = (
        "import sys, dialogs.engine, dialogs.triage, dialogs.nlu, dialogs.testing\n"
        "ours = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('storage','tanfang','ivr','bot','console','scheduler'))\n"
        "print(','.join(ours))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(filter(None, out.stdout.strip().split(","))) <= {"storage", "storage.enums"}
