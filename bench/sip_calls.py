"""Concurrent keypad-only calls to real baresip phones: the largest N with every call clean, CPU per call.

Each call: INVITE -> 200/ACK -> a ~3 s espeak-ng prompt paced at 20 ms -> the phone's audio and
one RFC 4733 digit from us -> BYE. A call is clean when it was answered, the prompt played out
with no frame more than 60 ms behind its slot, audio came back from the phone, and the BYE was
accepted. N climbs a ladder until a step is not clean or the time budget is used.

    .venv/bin/python bench/sip_calls.py [--ladder 10,25,50,100,200] [--cps 25] [--budget-s 240]

Calls start --cps per second (as a dialer would); with a 5 s prompt, 25 cps keeps up to ~125
calls in the prompt at once. CPU is this process only (baresip's is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.media.rtp import AudioFrame
from ivr.sip import CallResult, SipConfig, UserAgent
from tests.integration.sip.peers import BaresipPeer, read_wav, speech_wav

CALLS_PER_PHONE = 50
LATE_LIMIT_S = 0.060  # 3 frames: well inside a phone jitter buffer


async def one_call(ua: UserAgent, uri: str, prompt: bytes, delay_s: float) -> tuple[bool, str, float]:
    await asyncio.sleep(delay_s)  # a dialer spreads call attempts (--cps); all N overlap in talk
    call = await ua.call(uri, ring_timeout_s=15)
    if call.outcome is not CallResult.ANSWERED:
        return False, f"not answered: {call.outcome} {call.sip_status}", 0.0
    played = await call.media.play(prompt)
    await call.media.send_dtmf("1")
    heard = sum(1 for e in call.media.drain_events() if isinstance(e, AudioFrame))
    late = call.media.max_send_lateness_s
    hung_up_by_them = call.hung_up.is_set()
    await call.hangup()
    if not played or hung_up_by_them:
        return False, "prompt interrupted / dropped", late
    if heard < 50:
        return False, f"only {heard} frames heard", late
    if late > LATE_LIMIT_S:
        return False, f"prompt frame {late * 1000:.0f} ms late", late
    return True, "ok", late


async def step(ua: UserAgent, phones: list[BaresipPeer], n: int, prompt: bytes,
               cps: float) -> tuple[bool, float, float, str]:
    proc = psutil.Process()
    cpu0 = proc.cpu_times()
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(one_call(ua, phones[i % len(phones)].uri, prompt, i / cps) for i in range(n)), return_exceptions=True)
    wall = time.monotonic() - t0
    cpu1 = proc.cpu_times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    bad = [r for r in results if isinstance(r, BaseException) or not r[0]]
    lates = [r[2] for r in results if not isinstance(r, BaseException)]
    reason = "" if not bad else str(bad[0] if isinstance(bad[0], BaseException) else bad[0][1])
    per_call_pct = 100.0 * cpu / wall / n
    return not bad, per_call_pct, max(lates or [0.0]) * 1000, reason


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ladder", default="10,25,50,100,200")
    ap.add_argument("--budget-s", type=float, default=240.0)
    ap.add_argument("--cps", type=float, default=25.0, help="call attempts started per second")
    args = ap.parse_args()
    ladder = [int(x) for x in args.ladder.split(",")]
    work = Path(tempfile.mkdtemp(prefix="sip_bench_"))
    prompt = read_wav(speech_wav("Hello, this is your check in call. Press one if you are well, two if you need help.",
                                 work / "prompt.wav"))
    mic = speech_wav("Hello", work / "mic.wav", pad_to_s=60)
    n_phones = max(1, math.ceil(max(ladder) / CALLS_PER_PHONE))
    phones = [BaresipPeer(work / f"phone{i}", source_wav=mic, max_calls=CALLS_PER_PHONE + 5, record=False).start()
              for i in range(n_phones)]
    ua = UserAgent(SipConfig(local_host="127.0.0.1"))
    await ua.start()
    best = 0
    best_cpu = 0.0
    started = time.monotonic()
    try:
        for n in ladder:
            if time.monotonic() - started > args.budget_s:
                print(f"budget used; stopping before N={n}")
                break
            ok, cpu_pct, late_ms, reason = await step(ua, phones, n, prompt, args.cps)
            print(f"N={n:4d} clean={ok} cpu/call={cpu_pct:.2f}% of a core  worst frame lateness={late_ms:.1f} ms"
                  + (f"  first failure: {reason}" if reason else ""), flush=True)
            if not ok:
                break
            best, best_cpu = n, cpu_pct
            await asyncio.sleep(1.0)
    finally:
        await ua.stop()
        for p in phones:
            p.stop()
    print(f"RESULT largest clean N={best} cpu_per_call={best_cpu:.2f}%_core prompt_s={len(prompt) / 16000:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
