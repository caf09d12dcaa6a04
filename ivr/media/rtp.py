"""RTP media session for one call: G.711 µ-law/A-law at 8 kHz, 20 ms frames, RFC 4733 DTMF.

Own asyncio datagram endpoint built on aiortp's parts (``RtpPacket`` parser, ``JitterBuffer``,
G.711 codecs, ``DtmfEvent``). aiortp's ``RTPSession`` fixes the payload type at construction (we
only learn it from the SDP answer) and its paced queue cannot be interrupted through its public
API, so pacing, DTMF dedupe and the recorder tee live here.

Outgoing: :meth:`RtpSession.play` takes 8 kHz mono S16LE PCM, encodes it once and hands it to the
event loop's shared 20 ms :class:`ivr.media.clock.MediaClock` (one tick for all calls, absolute
deadlines, no drift); it stops at once when the ``interrupt`` event is set. The send tee gives sinks
each frame's nominal 20 ms slot time, so a recorder lays the prompt out without gaps or overlaps.
Incoming: decoded 8 kHz PCM :class:`AudioFrame` and :class:`DtmfDigit` items, in arrival order,
from :meth:`RtpSession.frames` / :meth:`RtpSession.get`, or handed as they arrive to one consumer
(:meth:`RtpSession.set_consumer`: no task wake-up per 20 ms frame; the call's ``Line`` uses it). Digits are queued the moment their first
end packet arrives, also while a prompt plays; the two end-packet retransmissions are dropped.

Only the far end negotiated in SDP is heard: a packet must come from the ``c=`` address, and the
first valid RTP packet from that address latches its source port (symmetric RTP: a NAT'd trunk may
send from another port than its ``m=`` line); a packet from the exact SDP address and port always
takes the latch over. Everything else (another host, another port once latched, anything before
the SDP is known beyond a short buffer) is dropped unparsed and counted in ``packets_foreign``, so
whoever learns a live call's RTP port cannot inject audio or a key press. A re-INVITE that moves
the media resets the latch. Drops are logged once per call, when the session closes.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from aiortp.codecs import get_codec
from aiortp.codecs.base import Codec
from aiortp.dtmf import DTMF_EVENTS, DtmfEvent
from aiortp.jitterbuffer import JitterBuffer
from aiortp.packet import RtpPacket, is_rtcp

from ivr.media.clock import MediaClock, Playback

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
FRAME_BYTES = FRAME_SAMPLES * 2  # S16LE
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
PCMU, PCMA = 0, 8
DEFAULT_DTMF_PT = 101
_SILENCE = bytes(FRAME_BYTES)
_HEADER = struct.Struct("!BBHII")
_MAX_QUEUED_FRAMES = 3000  # 60 s of audio: an absent consumer cannot grow memory without bound
_MAX_EARLY_PACKETS = 16  # 320 ms: media that beat the SDP answer through our event loop


class MediaDirection(enum.StrEnum):
    """Which way audio flowed: ``rx`` heard from the far end, ``tx`` sent by us."""

    RX = "rx"
    TX = "tx"


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """20 ms of decoded 8 kHz mono S16LE PCM from the far end; ``ts`` is its RTP timestamp."""

    pcm: bytes
    ts: int


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One RFC 4733 key press from the far end (``digit`` in 0-9, *, #, A-D)."""

    digit: str
    duration_ms: int
    ts: int


MediaEvent = AudioFrame | DtmfDigit
MediaConsumer = Callable[[MediaEvent | None], None]  # None: the session closed


class MediaSink(Protocol):
    """Receives a copy of both directions (the recorder implements this).

    ``at`` is the event-loop time (seconds) the 20 ms frame was sent or received; lost incoming
    frames are delivered as silence so the two tracks stay aligned.
    """

    def on_media(self, direction: MediaDirection, pcm: bytes, at: float) -> None: ...


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, owner: RtpSession | None) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.owner is not None:
            self.owner._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("RTP socket error: %s", exc, extra={"action": "rtp_socket_error"})


