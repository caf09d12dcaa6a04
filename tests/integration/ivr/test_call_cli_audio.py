"""``tanfang call`` against baresip; the callee hangs up mid-prompt; what the callee heard is our prompt."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from dialogs.result import DialogContext
from ivr.call import CallRunner, RunnerConfig
from ivr.conversation import CheckInConversation
from ivr.media.match import match_score
from ivr.sip import UserAgent
from storage.enums import Locale, Outcome
from tests.integration.ivr.conftest import elder_track
from tests.integration.sip.peers import read_wav

pytestmark = pytest.mark.sip
REPO = Path(__file__).resolve().parents[3]


async def test_callee_hears_our_prompt_and_hangup_mid_prompt_is_handled(baresip, sip_ua: UserAgent, prompt_cache,
                                                                      dialog_engine, tmp_path: Path) -> None:
    short = elder_track(tmp_path / "short.wav", [], Locale.ZH, prompt_cache, total_s=9.0)  # hangs up at EOF
    phone = baresip(answer="auto", source_wav=short)
    runner = CallRunner(sip_ua, prompt_cache, asr=None, parser=None,
                        config=RunnerConfig(ring_timeout_s=10, recordings_dir=tmp_path / "rec"))
    conv = CheckInConversation(dialog_engine, DialogContext(locale=Locale.ZH, salutation="王奶奶"))
    report = await runner.run(phone.uri, conv)
    assert report.sip_status == 200 and report.result == "answered"
    # the identity prompt (~13 s with its keypad options) was cut by the phone's BYE at ~9 s
    assert report.prompts == ["q.identity"] and 7 < report.talk_seconds < 12
    assert report.outcome is Outcome.UNREACHED and report.digits == ""
    assert report.recording is not None and report.recording.exists()
    # ~9 s of the phone's microphone (50 packets a second) came in without a gap; ours went out
    media = report.media_stats
    assert media["packets_received"] > 300 and media["frames_lost"] == 0, media
    assert media["packets_sent"] > 300, media
    await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 5)
    await asyncio.sleep(0.5)
    heard = read_wav(phone.heard()[-1])
    spoken = report.transcript[0]["text"]
    sent = await prompt_cache.render(spoken, Locale.ZH, rate=round(130 * 0.9), volume=1.0)
    # compare the part that was played (the phone heard ~8 s of it)
    score = match_score(sent[: 16000 * 6], heard).score
    assert score > 0.95, score


async def test_tanfang_call_cli_against_baresip(baresip, prompt_cache, intent_parser, tmp_path: Path) -> None:
    mic = elder_track(tmp_path / "ko.wav", [(3.0, "네"), (9.0, "네 좋아요"), (16.0, "아니요")], Locale.KO, prompt_cache)
    phone = baresip(answer="auto", source_wav=mic)
    data = tmp_path / "data"
    shutil.copytree(Path(tempfile.gettempdir()) / "tanfang-test-nlu" / "models", data / "models")
    env = {**os.environ, "TANFANG_DATA_DIR": str(data), "TANFANG_SECRET_KEY": "", "TANFANG_SIP_LOCAL_PORT": "0"}
    env.pop("TANFANG_SECRET_KEY")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tanfang", "call", phone.uri, "--locale", "ko", "--json", "--ring-timeout", "10",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["sip_status"] == 200
    assert result["outcome"] == "well"
    assert result["intents"][:3] == ["affirm", "affirm", "deny"]
    assert result["digits"] == ""
    assert result["recording"] and await asyncio.to_thread(os.path.exists, result["recording"])
    assert [t["who"] for t in result["transcript"]][:2] == ["system", "elder"]
