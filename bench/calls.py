"""N concurrent check-in calls to baresip (one baresip, many auto-answered calls): prints the largest
N with every call clean, CPU per call and the voice-turn latency.

    .venv/bin/python bench/calls.py --mode asr --ladder 10,20,40,60
    .venv/bin/python bench/calls.py --mode keypad --ladder 50,100,200

asr: a Korean elder (espeak-ng) answers 네 / 네 좋아요 / 아니요; Vosk grammar mode; the whole dialog
runs. keypad: zh without a model, a silent elder; the identity prompt plays out, then the call ends.
A call is clean when it was answered, (asr) ended "well" with the three intents, what the phone
heard matches our first prompt (> 0.95) and no prompt frame was sent > 100 ms late.
Voice-turn latency: from the VAD's end-of-speech decision (and, in brackets, from the last voiced
frame, which adds the 700 ms trailing silence elders need) to the first packet of the next prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dialogs.engine import DialogEngine
from dialogs.result import DialogContext
from dialogs.script import load_scripts
from ivr.asr import AsrModels
from ivr.call import CallReport, CallRunner, RunnerConfig
from ivr.conversation import CheckInConversation
from ivr.media.match import match_score
from ivr.sip import SipConfig, UserAgent
from ivr.tts import PromptCache
from storage.enums import Locale, Outcome
from tests.integration.ivr.conftest import elder_track
from tests.integration.sip.peers import BaresipPeer, read_wav


class StopAfterFirst:
    def __init__(self, stop: asyncio.Event) -> None:
        self.stop, self.n = stop, 0

    def prompt_started(self, prompt_id: str, at: float) -> None:
        self.n += 1
        if self.n >= 1:
            self.stop.set()  # checked before the next action: the first prompt plays out


async def one_round(n: int, mode: str, work: Path, cache: PromptCache, asr: AsrModels | None, parser: object,
                    engine: DialogEngine) -> dict[str, object]:
    locale = Locale.KO if mode == "asr" else Locale.ZH
    work.mkdir(parents=True, exist_ok=True)
    if mode == "asr":
        mic = elder_track(work / "ko.wav", [(3.0, "네"), (9.0, "네 좋아요"), (16.0, "아니요")], locale, cache)
    else:
        mic = elder_track(work / "silent.wav", [], locale, cache, total_s=60)
    phone = BaresipPeer(work / f"baresip{n}", answer="auto", source_wav=mic, max_calls=n + 2).start()
    ua = UserAgent(SipConfig(local_host="127.0.0.1"))
    await ua.start()
    runner = CallRunner(ua, cache, asr=asr, parser=parser,  # type: ignore[arg-type]
                        config=RunnerConfig(ring_timeout_s=20, recordings_dir=None, detect_machines=False))
    proc = psutil.Process()
    cpu0 = proc.cpu_times()
    bcpu0 = psutil.Process(phone.proc.pid).cpu_times() if phone.proc else None
    t0 = time.monotonic()

    async def call(i: int) -> tuple[CallReport, CheckInConversation]:
        await asyncio.sleep(i * 0.05)  # a dialer ramps up too
        conv = CheckInConversation(engine, DialogContext(locale=locale, salutation="어르신" if mode == "asr" else "王奶奶"))
        stop = asyncio.Event()
        obs = StopAfterFirst(stop) if mode == "keypad" else None
        return await runner.run(phone.uri, conv, stop=stop, observer=obs), conv

    results = await asyncio.gather(*(call(i) for i in range(n)))
    wall = time.monotonic() - t0
    cpu1 = proc.cpu_times()
    ours = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    await ua.stop()
    await asyncio.sleep(1.0)
    baresip_cpu = None
    if bcpu0 is not None and phone.proc:
        b1 = psutil.Process(phone.proc.pid).cpu_times()
        baresip_cpu = (b1.user + b1.system) - (bcpu0.user + bcpu0.system)
    phone.stop()
    first_text = results[0][0].transcript[0]["text"] if results[0][0].transcript else ""
    rate = round(130 * 0.9)
    ref = cache.render_sync(first_text, locale, rate=rate, volume=1.0) if first_text else b""
    heard = phone.heard()
    scores = [match_score(ref[: 16000 * 2], read_wav(p), max_offset_ms=10000).score for p in heard]
    clean = 0
    lat_vad: list[float] = []
    lat_voice: list[float] = []
    for rep, _conv in results:
        ok = rep.answered and rep.max_send_lateness_ms <= 100
        if mode == "asr":
            ok = ok and rep.outcome is Outcome.WELL and rep.intents[:3] == ["affirm", "affirm", "deny"]
        clean += ok
        lat_vad += [a for a, _ in rep.turn_latencies]
        lat_voice += [b for _, b in rep.turn_latencies]
    heard_ok = len(scores) >= n and all(s > 0.95 for s in scores)
    return {
        "n": n, "clean": clean, "heard_ok": heard_ok, "min_match": round(min(scores), 3) if scores else 0.0,
        "wall_s": round(wall, 1), "cpu_s": round(ours, 1), "cpu_per_call_s": round(ours / n, 2),
        "baresip_cpu_s": round(baresip_cpu, 1) if baresip_cpu is not None else None,
        "max_late_ms": max(r.max_send_lateness_ms for r, _ in results),
        "p50_ms": round(float(np.percentile(lat_vad, 50)) * 1000) if lat_vad else None,
        "p95_ms": round(float(np.percentile(lat_vad, 95)) * 1000) if lat_vad else None,
        "p95_from_voice_ms": round(float(np.percentile(lat_voice, 95)) * 1000) if lat_voice else None,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("asr", "keypad"), default="asr")
    ap.add_argument("--ladder", default="10,20,40,60")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tanfang-bench-calls-"))
    cache = PromptCache(work / "prompts")
    engine = DialogEngine(load_scripts())
    asr = parser = None
    if args.mode == "asr":
        from tanfang.nlu import build_intent_parser
        from tanfang.settings import Settings

        asr = AsrModels.from_settings_paths(None, None)
        asr.model(Locale.KO)
        parser = build_intent_parser(Settings(data_dir=Path(tempfile.gettempdir()) / "tanfang-test-nlu"))
    best = 0
    for n in (int(x) for x in args.ladder.split(",")):
        r = await one_round(n, args.mode, work / f"n{n}", cache, asr, parser, engine)
        print(r, flush=True)
        if r["clean"] == n and r["heard_ok"]:
            best = n
        else:
            break
    print(f"calls.py mode={args.mode}: largest N with every call clean = {best}")


if __name__ == "__main__":
    asyncio.run(main())
