"""The elder's end of a live call, as the call runner sees it: prompts out; key presses and speech in.

The line consumes everything the RTP session receives, as it arrives (``RtpSession.set_consumer``:
no task woken per 20 ms frame), and turns it into typed inputs:
RFC 4733 digits and in-band (Goertzel) digits, merged so one key press is one :class:`KeyPress`;
speech found by the VAD and recognised by Vosk (fed only while the VAD says the elder speaks) as
:class:`Heard`. While a prompt plays, a key press or the elder starting to talk (barge-in) stops it
within one 20 ms frame. Inputs that arrive while nobody listens are kept, in order, for the next
:meth:`Line.listen`: a digit pressed during a prompt is the answer to that prompt's question.

Quick end and its continuation guard: in grammar mode a short answer whose recogniser hypothesis is
complete and stable ends after ``quick_end_ms`` of silence instead of the VAD's full trailing silence.
An elder who only paused ("네 … 좋아요") then starts again within the *continuation window* (the full
trailing silence plus ``continue_margin_ms`` after the answer's last voice; opened after every grammar
answer while quick end is on, so it does not depend on how fast Vosk was): that speech continues the
answer. It does not barge in on the next prompt and is not queued as an answer; it is recognised with
the answer's grammar and handed to ``on_continuation`` (the call runner), which appends it to the
answer and may re-decide; when it returns True the prompt playing stops and ``play`` / ``listen``
report :attr:`Interrupt.REVISE` / :class:`Revise` until :meth:`Line.revised` is called. Key presses
are never held back.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ivr.asr import AsrResult, AsyncRecognizer
from ivr.media.dtmf import DigitMerger, DtmfDetector
from ivr.media.g711 import as_int16, frame_energy
from ivr.media.rtp import AudioFrame, DtmfDigit, MediaEvent, RtpSession
from ivr.media.vad import BargeInDetector, EndReason, SpeechDetector, SpeechEnd, SpeechStart, VadConfig

logger = logging.getLogger(__name__)

PREROLL_FRAMES = 15  # 300 ms of audio before the VAD's start decision goes to the recogniser too
ASR_CHUNK_FRAMES = 10  # feed Vosk every 200 ms while the elder speaks
QUICK_END_MAX_SPEECH_MS = 2500  # an early end only for short answers ("네", "아니요", "是的")
QUICK_PROBE_FROM_MS = 200
QUICK_PROBE_EVERY_MS = 60
CONTINUE_MARGIN_MS = 300  # the continuation window: the VAD's trailing silence + this, after the last voice
UNKNOWN = "[unk]"

RecognizerFactory = Callable[[Sequence[str] | None], AsyncRecognizer]


@dataclass(frozen=True, slots=True)
class KeyPress:
    digit: str
    source: str  # "rfc4733" | "inband"
    at: float  # event-loop time


@dataclass(frozen=True, slots=True)
class Heard:
    """One utterance: recognised text (may be empty), Vosk confidence, and its timing."""

    text: str
    confidence: float
    speech_ms: int
    ended_at: float  # loop time the VAD declared the end of speech
    last_voice_at: float  # loop time of the last voiced frame (the trailing silence earlier)
    recognised_at: float = 0.0  # loop time the recogniser's final result was ready
    quick: bool = False  # ended early: grammar answer complete after ``quick_end_ms`` of silence


class HangUpSignal:
    """The far end hung up (or the media closed)."""


class Revise:
    """``listen``: a continuation changed an answer already acted on; the runner re-decides it."""


ContinuationHook = Callable[[Heard | None, Heard], bool]  # (the answer continued, the continuation)


LineInput = KeyPress | Heard


class Interrupt(enum.StrEnum):
    DIGIT = "digit"
    SPEECH = "speech"
    HANGUP = "hangup"
    REVISE = "revise"  # a continuation changed the previous answer (see ``Line.on_continuation``)
    SHUTDOWN = "shutdown"  # the service is stopping: the runner says goodbye (see ``Line.shutdown``)


class Line:
    """Reads the media of one answered call. ``start()`` then ``play()`` / ``listen()``.

    ``quick_end_ms``: in grammar mode, end an utterance after this much trailing silence (instead of
    the VAD's ``end_silence_ms``) when it is short and the recogniser's hypothesis is a complete
    grammar answer that stayed the same over the silence. None: always wait the full silence.
    ``on_continuation``: called with the answer (None if it was not recognised) and the recognised speech
    that continued it (see the module docstring); without it such speech is queued like any utterance.
    """

    def __init__(self, media: RtpSession, hung_up: asyncio.Event, *, recognizers: RecognizerFactory | None = None,
                 vad: VadConfig | None = None, barge_in: bool = True, quick_end_ms: int | None = None,
                 continue_margin_ms: int = CONTINUE_MARGIN_MS, on_continuation: ContinuationHook | None = None,
                 ) -> None:
        self.media = media
        self.hung_up = hung_up
        self._recognizers = recognizers
        self.barge_in_enabled = barge_in
        self._loop = asyncio.get_running_loop()
        self._inband = DtmfDetector()
        self._merger = DigitMerger()
        self._vad = SpeechDetector(vad)
        self._barge = BargeInDetector()
        self._inputs: collections.deque[LineInput] = collections.deque()
        self._arrived = asyncio.Event()
        self._interrupt = asyncio.Event()
        self.interrupted_by: Interrupt | None = None
        self._playing = False
        self._listening_speech = recognizers is not None
        self._grammar: Sequence[str] | None = None
        self._preroll: collections.deque[bytes] = collections.deque(maxlen=PREROLL_FRAMES)
        self._rec: AsyncRecognizer | None = None
        self._rec_grammar: Sequence[str] | None = None
        self._chunk: list[bytes] = []
        self._rec_active = False
        self._asr_tasks: set[asyncio.Future[object]] = set()
        self._t0 = self._loop.time()
        self._reading = False  # ``start``: the media hands us what it receives
        self.speech_started_at: float | None = None  # loop time of the current utterance's start
        self.utterances: list[tuple[float, float]] = []  # (start, end) loop times: for answering-machine checks
        self.asr_seconds = 0.0
        self.quick_end_ms = quick_end_ms
        self.last_prompt_sent_at: float | None = None  # loop time the last prompt's first frame left
        # the recogniser's running hypothesis during an utterance: (text, trailing silence ms when fed)
        self._hyp: list[tuple[str, int]] = []
        self._utt_frames = 0
        # the continuation guard (see the module docstring)
        self.on_continuation = on_continuation
        self.continue_ms = self._vad.config.end_silence_ms + continue_margin_ms
        self._guard_voice_ms: int | None = None  # VAD time of the last grammar answer's last voice
        self._guard_grammar: Sequence[str] | None = None
        self._guarded: Heard | None = None  # the answer the window belongs to, once recognised
        self._continuing = False  # the utterance in progress continues a grammar answer
        self._continuations_pending = 0  # continuations ended, not yet recognised
        self._revise = False  # on_continuation asked to re-decide; until ``revised()``
        self._shutting_down = False  # ``shutdown()``: stop the prompt, listen returns no answer at once
        self._prompt_revisable = False
        self._guard_off = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Take the media's received frames and digits from now on (and what queued before), as they
        arrive: in the RTP datagram callback, no task woken per 20 ms frame."""
        self._reading = True
        self.media.set_consumer(self._on_media)

    async def close(self) -> None:
        if self._reading:
            self._reading = False
            self.media.set_consumer(None)
        for t in list(self._asr_tasks):
            t.cancel()

    def discard_pending(self) -> None:
        """Forget inputs nobody asked for yet (e.g. "喂？" heard before the greeting)."""
        self._inputs.clear()
        self._vad.reset()
        self._guard_voice_ms = None
        self._continuing = False

    def set_speech(self, enabled: bool, grammar: Sequence[str] | None = None) -> None:
        """Whether speech is recognised from now on, and with which grammar (None: free mode)."""
        self._listening_speech = enabled and self._recognizers is not None
        self._grammar = grammar

    @property
    def speech_available(self) -> bool:
        return self._recognizers is not None

    @property
    def pending_digit(self) -> bool:
        return any(isinstance(i, KeyPress) for i in self._inputs)

    @property
    def pending(self) -> bool:
        return bool(self._inputs)

    # ---- the continuation guard --------------------------------------------------------------
    @property
    def guarding(self) -> bool:
        """A grammar answer may still be continued (window open, continuation spoken or being recognised)."""
        return self._guard_voice_ms is not None or self._continuing or self._continuations_pending > 0

    def revised(self) -> None:
        """The runner has re-decided the answer (after ``Interrupt.REVISE`` / :class:`Revise`)."""
        self._revise = False

    async def settle(self, limit_s: float = 20.0) -> None:
        """Wait until a grammar answer can no longer be continued (before acting irrevocably on it:
        a transfer, the end of the call). Returns at once in the usual case (window long closed)."""
        end = self._loop.time() + limit_s
        while self.guarding and not self.hung_up.is_set() and not self.media.closed.is_set():
            left = end - self._loop.time()
            if left <= 0:
                return
            self._guard_off.clear()
            waits = [asyncio.ensure_future(e.wait()) for e in (self._guard_off, self.hung_up, self.media.closed)]
            try:
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    def _unguard(self) -> None:
        """The guard is over: barge-in watches the line afresh (not the continuation's tail)."""
        if not self.guarding:
            self._barge.reset()
            self._guard_off.set()

    # ---- prompts -----------------------------------------------------------------------------
    async def play(self, pcm: bytes, *, barge_in: bool | None = None, revisable: bool = True) -> Interrupt | None:
        """Play a prompt; None when it played out, else what stopped it.

        ``revisable``: a continuation that changes the previous answer stops it (``Interrupt.REVISE``);
        False for messages that must play (shutdown goodbye, call-back promise)."""
        self.last_prompt_sent_at = None
        if self.hung_up.is_set() or self.media.closed.is_set():
            return Interrupt.HANGUP
        if revisable and self._revise:
            self.interrupted_by = Interrupt.REVISE
            return self.interrupted_by
        if self._inputs:
            self.interrupted_by = Interrupt.DIGIT if self.pending_digit else Interrupt.SPEECH
            return self.interrupted_by
        self._interrupt.clear()
        self.interrupted_by = None
        self._barge.reset()
        self._playing = barge_in if barge_in is not None else self.barge_in_enabled
        self._prompt_revisable = revisable
        watch = asyncio.ensure_future(self.hung_up.wait())
        watch.add_done_callback(lambda _f: self._stop(Interrupt.HANGUP))
        try:
            done = await self.media.play(pcm, self._interrupt)
        finally:
            self._playing = False
            self._prompt_revisable = False
            watch.cancel()
            self.last_prompt_sent_at = self.media.play_first_sent_at
        if done:
            return None
        if self.interrupted_by is None:
            self.interrupted_by = Interrupt.HANGUP
        return self.interrupted_by

    def shutdown(self) -> None:
        """The service is stopping: stop the prompt now playing and end any wait for an answer (an answer
        already given is still returned). Prompts played afterwards (the goodbye) play out."""
        self._shutting_down = True
        self._stop(Interrupt.SHUTDOWN)
        self._arrived.set()

    def _stop(self, why: Interrupt) -> None:
        if self.interrupted_by is None:
            self.interrupted_by = why
        self._interrupt.set()

    # ---- answers -----------------------------------------------------------------------------
    async def listen(self, timeout_s: float) -> LineInput | HangUpSignal | Revise | None:
        """The next key press or utterance; None after ``timeout_s`` of nothing; :class:`Revise` when a
        continuation changed the previous answer (before any input queued after it).

        An utterance already under way when the timeout passes is waited for (elders are slow), and so is
        a possible continuation of the previous answer.
        """
        deadline = self._loop.time() + timeout_s
        while True:
            if self._revise:
                return Revise()
            if self._inputs:
                return self._inputs.popleft()
            if self.hung_up.is_set() or self.media.closed.is_set():
                return HangUpSignal()
            if self._shutting_down:
                return None
            left = deadline - self._loop.time()
            if left <= 0:
                if self._vad.in_speech or self._asr_tasks or self.guarding:
                    left = 0.2  # speech in progress: wait for its end
                    deadline = self._loop.time() + left
                else:
                    return None
            self._arrived.clear()
            hang = asyncio.ensure_future(self.hung_up.wait())
            arrived = asyncio.ensure_future(self._arrived.wait())
            try:
                await asyncio.wait({hang, arrived}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                hang.cancel()
                arrived.cancel()

    def _push(self, item: LineInput) -> None:
        self._inputs.append(item)
        self._arrived.set()

    # ---- the reader --------------------------------------------------------------------------
    def _on_media(self, item: MediaEvent | None) -> None:
        if item is None:  # the media closed
            self._reading = False
            self._vad_flush()
            self._arrived.set()
        elif isinstance(item, DtmfDigit):
            self._digit(item.digit, "rfc4733")
        elif isinstance(item, AudioFrame):
            self._audio(item.pcm)

    def _now_ms(self) -> int:
        return int((self._loop.time() - self._t0) * 1000)

    def _digit(self, digit: str, source: str) -> None:
        if not self._merger.accept(digit, source, self._now_ms()):
            return
        self._push(KeyPress(digit, source, self._loop.time()))
        self._stop(Interrupt.DIGIT)  # a key press stops any prompt, barge-in or not

    def _audio(self, pcm: bytes) -> None:
        samples = as_int16(pcm)
        energy = frame_energy(samples)  # once per frame for all three detectors (numpy calls dominate here)
        for d in self._inband.feed(samples, energy):
            self._digit(d.digit, "inband")
        # barge-in only when we can understand what is said, and never by an answer's continuation
        if self._playing and self._listening_speech and not self.guarding and self._barge.feed(pcm, energy):
            self._stop(Interrupt.SPEECH)
        was_speaking = self._vad.in_speech
        if not was_speaking:
            self._preroll.append(pcm)
        for ev in self._vad.feed(pcm, energy):
            if isinstance(ev, SpeechStart):
                self._speech_start(ev)
            elif isinstance(ev, SpeechEnd):
                self._speech_end(ev, self._vad.config.end_silence_ms if ev.reason is EndReason.SILENCE else 0)
        if (self._guard_voice_ms is not None and not self._vad.in_speech
                and self._vad.now_ms - self._guard_voice_ms > self.continue_ms):
            self._guard_voice_ms = None  # nobody continued the answer
            self._unguard()
        if was_speaking and self._vad.in_speech and self._rec_active:
            self._utt_frames += 1
            self._chunk.append(pcm)
            if len(self._chunk) >= ASR_CHUNK_FRAMES or self._probe():
                self._feed_chunk()
            if self.quick_end_ms is not None and not self._continuing and self._answer_complete():
                quiet = self._vad.trailing_silence_ms
                early = self._vad.end_now()
                if early is not None:
                    self._speech_end(early, quiet, quick=True)

    def _probe(self) -> bool:
        """Quick end: feed the recogniser every 60 ms once the answer has been quiet for 200 ms (whatever
        the 200 ms chunking), so hypotheses fed in that silence are there to compare when ``quick_end_ms``
        is reached. (After its first utterance Vosk's partial result can lag: "" until ~300 ms.)"""
        quiet = self._vad.trailing_silence_ms
        return (self.quick_end_ms is not None and self._rec_grammar is not None and not self._continuing
                and quiet >= QUICK_PROBE_FROM_MS and (quiet - QUICK_PROBE_FROM_MS) % QUICK_PROBE_EVERY_MS == 0)

    def _answer_complete(self) -> bool:
        """Grammar mode, a short utterance, ``quick_end_ms`` of silence, and the recogniser's hypothesis
        non-empty, without unknown words, and unchanged between the last two chunks fed — the later
        one fed after at least 200 ms of that silence (see :meth:`_probe`)."""
        assert self.quick_end_ms is not None
        quiet = self._vad.trailing_silence_ms
        if quiet < self.quick_end_ms or self._rec_grammar is None or len(self._hyp) < 2:
            return False
        if (self._utt_frames * 20) - quiet > QUICK_END_MAX_SPEECH_MS:
            return False
        (prev, _), (text, fed_quiet) = self._hyp[-2], self._hyp[-1]
        return bool(text) and text == prev and fed_quiet >= 200 and UNKNOWN not in text

    def _speech_start(self, ev: SpeechStart) -> None:
        self.speech_started_at = self._loop.time()
        quick_voice, self._guard_voice_ms = self._guard_voice_ms, None
        self._continuing = quick_voice is not None and ev.at_ms - quick_voice <= self.continue_ms
        if not self._continuing and quick_voice is not None:
            self._unguard()
        if self._recognizers is None or not (self._listening_speech or self._continuing):
            self._rec_active = False
            return
        self._rec_active = True
        grammar = self._guard_grammar if self._continuing else self._grammar  # the answer's own grammar
        if self._rec is None or self._rec_grammar != grammar:
            self._rec = self._recognizers(grammar)
            self._rec_grammar = grammar
        self._chunk = list(self._preroll)
        self._preroll.clear()
        self._hyp = []
        self._utt_frames = 0
        self._feed_chunk()

    def _feed_chunk(self) -> None:
        if not self._chunk or self._rec is None:
            return
        data = b"".join(self._chunk)
        self._chunk = []
        self._track(asyncio.ensure_future(self._feed(self._rec, data, self._vad.trailing_silence_ms)))

    async def _feed(self, rec: AsyncRecognizer, data: bytes, quiet_ms: int) -> None:
        res = await rec.feed(data)
        if rec is self._rec and self._rec_active:
            self._hyp.append((res.text, quiet_ms))

    def _track(self, fut: asyncio.Future[object]) -> None:
        self._asr_tasks.add(fut)
        fut.add_done_callback(self._asr_tasks.discard)

    def _speech_end(self, ev: SpeechEnd, quiet_ms: int, *, quick: bool = False) -> None:
        now = self._loop.time()
        start = self.speech_started_at or now
        self.utterances.append((start, now))
        self.speech_started_at = None
        continuing, self._continuing = self._continuing, False
        if not self._rec_active:
            if continuing:
                self._unguard()
            return
        self._rec_active = False
        self._feed_chunk()
        rec = self._rec
        if rec is None:
            return
        last_voice = now - quiet_ms / 1000
        if continuing:
            self._continuations_pending += 1
        # a grammar answer (quick end or not) may be continued: open the window from its last voice
        guard = (not continuing and self.quick_end_ms is not None and self._rec_grammar is not None
                 and (quick or ev.reason is EndReason.SILENCE))
        if guard:
            self._guard_voice_ms = ev.at_ms
            self._guard_grammar = self._rec_grammar
        self._track(asyncio.ensure_future(
            self._finish(rec, ev.speech_ms, now, last_voice, quick, continuation=continuing, guard=guard)))

    async def _finish(self, rec: AsyncRecognizer, speech_ms: int, ended_at: float, last_voice: float,
                      quick: bool, *, continuation: bool = False, guard: bool = False) -> None:
        t = self._loop.time()
        res: AsrResult | None = None
        try:
            res = await rec.finish()
        except Exception:
            logger.exception("speech recognition failed", extra={"action": "asr_error"})
        finally:
            if continuation:
                self._continuations_pending -= 1
        if res is None:
            self._unguard()
            return
        done = self._loop.time()
        self.asr_seconds += done - t
        heard = Heard(res.text, res.confidence, speech_ms, ended_at, last_voice, done, quick)
        if guard:
            self._guarded = heard
        if not continuation or self.on_continuation is None:
            self._push(heard)
            return
        try:
            revise = self.on_continuation(self._guarded, heard)
        except Exception:
            logger.exception("continuation handling failed", extra={"action": "continuation_error"})
            revise = False
        finally:
            self._unguard()
        if revise:
            self._revise = True
            if self._prompt_revisable:
                self._stop(Interrupt.REVISE)
            self._arrived.set()

    def _vad_flush(self) -> None:
        ev = self._vad.flush()
        if ev is not None:
            self._speech_end(ev, 0)
