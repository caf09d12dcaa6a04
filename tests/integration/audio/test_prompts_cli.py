"""``tanfang prompts render`` / ``say`` with the real espeak-ng."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import pytest

from tanfang.cli import main

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

SCRIPT = """
states:
  greet:
    actions:
      - say: {text: "您好，这里是探访关爱服务。", rate: 120, volume: 1.2}
      - {action: say, text: "请问您身体好吗？好请按1，不好请按2。"}
      - say: "您好，{name}"
"""


def test_render_and_rerender(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TANFANG_DATA_DIR", str(tmp_path / "var"))
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "zh.yaml").write_text(SCRIPT, encoding="utf-8")
    assert main(["prompts", "render", "--locale", "zh", "--scripts-dir", str(scripts)]) == 0
    assert "4 条提示语，新合成 4 条" in capsys.readouterr().out
    assert len(list((tmp_path / "var" / "prompts").rglob("*.s16"))) == 4
    assert main(["prompts", "render", "--locale", "zh", "--scripts-dir", str(scripts)]) == 0
    assert "已缓存 4 条" in capsys.readouterr().out
    # No Korean script: a clear error naming the file, exit 2.
    assert main(["prompts", "render", "--locale", "ko", "--scripts-dir", str(scripts)]) == 2
    assert "ko.yaml" in capsys.readouterr().err


def test_say_writes_an_8k_wav(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANFANG_DATA_DIR", str(tmp_path / "var"))
    out = tmp_path / "elder" / "yes.wav"
    assert main(["prompts", "say", "네", "--locale", "ko", "--out", str(out)]) == 0
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.getnframes() > 1000
