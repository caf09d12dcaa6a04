"""N concurrent keypad-only calls to real baresip phones: the largest N with every call clean, CPU per call.

Each call: INVITE -> 200/ACK -> an espeak-ng prompt (~5 s) played again and again until every one of
the N calls has been answered and then ``--hold-s`` more seconds have passed (so all N calls really
talk at the same time for that window) -> one RFC 4733 digit from us -> BYE.

A step is clean when every call was answered and played every prompt to the end, no prompt packet
went out more than 40 ms behind its 20 ms slot (``--late-ms``), the first packet of each prompt left
within 60 ms of ``play()`` (the shared media clock starts a prompt on its next 20 ms tick), audio came
back from every phone, and what a sample of phones heard (baresip ``sndfile``) matches the prompt
with a normalised cross-correlation > 0.95. N climbs the ladder until a step is not clean
(``--keep-going`` measures the rest of the ladder anyway).

Lateness of a frame = when it was really sent minus its nominal 20 ms slot. The shared
``MediaClock`` measures it per frame into a 1 ms histogram (p50/p99/max below); the per-call
criterion uses each session's ``max_send_lateness_s``. (Before the clock existed, the bench took
it from the send tee: frame k's send time minus frame 0's + k * 20 ms.)

    .venv/bin/python bench/sip_calls.py [--ladder 50,100,150,200,250] [--peer-nice 10] [--pin]

Peers: one baresip process per ``--calls-per-phone`` calls, plus one recording phone for the audio
sample. By default they run at nice 10 so that phones simulated on the same 2 cores do not starve
the process being measured (in production the phones are elsewhere); ``--pin`` also puts them all
on the last CPU and this process on the first. CPU per call is this process only; the phones'
CPU is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.media.rtp import AudioFrame, MediaDirection

try:  # the shared media clock (absent before it was written: then lateness comes from the send tee)
    from ivr.media.clock import MediaClock
except ImportError:
    MediaClock = None  # type: ignore[assignment,misc]
from ivr.sip import CallResult, SipConfig, UserAgent
from tests.integration.sip.peers import BaresipPeer, best_correlation, read_wav, speech_wav

FRAME_S = 0.020
_gc_pauses: list[float] = []
_gc_start = [0.0]


def _gc_watch(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_start[0] = time.perf_counter()
    else:
        _gc_pauses.append((time.perf_counter() - _gc_start[0]) * 1000)


gc.callbacks.append(_gc_watch)
MATCH_MIN = 0.95
START_LIMIT_S = 0.060  # one 20 ms tick of phase + 40 ms


class TxTimes:
    """MediaSink recording when each sent frame left (loop time), per prompt."""

    def __init__(self) -> None:
        self.current: list[float] = []

    def on_media(self, direction: MediaDirection, pcm: bytes, at: float) -> None:
        if direction is MediaDirection.TX:
            self.current.append(at)


@dataclass
class StepStats:
    lateness_ms: list[float] = field(default_factory=list)  # every prompt frame k >= 1
    start_ms: list[float] = field(default_factory=list)  # play() -> first packet
    active: int = 0
    peak_active: int = 0
    plays: int = 0


async def one_call(ua: UserAgent, uri: str, prompt: bytes, delay_s: float, settled: list[int], n: int,
                   all_in: asyncio.Event, hold_over: asyncio.Event, stats: StepStats,
                   late_limit_s: float) -> tuple[bool, str]:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(delay_s)  # a dialer spreads call attempts (--cps); all N then overlap in talk
    try:
        call = await ua.call(uri, ring_timeout_s=20)
    finally:
        settled[0] += 1
        if settled[0] == n:
            all_in.set()
    if call.outcome is not CallResult.ANSWERED:
        return False, f"not answered: {call.outcome} {call.sip_status}"
    sink = TxTimes()
    call.media.add_sink(sink)
    heard = [0]

    async def consume() -> None:  # like ivr.line.Line's reader: take every frame as it arrives
        while (item := await call.media.get(wait_s=0.5)) is not None or not call.media.closed.is_set():
            if isinstance(item, AudioFrame):
                heard[0] += 1

    reader = asyncio.create_task(consume())
    stats.active += 1
    stats.peak_active = max(stats.peak_active, stats.active)
    worst = 0.0
    worst_start = 0.0
    try:
        while True:
            sink.current = []
            t_call = loop.time()
            played = await call.media.play(prompt)
            stats.plays += 1
            times = sink.current
            if not played or call.hung_up.is_set():
                return False, "prompt interrupted / dropped"
            if times:  # with the clock, the tee carries nominal slots: lateness is in the clock's histogram
                start = times[0] - t_call
                worst_start = max(worst_start, start)
                stats.start_ms.append(start * 1000)
                if MediaClock is None:
                    stats.lateness_ms.extend((t - times[0] - k * FRAME_S) * 1000 for k, t in enumerate(times) if k)
            worst = max(worst, call.media.max_send_lateness_s * 1000)
            if hold_over.is_set():
                break
    finally:
        stats.active -= 1
    await call.media.send_dtmf("1")
    await call.hangup()
    await call.media.close()
    await reader
    if heard[0] < 50:
        return False, f"only {heard[0]} frames heard from the phone"
    if worst > late_limit_s * 1000:
        return False, f"prompt frame {worst:.0f} ms late"
    if worst_start > START_LIMIT_S:
        return False, f"prompt started {worst_start * 1000:.0f} ms after play()"
    return True, "ok"


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def peer_cpu(phones: list[BaresipPeer]) -> float:
    total = 0.0
    for p in phones:
        if p.proc is not None:
            try:
                t = psutil.Process(p.proc.pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


async def step(ua: UserAgent, phones: list[BaresipPeer], samplers: list[BaresipPeer], n: int,
               prompt: bytes, args: argparse.Namespace) -> dict[str, object]:
    proc = psutil.Process()
    before_files = {f for s in samplers for f in s.heard()}
    sample_every = max(1, n // len(samplers))
    targets = [phones[i % len(phones)].uri for i in range(n)]
    sampled = list(range(0, n, sample_every))[: len(samplers)]
    for k, i in enumerate(sampled):  # one recording phone per sampled call (sndfile names files by the second)
        targets[i] = samplers[k].uri
    stats = StepStats()
    settled = [0]
    all_in, hold_over = asyncio.Event(), asyncio.Event()

    async def hold() -> tuple[float, float, float]:
        await all_in.wait()
        cpu_a, peers_a, t_a = proc.cpu_times(), peer_cpu([*phones, *samplers]), time.monotonic()
        await asyncio.sleep(args.hold_s)
        cpu_b, peers_b, t_b = proc.cpu_times(), peer_cpu([*phones, *samplers]), time.monotonic()
        hold_over.set()
        ours = (cpu_b.user - cpu_a.user) + (cpu_b.system - cpu_a.system)
        return ours / (t_b - t_a), (peers_b - peers_a) / (t_b - t_a), os.getloadavg()[0]

    clock = MediaClock.for_loop() if MediaClock is not None else None
    if clock is not None:
        clock.reset_stats()
    _gc_pauses.clear()
    hold_task = asyncio.create_task(hold())
    results = await asyncio.gather(
        *(one_call(ua, targets[i], prompt, i / args.cps, settled, n, all_in, hold_over, stats, args.late_ms / 1000)
          for i in range(n)), return_exceptions=True)
    hold_over.set()
    all_in.set()
    ours_cores, peers_cores, load = await hold_task
    bad = [r for r in results if isinstance(r, BaseException) or not r[0]]
    reason = "" if not bad else repr(bad[0]) if isinstance(bad[0], BaseException) else bad[0][1]
    # what the sampled phones heard
    await asyncio.sleep(1.0)
    new_files = [f for s in samplers for f in s.heard() if f not in before_files]
    matches = []
    for f in new_files:
        try:
            matches.append(best_correlation(prompt, read_wav(f)))
        except (OSError, AssertionError, EOFError):
            matches.append(0.0)
    expected = len(sampled)
    match_ok = len(matches) >= expected and all(m > MATCH_MIN for m in matches)
    if not match_ok and not reason:
        reason = f"audio match {matches} (expected {expected} recordings > {MATCH_MIN})"
    if clock is not None:
        cs = clock.snapshot()
        late = {"late_max": cs.max_lateness_s * 1000, "late_p99": cs.percentile_ms(0.99),
                "late_p50": cs.percentile_ms(0.50), "frames": cs.frames, "resyncs": cs.resyncs,
                "tick": f"ticks {cs.ticks}, mean {1000 * cs.busy_s / max(1, cs.ticks):.2f} ms wall / {1000 * cs.cpu_s / max(1, cs.ticks):.2f} ms CPU, max {1000 * cs.max_tick_s:.1f} ms"}
    else:
        late = {"late_max": max(stats.lateness_ms or [0.0]), "late_p99": pct(stats.lateness_ms, 0.99),
                "late_p50": pct(stats.lateness_ms, 0.50), "frames": len(stats.lateness_ms), "resyncs": 0, "tick": "n/a"}
    late["gc"] = f"gc {len(_gc_pauses)} runs, max {max(_gc_pauses or [0.0]):.1f} ms"
    return {
        **late,
        "n": n, "clean": not bad and match_ok, "failed": len(bad), "reason": reason,
        "peak_active": stats.peak_active, "plays": stats.plays,
        "cpu_per_call_pct": 100.0 * ours_cores / max(1, stats.peak_active), "ours_cores": ours_cores,
        "peers_cores": peers_cores, "load": load,
        "start_p50": pct(stats.start_ms, 0.5), "start_max": max(stats.start_ms or [0.0]),
        "match_min": min(matches or [0.0]), "matches": len(matches),
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ladder", default="50,100,150,200,250")
    ap.add_argument("--budget-s", type=float, default=600.0)
    ap.add_argument("--cps", type=float, default=25.0, help="call attempts started per second")
    ap.add_argument("--hold-s", type=float, default=6.0, help="seconds all N calls talk at once")
    ap.add_argument("--late-ms", type=float, default=40.0, help="a prompt packet later than this is unclean")
    ap.add_argument("--calls-per-phone", type=int, default=50)
    ap.add_argument("--sample", type=int, default=6, help="calls per step whose heard audio is matched")
    ap.add_argument("--peer-nice", type=int, default=10, help="nice value of the baresip phones")
    ap.add_argument("--nice", type=int, default=0,
                    help="nice value of this process (negative: favour it over other work on a shared host)")
    ap.add_argument("--realtime", action="store_true", help="run this process's event loop with SCHED_RR priority 10")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() before each step (what the assembly could do after start-up)")
    ap.add_argument("--pin", action="store_true", help="phones on the last CPU, this process on the first")
    ap.add_argument("--keep-going", action="store_true", help="measure every step even after an unclean one")
    args = ap.parse_args()
    ladder = [int(x) for x in args.ladder.split(",")]
    work = Path(tempfile.mkdtemp(prefix="sip_bench_"))
    prompt = read_wav(speech_wav("Hello, this is your check in call. Press one if you are well, two if you need help.",
                                 work / "prompt.wav"))
    mic = speech_wav("Hello", work / "mic.wav", pad_to_s=120)
    n_phones = max(1, math.ceil(max(ladder) / args.calls_per_phone))
    phones = [BaresipPeer(work / f"phone{i}", source_wav=mic, max_calls=args.calls_per_phone + 5, record=False).start()
              for i in range(n_phones)]
    samplers = [BaresipPeer(work / f"sampler{i}", source_wav=mic, max_calls=2, record=True).start()
                for i in range(args.sample)]
    cpus = sorted(os.sched_getaffinity(0))
    for p in [*phones, *samplers]:
        assert p.proc is not None
        ps = psutil.Process(p.proc.pid)
        for t in ps.threads():  # nice and affinity are per thread on Linux; new threads inherit them
            os.setpriority(os.PRIO_PROCESS, t.id, args.peer_nice)
            if args.pin and len(cpus) > 1:
                os.sched_setaffinity(t.id, {cpus[-1]})
    if args.pin and len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    if args.realtime:  # as media servers are run (asterisk -p, freeswitch -rp): the kernel keeps 5 % for others
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(10))
    clock = "shared clock" if MediaClock is not None else "timer per prompt"
    print(f"# {os.cpu_count()} CPUs, {n_phones}+{len(samplers)} baresip phones at nice {args.peer_nice}"
          f"{', pinned to CPU ' + str(cpus[-1]) + ' (us on CPU ' + str(cpus[0]) + ')' if args.pin else ''}; "
          f"this process at nice {os.getpriority(os.PRIO_PROCESS, 0)}{' + SCHED_RR' if args.realtime else ''}; "
          f"loop {type(asyncio.get_running_loop()).__module__}; send path: {clock}; prompt "
          f"{len(prompt) / 16000:.1f} s; hold {args.hold_s:.0f} s; late limit {args.late_ms:.0f} ms", flush=True)
    ua = UserAgent(SipConfig(local_host="127.0.0.1"))
    await ua.start()
    best = None
    started = time.monotonic()
    try:
        for n in ladder:
            if time.monotonic() - started > args.budget_s:
                print(f"budget used; stopping before N={n}")
                break
            if args.gc_freeze:
                gc.collect()
                gc.freeze()
            r = await step(ua, phones, samplers, n, prompt, args)
            print(f"N={n:4d} clean={r['clean']!s:5} concurrent={r['peak_active']:4d} "
                  f"cpu/call={r['cpu_per_call_pct']:.2f}% ({r['ours_cores']:.2f} cores; phones "
                  f"{r['peers_cores']:.2f} cores; load {r['load']:.1f})  lateness p50/p99/max="
                  f"{r['late_p50']:.1f}/{r['late_p99']:.1f}/{r['late_max']:.1f} ms over {r['frames']} frames "
                  f"(resyncs {r['resyncs']}; {r['tick']}; {r['gc']})  "
                  f"start p50/max={r['start_p50']:.1f}/{r['start_max']:.1f} ms  "
                  f"match min={r['match_min']:.4f} ({r['matches']} calls)"
                  + (f"  failed={r['failed']} first failure: {r['reason']}" if r["reason"] else ""), flush=True)
            if r["clean"]:
                best = r
            if not r["clean"] and not args.keep_going:
                break
            await asyncio.sleep(2.0)
    finally:
        await ua.stop()
        for p in [*phones, *samplers]:
            p.stop()
    if best is None:
        print("RESULT largest clean N=0")
    else:
        print(f"RESULT largest clean N={best['n']} cpu_per_call={best['cpu_per_call_pct']:.2f}%_core "
              f"late_p99={best['late_p99']:.1f}ms late_max={best['late_max']:.1f}ms")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if os.environ.get("BENCH_UVLOOP") and uvloop is not None:
        uvloop.install()
    asyncio.run(main())