class RtpSession:
    """One bidirectional RTP audio stream. Create with :meth:`open`, then :meth:`set_remote`."""

    def __init__(self, host: str, rtp: _Endpoint, rtcp: _Endpoint, port: int) -> None:
        self.local_host = host
        self.local_port = port
        self._rtp = rtp
        self._rtcp = rtcp
        self._loop = asyncio.get_running_loop()
        self.remote: tuple[str, int] | None = None
        self.source: tuple[str, int] | None = None  # the latched far-end source (see the module doc)
        self._early: collections.deque[tuple[bytes, tuple[str, int]]] = collections.deque(maxlen=_MAX_EARLY_PACKETS)
        self._first_foreign: tuple[str, int] | None = None
        self.payload_type = PCMU
        self.dtmf_payload_type = DEFAULT_DTMF_PT
        self._codec: Codec = get_codec(PCMU)
        self._decoders: dict[int, Codec] = {PCMU: get_codec(PCMU), PCMA: get_codec(PCMA)}
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._last_send_at: float | None = None
        self._send_lock = asyncio.Lock()
        self._jitter = JitterBuffer(capacity=16, prefetch=2, skip_audio_gaps=True)
        self._remote_ssrc: int | None = None
        self._dtmf_seen: collections.OrderedDict[tuple[int, int], None] = collections.OrderedDict()
        self._queue: collections.deque[MediaEvent] = collections.deque()
        self._getters: list[asyncio.Future[None]] = []
        self._consumer: MediaConsumer | None = None
        self._sinks: list[MediaSink] = []
        self._dtmf_since_play = False
        self._playback: Playback | None = None
        self._play_pcm = b""
        self._play_pt = PCMU
        self._play_interrupt: asyncio.Event | None = None
        self._play_stop_on_dtmf = False
        self.closed = asyncio.Event()
        self.packets_sent = 0
        self.packets_received = 0
        self.frames_lost = 0
        self.frames_dropped = 0
        self.packets_foreign = 0  # dropped: not from the far end negotiated in SDP
        self.max_send_lateness_s = 0.0  # worst delay of a prompt frame behind its 20 ms slot
        self.play_first_sent_at: float | None = None  # loop time the last play()'s first frame was sent

    @classmethod
    async def open(cls, host: str, port_range: tuple[int, int] = (20000, 60000)) -> RtpSession:
        """Bind an even RTP port and the RTCP port above it (RTCP is received and discarded)."""
        loop = asyncio.get_running_loop()
        for _ in range(64):
            port = random.randrange(port_range[0] // 2, port_range[1] // 2) * 2
            try:
                rtp_t, rtp_p = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(None), local_addr=(host, port), family=socket.AF_INET
                )
            except OSError:
                continue
            try:
                rtcp_t, rtcp_p = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(None), local_addr=(host, port + 1), family=socket.AF_INET
                )
            except OSError:
                rtp_t.close()
                continue
            session = cls(host, rtp_p, rtcp_p, port)
            rtp_p.owner = session
            del rtcp_t
            return session
        raise OSError(f"no free RTP port pair on {host} in {port_range}")

    # ---- negotiation -------------------------------------------------------------------
    def set_remote(self, addr: tuple[str, int], payload_type: int, dtmf_payload_type: int | None) -> None:
        """Point the stream at the far end's ``c=``/``m=`` address with the negotiated codec.

        From now on only packets from ``addr``'s host are heard (the source port latches on the
        first one); a new address (a re-INVITE moving the media) drops the latch.
        """
        if payload_type not in self._decoders:
            raise ValueError(f"unsupported payload type {payload_type} (only PCMU 0 / PCMA 8)")
        if addr != self.remote:
            self.source = None
        first = self.remote is None
        self.remote = addr
        self.payload_type = payload_type
        self._codec = self._decoders[payload_type]
        self.dtmf_payload_type = dtmf_payload_type if dtmf_payload_type is not None else -1
        if first and self._early:
            early = list(self._early)
            self._early.clear()
            for data, source in early:
                self._on_datagram(data, source)

    # ---- sinks -------------------------------------------------------------------------
    def add_sink(self, sink: MediaSink) -> None:
        """Tee both directions into ``sink`` (e.g. the call recorder) from now on."""
        self._sinks.append(sink)

    def remove_sink(self, sink: MediaSink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def _tee(self, direction: MediaDirection, pcm: bytes, at: float | None = None) -> None:
        if at is None:
            at = self._loop.time()
        for sink in self._sinks:
            try:
                sink.on_media(direction, pcm, at)
            except Exception:
                logger.exception("media sink failed", extra={"action": "media_sink_error"})

    # ---- receive path --------------------------------------------------------------------
    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.closed.is_set():
            return
        remote = self.remote
        if remote is None:  # the far end answered and sent media before we processed its SDP
            if len(self._early) == self._early.maxlen:
                self._foreign(self._early[0][1])
            self._early.append((data, addr))
            return
        if addr != self.source and (addr[0] != remote[0] or (self.source is not None and addr != remote)):
            self._foreign(addr)  # another host, or another port of the far end's host once latched
            return
        if len(data) < 12 or is_rtcp(data):
            return
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            return
        if addr != self.source:
            self.source = addr  # first valid packet from the SDP host, or the exact SDP address
        self.packets_received += 1
        if packet.ssrc != self._remote_ssrc:
            self._remote_ssrc = packet.ssrc
            self._jitter.reset()
        if packet.payload_type == self.dtmf_payload_type:
            frame = self._jitter.mark_non_media(packet.sequence_number)
            if frame is not None:
                self._deliver_audio(frame.data, frame.timestamp, frame.lost)
            self._on_dtmf_packet(packet)
            return
        if packet.payload_type not in self._decoders:
            return  # comfort noise or an unknown payload: not audio we can decode
        _, jf = self._jitter.add(packet)
        if jf is not None:
            self._deliver_audio(jf.data, jf.timestamp, jf.lost, packet.payload_type)

    def _foreign(self, addr: tuple[str, int]) -> None:
        self.packets_foreign += 1
        if self._first_foreign is None:
            self._first_foreign = addr

    def _deliver_audio(self, payload: bytes, ts: int, lost: int, pt: int | None = None) -> None:
        codec = self._decoders.get(pt if pt is not None else self.payload_type, self._codec)
        for i in range(min(lost, 50)):
            self.frames_lost += 1
            silent_ts = (ts - (lost - i) * FRAME_SAMPLES) & 0xFFFFFFFF
            self._push(AudioFrame(_SILENCE, silent_ts))
            if self._sinks:
                self._tee(MediaDirection.RX, _SILENCE)
        pcm = codec.decode(payload)
        self._push(AudioFrame(pcm, ts))
        if self._sinks:
            self._tee(MediaDirection.RX, pcm)

    def _on_dtmf_packet(self, packet: RtpPacket) -> None:
        try:
            event = DtmfEvent.parse(packet.payload)
        except ValueError:
            return
        if not event.end or event.event > 15:
            return
        key = (packet.ssrc, packet.timestamp)
        if key in self._dtmf_seen:
            return  # RFC 4733 §2.5.1.4: the end packet is sent three times
        self._dtmf_seen[key] = None
        while len(self._dtmf_seen) > 64:
            self._dtmf_seen.popitem(last=False)
        self._dtmf_since_play = True
        if self._playback is not None and self._play_stop_on_dtmf:
            MediaClock.for_loop(self._loop).stop(self._playback, False)
        self._push(DtmfDigit(event.digit, event.duration * 1000 // SAMPLE_RATE, packet.timestamp))

    def _push(self, item: MediaEvent) -> None:
        if self._consumer is not None:
            self._consume(item)
            return
        if len(self._queue) >= _MAX_QUEUED_FRAMES:
            for i, old in enumerate(self._queue):
                if isinstance(old, AudioFrame):
                    del self._queue[i]
                    self.frames_dropped += 1
                    break
        self._queue.append(item)
        if self._getters:
            self._wake_getters()

    def set_consumer(self, consumer: MediaConsumer | None) -> None:
        """Hand every received item to ``consumer`` as it arrives (in the datagram callback), instead of
        queueing it for :meth:`get`: first whatever is queued, in order; ``None`` once the session closes
        (at once if it is closed already). A consumer that raises is logged and detached (later items
        queue up again). ``None`` detaches: items queue for :meth:`get` again.

        Why: a reader task woken per 20 ms frame costs a future, a task step and a queue round trip for
        every frame of every call on the media loop.
        """
        self._consumer = consumer
        if consumer is None:
            return
        while self._queue and self._consumer is consumer:
            self._consume(self._queue.popleft())
        if self.closed.is_set() and self._consumer is consumer:
            self._consume(None)

    def _consume(self, item: MediaEvent | None) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            consumer(item)
        except Exception:
            logger.exception("media consumer failed", extra={"action": "media_consumer_error"})
            if self._consumer is consumer:
                self._consumer = None

    async def get(self, wait_s: float | None = None) -> MediaEvent | None:
        """Next received frame or digit; ``None`` on timeout or once the session is closed."""
        while not self._queue:
            if self.closed.is_set():
                return None
            # one bare future per wait (no tasks): this runs for every 20 ms frame of every call
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._getters.append(waiter)
            timer = None if wait_s is None else self._loop.call_later(wait_s, _wake, waiter)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                if waiter in self._getters:
                    self._getters.remove(waiter)
            if not self._queue and timer is not None and timer.when() <= self._loop.time():
                return None
        return self._queue.popleft()

    def _wake_getters(self) -> None:
        getters, self._getters = self._getters, []
        for waiter in getters:
            _wake(waiter)

    async def frames(self) -> AsyncIterator[MediaEvent]:
        """Iterate received frames and digits until the session closes."""
        while True:
            item = await self.get()
            if item is None:
                return
            yield item

    def drain_events(self) -> list[MediaEvent]:
        """Everything queued so far, without waiting."""
        items = list(self._queue)
        self._queue.clear()
        return items

    # ---- send path -------------------------------------------------------------------------
    def _send_packet(self, pt: int, payload: bytes, ts: int, marker: bool) -> None:
        transport = self._rtp.transport
        if self.remote is None or transport is None or self.closed.is_set():
            return
        header = _HEADER.pack(0x80, (0x80 if marker else 0) | pt, self._seq, ts, self._ssrc)
        self._seq = (self._seq + 1) & 0xFFFF
        transport.sendto(header + payload, self.remote)
        self.packets_sent += 1

    def _start_talkspurt(self, now: float) -> None:
        """Advance the RTP clock over the idle gap so the far end sees silence, not a burst."""
        if self._last_send_at is not None:
            idle = max(0, round((now - self._last_send_at) / FRAME_S))
            self._ts = (self._ts + idle * FRAME_SAMPLES) & 0xFFFFFFFF

    async def play(self, pcm: bytes, interrupt: asyncio.Event | None = None, *,
                   stop_on_dtmf: bool = False) -> bool:
        """Send ``pcm`` (8 kHz mono S16LE) paced at 20 ms; False when interrupted or closed early.

        The prompt is G.711-encoded once and handed to the loop's shared :class:`MediaClock`, which
        sends one frame per 20 ms tick for every playing session. It starts on the clock's next tick
        (0-20 ms from now). ``interrupt`` (barge-in, a digit seen by the caller) stops it at once and
        the clock also checks it before every frame; ``stop_on_dtmf`` stops at the first digit received
        after the call. Received frames keep flowing to the queue while this plays.
        """
        if len(pcm) % 2:
            pcm = pcm[:-1]
        self._dtmf_since_play = False
        self.play_first_sent_at = None
        async with self._send_lock:
            if self.closed.is_set() or (interrupt is not None and interrupt.is_set()):
                return False
            if stop_on_dtmf and self._dtmf_since_play:
                return False
            if not pcm:
                return True
            if len(pcm) % FRAME_BYTES:
                pcm += bytes(FRAME_BYTES - len(pcm) % FRAME_BYTES)
            clock = MediaClock.for_loop(self._loop)
            playback = Playback(self, self._codec.encode(pcm), FRAME_SAMPLES, self._loop.create_future())
            self._play_pcm = pcm
            self._play_pt = self.payload_type
            self._play_interrupt = interrupt
            self._play_stop_on_dtmf = stop_on_dtmf
            self._playback = playback
            clock.start(playback)
            waiter: asyncio.Task[bool] | None = None
            if interrupt is not None:  # stop at once, not only at the next tick
                waiter = self._loop.create_task(interrupt.wait())
                waiter.add_done_callback(lambda f: None if f.cancelled() else clock.stop(playback, False))
            try:
                played = await playback.done
            finally:
                if waiter is not None:
                    waiter.cancel()
                clock.stop(playback, False)
                self._playback = None
                self._play_interrupt = None
                self._play_pcm = b""
            return played and not self.closed.is_set()

    # called by the MediaClock on each tick, for the playing prompt
    def _clock_send(self, payload: bytes, first: bool, slot: float, index: int) -> bool:
        if self.closed.is_set() or (self._play_interrupt is not None and self._play_interrupt.is_set()):
            return False
        if self._play_stop_on_dtmf and self._dtmf_since_play:
            return False
        if first:
            self._start_talkspurt(slot)
        if self.payload_type != self._play_pt:  # a re-INVITE switched µ-law/A-law mid-prompt
            payload = self._codec.encode(self._play_pcm[index * FRAME_BYTES:(index + 1) * FRAME_BYTES])
        self._send_packet(self.payload_type, payload, self._ts, first)
        if first:  # turn timing wants the real send time (not the slot): no sink per prompt for it
            self.play_first_sent_at = self._loop.time()
        if self._sinks:
            self._tee(MediaDirection.TX, self._play_pcm[index * FRAME_BYTES:(index + 1) * FRAME_BYTES], slot)
        self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
        self._last_send_at = slot + FRAME_S
        return True

    def _clock_late(self, lateness_s: float) -> None:
        self.max_send_lateness_s = max(self.max_send_lateness_s, lateness_s)

    async def send_dtmf(self, digit: str, duration_ms: int = 160) -> None:
        """Send one RFC 4733 digit: an update every 20 ms, then three end packets."""
        code = DTMF_EVENTS.get(digit.upper())
        if code is None:
            raise ValueError(f"invalid DTMF digit {digit!r}")
        if self.dtmf_payload_type < 0:
            raise RuntimeError("the far end did not accept telephone-event")
        async with self._send_lock:
            self._start_talkspurt(self._loop.time())
            ts = self._ts
            total = max(FRAME_SAMPLES, duration_ms * SAMPLE_RATE // 1000)
            dur = FRAME_SAMPLES
            first = True
            while dur < total:
                self._send_packet(self.dtmf_payload_type, DtmfEvent(code, False, 10, dur).serialize(), ts, first)
                first = False
                dur += FRAME_SAMPLES
                await asyncio.sleep(FRAME_S)
            for _ in range(3):
                self._send_packet(self.dtmf_payload_type, DtmfEvent(code, True, 10, total).serialize(), ts, first)
                first = False
            self._ts = (self._ts + total) & 0xFFFFFFFF
            self._last_send_at = self._loop.time()

    # ---- lifecycle -------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop sending and receiving; pending :meth:`get` calls return ``None``."""
        if self.closed.is_set():
            return
        self.closed.set()
        self._wake_getters()
        if self._consumer is not None:
            self._consume(None)
        self.packets_foreign += len(self._early)  # never negotiated: nobody to hear them from
        if self._first_foreign is None and self._early:
            self._first_foreign = self._early[0][1]
        self._early.clear()
        if self.packets_foreign:
            first = self._first_foreign or ("?", 0)
            logger.warning("RTP port %s dropped %d packets not from the negotiated far end %s (first from %s:%s)",
                           self.local_port, self.packets_foreign,
                           f"{self.remote[0]}:{self.remote[1]}" if self.remote else "(none negotiated)",
                           first[0], first[1], extra={"action": "rtp_foreign_dropped"})
        if self._playback is not None:
            MediaClock.for_loop(self._loop).stop(self._playback, False)
        for ep in (self._rtp, self._rtcp):
            if ep.transport is not None:
                ep.transport.close()

    @property
    def stats(self) -> dict[str, int]:
        return {"packets_sent": self.packets_sent, "packets_received": self.packets_received,
                "frames_lost": self.frames_lost, "frames_dropped": self.frames_dropped,
                "packets_foreign": self.packets_foreign,
                "max_send_lateness_ms": round(self.max_send_lateness_s * 1000)}

