"""The call runner: one outbound call driven by a conversation (the check-in dialog or the
emergency-contact prompt) over a live SIP call.

``CallRunner.run(target, conversation)`` dials, classifies what answered (machine / carrier
announcement, leaning towards "human"), records both directions, then loops: each ``Say`` is
rendered by the prompt cache (``phone_text``, so keypad options are spoken) and played — a key
press at any moment or the elder talking over it stops the prompt; each ``Listen`` waits for a
key press or an utterance (Vosk grammar mode where a model exists, keypad-only otherwise) and
feeds ``Digit`` / ``Speech`` (parsed by the intent parser) / ``Silence`` / ``HungUp`` back. A short
grammar-mode answer ends after ``quick_end_ms`` of silence when the recogniser already has it (the
next prompt starts sooner); if the elder only paused and goes on ("네 … 좋아요"), the rest is appended
to that answer's turn, and when the whole utterance means something else ("네 … 아니 아니요") the
runner stops the prompt, restores the conversation as it was before the answer and feeds the whole
utterance instead (see :class:`_Continuations`);
``Transfer`` REFERs the call to the duty line (refused → the elder hears that staff will call
back, and the report asks for a P1); ``End`` hangs up. It returns a :class:`CallReport`; storing
it and acknowledging the queue is the dialer's job (``ivr.persist``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from dialogs.events import Action, Digit, End, Event, HungUp, Listen, Say, Silence, Speech, Transfer
from dialogs.nlu.intents import IntentParser
from ivr.amd import AmdConfig, Answerer, classify_early_media, classify_greeting
from ivr.asr import AsrModels, AsyncRecognizer
from ivr.conversation import CALLBACK_PROMISE, GOODBYE_SHUTDOWN, Conversation, grammar_for
from ivr.line import CONTINUE_MARGIN_MS, HangUpSignal, Heard, Interrupt, KeyPress, Line, Revise
from ivr.media.recording import CallRecorder, recording_path
from ivr.media.rtp import AudioFrame, MediaDirection
from ivr.sip import Call, CallResult, UserAgent
from ivr.tts import PromptCache
from storage.enums import Locale, Outcome

logger = logging.getLogger(__name__)

TRUNK_RESULTS = frozenset({CallResult.TIMEOUT, CallResult.TRUNK_ERROR, CallResult.AUTH_FAILED})


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RunnerConfig:
    ring_timeout_s: float = 45.0
    duty_line: str | None = None  # SIP URI of the duty staff line (REFER target)
    tts_rate: int = 130  # words per minute at Say.rate == 1.0
    recordings_dir: Path | None = None  # None: no recording
    amd: AmdConfig = field(default_factory=AmdConfig)
    detect_machines: bool = True
    max_call_s: float = 900.0
    # grammar mode (yes/no, keypad-like questions): end a short answer after this much silence when the
    # recogniser already has it (None: always the VAD's 700 ms, as free-speech questions do; see
    # ivr.line.Line and bench/calls.py --quick-end-ms). Speech starting again within the VAD's 700 ms
    # + ``continue_margin_ms`` after the answer continues it (never a barge-in, never the next answer).
    quick_end_ms: int | None = 400
    continue_margin_ms: int = CONTINUE_MARGIN_MS


class Observer(Protocol):
    """Hooks for tests, the bench and metrics (all optional to implement; times are loop times).

    ``prompt_started``: the runner is about to play the prompt (before rendering and the clock's
    next tick). ``prompt_sent``: the prompt's first RTP packet left (after it played out or was
    stopped; ``at`` is None when no frame went out). ``turn``: one answer → next prompt timing
    (:class:`TurnTiming`).
    """

    def prompt_started(self, prompt_id: str, at: float) -> None: ...


@dataclass(frozen=True, slots=True)
class TurnTiming:
    """One answer → the first packet of the prompt that followed it (loop times, seconds).

    Speech: ``voice_end_at`` is the last voiced frame, ``decided_at`` the VAD's end-of-speech decision
    (``voice_end_at`` + the trailing silence), ``recognised_at`` the recogniser's final result.
    Keypad: all three are the key press.
    """

    kind: str  # "speech" | "digit"
    voice_end_at: float
    decided_at: float
    recognised_at: float
    first_packet_at: float
    prompt_id: str
    quick: bool = False

    @property
    def from_voice_s(self) -> float:
        return self.first_packet_at - self.voice_end_at

    @property
    def from_decision_s(self) -> float:
        return self.first_packet_at - self.decided_at


@dataclass
class CallReport:
    """Everything one call attempt produced (what ``CallAttempt`` stores, and more)."""

    target: str
    started_at: datetime
    result: str = ""  # CallResult value, or "machine" / "announcement"
    sip_status: int | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    ring_seconds: float = 0.0
    talk_seconds: float = 0.0
    transcript: list[dict[str, Any]] = field(default_factory=list)
    intents: list[str] = field(default_factory=list)
    digits: str = ""
    confidences: list[float] = field(default_factory=list)
    recording: Path | None = None
    outcome: Outcome | None = None  # None: the conversation did not run (not answered, machine)
    dialog_result: dict[str, Any] = field(default_factory=dict)
    answerer: Answerer = Answerer.HUMAN
    transfer: str | None = None  # "ok" | "refused" | None
    trunk_failure: bool = False
    stopped_early: bool = False  # ended by a shutdown before the dialog finished
    turn_latencies: list[tuple[float, float]] = field(default_factory=list)  # speech: (from VAD end, from last voice)
    turns: list[TurnTiming] = field(default_factory=list)  # every answer → next prompt's first packet
    media_stats: dict[str, int] = field(default_factory=dict)  # RtpSession.stats: packets, frames lost, lateness
    prompts: list[str] = field(default_factory=list)
    dialog: Any = None  # the conversation's typed result (dialogs.result.DialogResult) for triage

    @property
    def max_send_lateness_ms(self) -> int:
        """How late (ms) the latest prompt frame of the call left its 20 ms slot."""
        return self.media_stats.get("max_send_lateness_ms", 0)

    @property
    def answered(self) -> bool:
        return self.result == CallResult.ANSWERED.value

    def to_json(self) -> dict[str, Any]:
        return {
            "sip_status": self.sip_status, "result": self.result,
            "outcome": self.outcome.value if self.outcome else None,
            "transcript": self.transcript, "intents": self.intents, "digits": self.digits,
            "recording": str(self.recording) if self.recording else None,
            "ring_seconds": self.ring_seconds, "talk_seconds": self.talk_seconds,
            "answerer": self.answerer.value, "transfer": self.transfer,
        }


@dataclass
class _SpokenAnswer:
    heard: Heard
    entry: dict[str, Any]  # its elder turn in the report's transcript
    intent_at: int  # its place in report.intents
    has_intent: bool  # report.intents[intent_at] is this answer's
    snapshot: object | None  # the conversation before it was fed; None once it can no longer be re-decided
    actions: tuple[Action, ...]  # what the conversation did with it


class _Continuations:
    """One call's latest spoken answer and the speech that continued it (``Line.on_continuation``; the Line
    watches for a continuation after grammar answers, quick-ended or not).

    The continuation is appended to the answer's transcript turn (``text`` the whole utterance,
    ``parts`` its pieces) and the whole utterance is parsed again. Until the runner has fed another
    event, the conversation is restored to its snapshot and fed the whole utterance: the same actions
    → nothing changes for the elder (the dialog now holds the whole answer); other actions → the turn
    is marked ``revised``, :attr:`revised` holds the new actions and the Line stops the prompt.
    After another event the continuation is only recorded.
    """

    def __init__(self, conv: Conversation, report: CallReport, parser: IntentParser | None,
                 turn: Callable[..., None]) -> None:
        self.conv = conv
        self.report = report
        self.parser = parser
        self.turn = turn
        self.answer: _SpokenAnswer | None = None
        self.revised: tuple[Action, ...] | None = None

    def fed(self, spoken: tuple[Heard, dict[str, Any], int, bool] | None, before: object,
            actions: tuple[Action, ...]) -> None:
        """The runner fed an event; ``spoken``: it was a spoken answer (heard, turn, intent place)."""
        if spoken is not None:
            heard, entry, at, has = spoken
            self.answer = _SpokenAnswer(heard, entry, at, has, before, actions)
        elif self.answer is not None:
            self.answer.snapshot = None

    def on_continuation(self, answer: Heard | None, cont: Heard) -> bool:
        q = self.answer
        if q is None or q.heard is not answer:  # that answer was not fed (yet): keep it as a turn of its own
            self.turn(self.report, "elder", cont.text, confidence=round(cont.confidence, 3), continuation=True)
            return False
        entry = q.entry
        first = q.heard.text
        whole = " ".join(t for t in (first, cont.text) if t)
        entry["text"] = whole
        entry["parts"] = [*entry.get("parts", [first]), cont.text]
        if not cont.text or self.parser is None:
            return False
        conf = min(q.heard.confidence, cont.confidence) if first else cont.confidence
        speech = Speech.parsed(self.parser, whole, self.conv.locale.value, conf)
        intent = speech.intent.name if speech.intent else "out_of_scope"
        entry.update(confidence=round(conf, 3), intent=intent,
                     intent_confidence=round(speech.intent.confidence, 3) if speech.intent else 0.0)
        if q.has_intent:
            self.report.intents[q.intent_at] = intent
            self.report.confidences[q.intent_at] = conf
        else:
            self.report.intents.insert(q.intent_at, intent)
            self.report.confidences.insert(q.intent_at, conf)
            q.has_intent = True
        if q.snapshot is None:
            return False
        self.conv.restore(q.snapshot)
        q.snapshot = None
        actions = self.conv.step(speech)
        if actions == q.actions:
            return False
        entry["revised"] = True
        self.revised = actions
        return True


class _RecorderSink:
    """Adapts :class:`CallRecorder` to the RTP session's tee (loop time → offset from answer)."""

    def __init__(self, recorder: CallRecorder, t0: float) -> None:
        self.recorder = recorder
        self.t0 = t0

    def on_media(self, direction: MediaDirection, pcm: bytes, at: float) -> None:
        at_ms = max(0, int((at - self.t0) * 1000))
        if direction is MediaDirection.TX:
            self.recorder.played(pcm, at_ms)
        else:
            self.recorder.heard(pcm, at_ms)


