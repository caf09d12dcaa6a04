"""Voice messages without WeChat's ``Recognition``: download the AMR, decode it with sox, run Vosk.

WeChat sends voice as AMR-NB (8 kHz); sox decodes it to 8 kHz S16LE mono, the rate the phone
models in :mod:`ivr.asr` take. Without a model for the elder's locale (no Mandarin model can be
shipped) ``recognize`` returns None and the bot asks the elder to type or press a digit.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.api import WechatApi
from ivr.asr import AsrModels
from storage.enums import Locale

log = logging.getLogger(__name__)

RATE = 8000
FRAME = 320  # 20 ms of S16LE at 8 kHz


class VoiceError(Exception):
    """The media could not be decoded."""


async def amr_to_pcm(data: bytes, *, sox: str = "sox", timeout_s: float = 5.0) -> bytes:
    """AMR-NB (or any format sox sniffs) → 8 kHz mono S16LE."""
    kind = "amr-nb" if data.startswith(b"#!AMR\n") else "amr-wb" if data.startswith(b"#!AMR-WB\n") else None
    if kind is None:
        raise VoiceError("不是 AMR 语音")
    proc = await asyncio.create_subprocess_exec(
        sox, "-q", "-t", kind, "-", "-t", "raw", "-r", str(RATE), "-e", "signed-integer", "-b", "16", "-c", "1", "-",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout_s)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise VoiceError("语音解码超时") from exc
    if proc.returncode != 0:
        raise VoiceError(f"语音解码失败：{err.decode(errors='replace')[:200]}")
    return out


@dataclass
class VoskVoice:
    """:class:`bot.ports.VoiceRecognizer` over the WeChat media API, sox and Vosk."""

    api: WechatApi
    models: AsrModels
    sox: str = "sox"

    async def recognize(self, media_id: str, *, locale: str) -> str | None:
        loc = Locale(locale) if locale in {m.value for m in Locale} else Locale.ZH
        if not self.models.available(loc):
            return None
        pcm = await amr_to_pcm(await self.api.get_media(media_id), sox=self.sox)
        return await asyncio.to_thread(self._run, loc, pcm)

    def _run(self, loc: Locale, pcm: bytes) -> str | None:
        rec = self.models.recognizer(loc, rate=RATE)
        texts = []
        for i in range(0, len(pcm), FRAME):
            r = rec.feed(pcm[i : i + FRAME])
            if r.final and r.text:
                texts.append(r.text)
        last = rec.finish()
        text = " ".join([*texts, last.text]).strip()
        return text or None
