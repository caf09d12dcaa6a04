"""Call recordings: both directions in one stereo WAV (left = what we played, right = the elder),
aligned by call time, written atomically, and purged after the retention period."""

from __future__ import annotations

import logging
import os
import wave
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from ivr.media.g711 import SAMPLE_RATE, as_int16

log = logging.getLogger(__name__)

RECORDING_SUFFIX = ".wav"


def recording_path(recordings_dir: Path, call_id: str, started_at: datetime) -> Path:
    """``<dir>/YYYY/MM/DD/<call_id>.wav`` (date of the call start, as given)."""
    safe = "".join(ch for ch in call_id if ch.isalnum() or ch in "-_.")
    if not safe:
        raise ValueError(f"录音文件名无效：{call_id!r} (invalid call id for a recording name)")
    return recordings_dir / f"{started_at:%Y}" / f"{started_at:%m}" / f"{started_at:%d}" / f"{safe}{RECORDING_SUFFIX}"


class CallRecorder:
    """Sink for both directions of one call.

    ``played(pcm, at_ms)`` / ``heard(pcm, at_ms)`` place audio at its offset from the call start
    (``at_ms`` None: right after what that direction had so far). Gaps are silence. Writes go to a
    temp file in the same folder and are renamed into place on :meth:`close`, so a crash never leaves
    a half-written recording under the final name. Memory: complete stereo frames are flushed as
    both sides advance.
    """

    def __init__(self, path: Path, rate: int = SAMPLE_RATE) -> None:
        self.path = path
        self.rate = rate
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        self._wav = wave.open(str(self._tmp), "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self._written = 0  # stereo frames already in the file
        self._chan: list[np.ndarray] = [np.zeros(0, np.int16), np.zeros(0, np.int16)]  # after _written
        self._closed = False

    def played(self, pcm: bytes, at_ms: int | None = None) -> None:
        self._put(0, pcm, at_ms)

    def heard(self, pcm: bytes, at_ms: int | None = None) -> None:
        self._put(1, pcm, at_ms)

    def _put(self, ch: int, pcm: bytes, at_ms: int | None) -> None:
        if self._closed:
            return
        samples = as_int16(pcm)
        buf = self._chan[ch]
        pos = len(buf) if at_ms is None else at_ms * self.rate // 1000 - self._written
        if pos < 0:  # arrived after that time was flushed: drop what is too late
            samples = samples[-pos:]
            pos = 0
        end = pos + len(samples)
        if end > len(buf):
            buf = np.concatenate([buf, np.zeros(end - len(buf), np.int16)])
        buf[pos:end] = samples
        self._chan[ch] = buf
        self._flush(min(len(self._chan[0]), len(self._chan[1])))

    def _flush(self, n: int) -> None:
        if n <= 0:
            return
        stereo = np.empty(2 * n, dtype="<i2")
        stereo[0::2] = self._chan[0][:n]
        stereo[1::2] = self._chan[1][:n]
        self._wav.writeframes(stereo.tobytes())
        self._written += n
        self._chan = [self._chan[0][n:], self._chan[1][n:]]

    @property
    def duration_ms(self) -> int:
        return (self._written + max(len(self._chan[0]), len(self._chan[1]))) * 1000 // self.rate

    def close(self) -> Path:
        """Pad the shorter side, finish the file and move it to :attr:`path`."""
        if self._closed:
            return self.path
        n = max(len(self._chan[0]), len(self._chan[1]))
        for ch in (0, 1):
            if len(self._chan[ch]) < n:
                self._chan[ch] = np.concatenate([self._chan[ch], np.zeros(n - len(self._chan[ch]), np.int16)])
        self._flush(n)
        self._wav.close()
        self._closed = True
        os.replace(self._tmp, self.path)
        log.info("recording written", extra={"action": "recording.close", "seconds": self._written / self.rate})
        return self.path

    def abort(self) -> None:
        """Drop the recording (e.g. the elder did not consent)."""
        if not self._closed:
            self._wav.close()
            self._closed = True
        self._tmp.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    files: int
    bytes: int


def purge_recordings(recordings_dir: Path, older_than: timedelta, now: datetime) -> PurgeResult:
    """Delete recordings (and stale partial files) last modified before ``now - older_than``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    cutoff = (now - older_than).timestamp()
    files = size = 0
    if not recordings_dir.exists():
        return PurgeResult(0, 0)
    for p in sorted(recordings_dir.rglob("*")):
        if not p.is_file() or not (p.suffix == RECORDING_SUFFIX or p.name.endswith(".part")):
            continue
        st = p.stat()
        if st.st_mtime < cutoff:
            p.unlink(missing_ok=True)
            files += 1
            size += st.st_size
    for d in sorted((p for p in recordings_dir.rglob("*") if p.is_dir()), key=lambda q: len(q.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    log.info("recordings purged", extra={"action": "recording.purge", "files": files, "bytes": size})
    return PurgeResult(files, size)
