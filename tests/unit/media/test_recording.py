"""Stereo call recordings aligned by time; atomic write; retention purge."""

from __future__ import annotations

import os
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from ivr.media.recording import CallRecorder, purge_recordings, recording_path


def read_stereo(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        return data[0::2], data[1::2], w.getframerate()


def test_both_directions_aligned_by_time(tmp_path: Path) -> None:
    path = recording_path(tmp_path, "call-1", datetime(2025, 1, 2, 3, 4, tzinfo=UTC))
    assert path == tmp_path / "2025" / "01" / "02" / "call-1.wav"
    rec = CallRecorder(path)
    prompt = np.full(8000, 1000, np.int16)  # 1 s we played from t=0
    answer = np.full(4000, -2000, np.int16)  # 0.5 s the elder said from t=1.5 s
    for i in range(0, 8000, 160):
        rec.played(prompt[i : i + 160].tobytes(), at_ms=i // 8)
    rec.heard(answer.tobytes(), at_ms=1500)
    assert not path.exists()  # only the temp file while the call goes on
    rec.close()
    left, right, rate = read_stereo(path)
    assert rate == 8000 and len(left) == len(right) == 16000
    assert np.all(left[:8000] == 1000) and np.all(left[8000:] == 0)
    assert np.all(right[:12000] == 0) and np.all(right[12000:] == -2000)
    assert list(tmp_path.rglob("*.part")) == []


def test_contiguous_appends_and_late_audio(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path / "a.wav")
    for _ in range(10):
        rec.played(b"\x01\x00" * 160)
        rec.heard(b"\x02\x00" * 160)
    rec.heard(b"\x05\x00" * 160, at_ms=0)  # far too late: already written
    assert rec.duration_ms == 200
    left, right, _ = read_stereo(rec.close())
    assert np.all(left == 1) and np.all(right == 2)


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path / "x" / "b.wav")
    rec.played(b"\x01\x00" * 1600)
    rec.abort()
    assert list((tmp_path / "x").iterdir()) == []


def test_bad_call_id() -> None:
    with pytest.raises(ValueError, match="录音"):
        recording_path(Path("/tmp"), "///", datetime(2025, 1, 1, tzinfo=UTC))


def test_purge_by_age(tmp_path: Path) -> None:
    now = datetime(2025, 6, 1, tzinfo=UTC)
    old = tmp_path / "2025" / "01" / "01" / "old.wav"
    new = tmp_path / "2025" / "05" / "30" / "new.wav"
    stray = tmp_path / "notes.txt"
    for p in (old, new, stray):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 100)
    ts_old = (now - timedelta(days=100)).timestamp()
    os.utime(old, (ts_old, ts_old))
    os.utime(stray, (ts_old, ts_old))
    ts_new = (now - timedelta(days=2)).timestamp()
    os.utime(new, (ts_new, ts_new))
    result = purge_recordings(tmp_path, timedelta(days=90), now)
    assert (result.files, result.bytes) == (1, 100)
    assert not old.exists() and new.exists() and stray.exists()
    assert not (tmp_path / "2025" / "01").exists()  # empty date folders are removed
    with pytest.raises(ValueError):
        purge_recordings(tmp_path, timedelta(days=1), datetime(2025, 1, 1))
    assert purge_recordings(tmp_path / "none", timedelta(days=1), now).files == 0
