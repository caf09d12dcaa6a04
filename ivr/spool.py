"""A local, fsynced spool of finished calls whose outcome is not yet in the database.

The dialer writes each finished call here *before* it writes the database (and removes the entry
once the database has it), so a call outcome survives a database outage or a ``kill -9`` between
hanging up and committing. A restarted worker of the same slot replays what its predecessor left.
Entries are pickles of our own dataclasses in a directory only this service writes (under the
data dir, next to the recordings, which hold the same kind of content).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpooledCall:
    """Everything needed to store and settle one call later (see ``ivr.persist.record_call``)."""

    claimed: Any  # scheduler.queue.Claimed
    version: int
    report: Any  # ivr.call.CallReport
    worker: str
    now: datetime
    cold_wave: bool = False


class OutcomeSpool:
    """One directory per dialer slot; one file per call, written atomically (tmp + fsync + rename)."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def put(self, entry: SpooledCall) -> Path:
        name = f"{entry.claimed.id}-{entry.version}-{time.time_ns()}.call"
        tmp = self.dir / (name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(entry, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        final = self.dir / name
        os.replace(tmp, final)
        self._sync_dir()
        return final

    def done(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def pending(self) -> Iterator[tuple[Path, SpooledCall]]:
        """Entries in the order they were written; unreadable ones are moved aside, not lost."""
        for path in sorted(self.dir.glob("*.call"), key=lambda p: p.stat().st_mtime_ns):
            try:
                with open(path, "rb") as f:
                    entry = pickle.load(f)  # noqa: S301 - our own files, written by this service
            except FileNotFoundError:
                continue
            except Exception:
                log.exception("unreadable spool entry kept aside", extra={"action": "spool_bad_entry"})
                path.rename(path.with_suffix(".bad"))
                continue
            yield path, entry

    def __len__(self) -> int:
        return sum(1 for _ in self.dir.glob("*.call"))

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