class CallRunner:
    """Places calls and runs conversations over them. One runner serves all calls of a process."""

    def __init__(self, ua: UserAgent, prompts: PromptCache, *, asr: AsrModels | None, parser: IntentParser | None,
                 config: RunnerConfig | None = None, now: Callable[[], datetime] = _utcnow,
                 asr_executor: Executor | None = None) -> None:
        """``asr_executor``: where Vosk runs (default: ``ivr.asr``'s pool; with a real-time event loop pass
        ``ivr.realtime.background_executor()`` so recogniser threads do not inherit its priority)."""
        self.asr_executor = asr_executor
        self.ua = ua
        self.prompts = prompts
        self.asr = asr
        self.parser = parser
        self.config = config or RunnerConfig()
        self.now = now

    def speech_for(self, locale: Locale) -> bool:
        return self.asr is not None and self.asr.available(locale) and self.parser is not None

    async def run(self, target: str, conversation: Conversation, *, stop: asyncio.Event | None = None,
                  observer: Observer | None = None, headers: dict[str, str] | None = None,
                  masked: str | None = None) -> CallReport:
        """Dial ``target`` (SIP URI) and run ``conversation``; never raises for call failures."""
        report = CallReport(target=masked or target, started_at=self.now())
        call = await self.ua.call(target, ring_timeout_s=self.config.ring_timeout_s, headers=headers)
        report.sip_status = call.sip_status
        report.result = (call.outcome or CallResult.TRUNK_ERROR).value
        report.trunk_failure = call.outcome in TRUNK_RESULTS
        if call.outcome is not CallResult.ANSWERED:
            early = [e.pcm for e in call.media.drain_events() if isinstance(e, AudioFrame)]
            if call.early_media and classify_early_media(early, answered=False, config=self.config.amd) \
                    is Answerer.ANNOUNCEMENT:
                report.answerer = Answerer.ANNOUNCEMENT
                report.result = Answerer.ANNOUNCEMENT.value
            report.ring_seconds = call.ring_duration_s
            report.ended_at = self.now()
            return report
        call.media.drain_events()  # early media (ring-back) is not the elder
        report.answered_at = self.now()
        try:
            await self._talk(call, conversation, report, stop, observer)
        except Exception:
            logger.exception("call runner failed", extra={"action": "call_runner_error"})
            report.stopped_early = True
        finally:
            await call.hangup()
            report.ring_seconds = call.ring_duration_s
            report.talk_seconds = call.talk_duration_s
            report.ended_at = self.now()
            report.media_stats = call.media.stats
        return report

    # ---- the conversation --------------------------------------------------------------------
    def _recognizers(self, locale: Locale) -> Callable[[Sequence[str] | None], AsyncRecognizer] | None:
        if not self.speech_for(locale):
            return None
        asr = self.asr
        assert asr is not None

        def make(grammar: Sequence[str] | None) -> AsyncRecognizer:
            return AsyncRecognizer(asr.recognizer(locale, grammar), self.asr_executor)

        return make

    async def _talk(self, call: Call, conv: Conversation, report: CallReport,
                    stop: asyncio.Event | None, observer: Observer | None) -> None:
        loop = asyncio.get_running_loop()
        recorder: CallRecorder | None = None
        if self.config.recordings_dir is not None:
            path = recording_path(self.config.recordings_dir, call.call_id or f"call{time.time_ns()}",
                                  report.started_at)
            recorder = CallRecorder(path)
            call.media.add_sink(_RecorderSink(recorder, loop.time()))
        line = Line(call.media, call.hung_up, recognizers=self._recognizers(conv.locale),
                    quick_end_ms=self.config.quick_end_ms, continue_margin_ms=self.config.continue_margin_ms)
        line.start()
        # A shutdown stops the prompt now playing (an identity prompt runs ~30 s) and any wait for an
        # answer at once, so the goodbye is said and the call recorded within the dialer's grace period.
        stopping = asyncio.ensure_future(stop.wait()) if stop is not None else None
        if stopping is not None:
            stopping.add_done_callback(lambda f: None if f.cancelled() else line.shutdown())
        try:
            if self.config.detect_machines:
                report.answerer = await self._screen(line)
                if report.answerer is Answerer.MACHINE:
                    report.result = Answerer.MACHINE.value
                    return
            line.discard_pending()
            await self._dialog(call, line, conv, report, stop, observer)
        finally:
            if stopping is not None:
                stopping.cancel()
            await line.close()
            if recorder is not None:
                report.recording = await asyncio.to_thread(recorder.close)

    async def _screen(self, line: Line) -> Answerer:
        """Wait briefly for the callee's first words; a long unbroken greeting is a machine."""
        cfg = self.config.amd
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        while not line.hung_up.is_set():
            now = loop.time()
            verdict = classify_greeting(line.utterances, line.speech_started_at, now, cfg)
            if verdict is Answerer.MACHINE:
                return verdict
            talking = line.speech_started_at is not None
            if now - t0 >= cfg.max_wait_s or (not talking and now - t0 >= cfg.listen_s):
                return Answerer.HUMAN
            await asyncio.sleep(0.05)
        return Answerer.HUMAN

    async def _dialog(self, call: Call, line: Line, conv: Conversation, report: CallReport,  # noqa: PLR0917
                      stop: asyncio.Event | None, observer: Observer | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.max_call_s
        cont = _Continuations(conv, report, self.parser, self._turn)
        line.on_continuation = cont.on_continuation
        actions: tuple[Action, ...] = conv.start()
        last_prompt: str | None = None
        pending_turn: Heard | KeyPress | None = None
        while actions:
            event: Event | None = None
            spoken: tuple[Heard, dict[str, Any], int, bool] | None = None
            for action in actions:
                if (stop is not None and stop.is_set()) or loop.time() > deadline:
                    await self._end_early(line, conv, report)
                    return
                if cont.revised is not None:
                    break
                if isinstance(action, Say):
                    last_prompt = action.prompt_id
                    if line.pending:  # answered already (a key pressed during an earlier prompt)
                        self._turn(report, "system", action.text, skipped=True)
                        continue
                    if observer is not None and hasattr(observer, "prompt_started"):
                        observer.prompt_started(action.prompt_id, loop.time())
                    why = await self._say(line, action, conv.locale, report)
                    sent = line.last_prompt_sent_at
                    if observer is not None and hasattr(observer, "prompt_sent"):
                        observer.prompt_sent(action.prompt_id, sent)
                    if pending_turn is not None and sent is not None:
                        self._timed(report, pending_turn, sent, action.prompt_id, observer)
                    pending_turn = None
                    if why is Interrupt.HANGUP:
                        event = HungUp()
                        break
                    if why is Interrupt.REVISE:
                        break
                    if why is Interrupt.SHUTDOWN:
                        continue  # the next action says goodbye
                elif isinstance(action, Listen):
                    speech = action.grammar != "dtmf" and line.speech_available
                    line.set_speech(speech, grammar_for(conv.locale, last_prompt) if speech else None)
                    got = await line.listen(action.timeout_s)
                    if got is None and stop is not None and stop.is_set():  # no answer, none waited for
                        await self._end_early(line, conv, report)
                        return
                    if isinstance(got, Revise):
                        break
                    n_intents = len(report.intents)
                    event, heard = self._event(got, conv.locale, report)
                    pending_turn = heard if heard is not None else got if isinstance(got, KeyPress) else None
                    if heard is not None:
                        spoken = (heard, report.transcript[-1], n_intents, len(report.intents) > n_intents)
                    break
                elif isinstance(action, Transfer):
                    await line.settle()  # a REFER cannot be taken back: first let a continuation re-decide
                    if cont.revised is not None:
                        break
                    await self._transfer(call, line, conv.locale, report)
                elif isinstance(action, End):
                    await line.settle()
                    if cont.revised is not None:
                        break
                    outcome, data = conv.result()
                    report.outcome, report.dialog_result = outcome, data
                    report.dialog = getattr(conv, "dialog_result", None)
                    if report.transfer == "refused":
                        report.dialog_result["transfer_failed"] = True
                    return
            if cont.revised is not None:  # a continuation changed the last answer: follow the new decision
                actions, cont.revised = cont.revised, None
                line.revised()
                pending_turn = None
                continue
            if event is None:
                event = HungUp() if line.hung_up.is_set() else Silence()
            before = conv.snapshot()
            actions = conv.step(event)
            cont.fed(spoken, before, actions)
        outcome, data = conv.result()
        report.outcome, report.dialog_result = outcome, data
        report.dialog = getattr(conv, "dialog_result", None)

    @staticmethod
    def _timed(report: CallReport, answer: Heard | KeyPress, sent: float, prompt_id: str,
               observer: Observer | None) -> None:
        if isinstance(answer, Heard):
            t = TurnTiming("speech", answer.last_voice_at, answer.ended_at, answer.recognised_at or answer.ended_at,
                           sent, prompt_id, answer.quick)
            report.turn_latencies.append((t.from_decision_s, t.from_voice_s))
        else:
            t = TurnTiming("digit", answer.at, answer.at, answer.at, sent, prompt_id)
        report.turns.append(t)
        if observer is not None and hasattr(observer, "turn"):
            observer.turn(t)

    async def _render(self, text: str, locale: Locale, rate: float, volume: float) -> bytes:
        return await self.prompts.render(text, locale, rate=round(self.config.tts_rate * rate), volume=volume)

    async def _say(self, line: Line, say: Say, locale: Locale, report: CallReport) -> Interrupt | None:
        pcm = await self._render(say.phone_text, locale, say.rate, say.volume)
        report.prompts.append(say.prompt_id)
        self._turn(report, "system", say.phone_text)
        entry = report.transcript[-1]
        why = await line.play(pcm)
        if why is not None:
            entry["stopped"] = why.value  # "digit" | "speech" (barge-in) | "revise" | "hangup"
        return why

    async def _end_early(self, line: Line, conv: Conversation, report: CallReport) -> None:
        """A shutdown or the call's time limit: goodbye, and the dialog's result so far."""
        report.stopped_early = True
        await self._say_text(line, GOODBYE_SHUTDOWN[conv.locale], conv.locale, report, "shutdown")
        report.outcome, report.dialog_result = conv.result()

    async def _say_text(self, line: Line, text: str, locale: Locale, report: CallReport, prompt_id: str) -> None:
        if line.hung_up.is_set():
            return
        pcm = await self._render(text, locale, 0.9, 1.0)
        report.prompts.append(prompt_id)
        self._turn(report, "system", text)
        await line.play(pcm, barge_in=False, revisable=False)

    def _event(self, got: object, locale: Locale, report: CallReport) -> tuple[Event, Heard | None]:
        if isinstance(got, KeyPress):
            report.digits += got.digit
            self._turn(report, "elder", f"[按键 {got.digit}]", digit=got.digit)
            return Digit(got.digit), None
        if isinstance(got, Heard):
            if not got.text or self.parser is None:
                self._turn(report, "elder", "", confidence=got.confidence)
                return Speech("", got.confidence, None), got
            speech = Speech.parsed(self.parser, got.text, locale.value, got.confidence)
            intent = speech.intent.name if speech.intent else "out_of_scope"
            report.intents.append(intent)
            report.confidences.append(got.confidence)
            self._turn(report, "elder", got.text, confidence=round(got.confidence, 3), intent=intent,
                       intent_confidence=round(speech.intent.confidence, 3) if speech.intent else 0.0)
            return speech, got
        if isinstance(got, HangUpSignal):
            return HungUp(), None
        self._turn(report, "elder", "", silence=True)
        return Silence(), None

    def _turn(self, report: CallReport, who: str, text: str, **extra: Any) -> None:
        turn: dict[str, Any] = {"who": who, "text": text, "at": self.now().isoformat()}
        turn.update(extra)
        report.transcript.append(turn)

    async def _transfer(self, call: Call, line: Line, locale: Locale, report: CallReport) -> None:
        target = self.config.duty_line
        ok = False
        if target and not line.hung_up.is_set():
            uri = target if target.startswith(("sip:", "sips:")) else self.ua.target_uri(target)
            ok = await call.refer(uri)
        report.transfer = "ok" if ok else "refused"
        self._turn(report, "system", f"[转接值班{'成功' if ok else '失败'}]")
        if not ok:
            await self._say_text(line, CALLBACK_PROMISE[locale], locale, report, "transfer.callback")
