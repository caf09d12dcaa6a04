"""Our UA against a real baresip phone on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ivr.media.rtp import AudioFrame, DtmfDigit
from ivr.sip import CallResult, CallState, TransportKind, UserAgent
from tests.integration.sip.peers import best_correlation, free_port, read_wav, speech_wav

pytestmark = pytest.mark.sip


async def _wait_closed(phone, timeout_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", timeout_s)


async def test_answer_play_and_bye_from_us(baresip, sip_ua: UserAgent, prompt_pcm: bytes) -> None:
    phone = baresip(answer="auto")
    call = await sip_ua.call(phone.uri, ring_timeout_s=10)
    assert call.outcome is CallResult.ANSWERED and call.sip_status == 200
    assert call.state is CallState.ANSWERED
    assert call.dialog is not None and call.dialog.remote_target.endswith(f":{phone.sip_port}")
    completed = await call.media.play(prompt_pcm)
    assert completed
    await asyncio.to_thread(phone.wait_event, "CALL_RTPESTAB", 5)
    heard_from_phone = [e for e in call.media.drain_events() if isinstance(e, AudioFrame)]
    assert len(heard_from_phone) > 50  # ~3 s of its microphone came back to us
    await call.hangup()
    assert call.state is CallState.ENDED and call.ended_by == "local"
    await _wait_closed(phone)
    await asyncio.sleep(0.3)  # sndfile closes its WAV when the call is torn down
    heard = read_wav(phone.heard()[-1])
    assert best_correlation(prompt_pcm, heard) > 0.95
    assert call.talk_duration_s >= len(prompt_pcm) / 16000 - 0.1


async def test_bye_from_them_mid_prompt(baresip, sip_ua: UserAgent, prompt_pcm: bytes, tmp_path: Path) -> None:
    short = speech_wav("Hello", tmp_path / "short.wav", pad_to_s=1.0)  # baresip hangs up when it ends
    phone = baresip(answer="auto", source_wav=short)
    call = await sip_ua.call(phone.uri, ring_timeout_s=10)
    assert call.outcome is CallResult.ANSWERED
    long_prompt = prompt_pcm * 4
    started = time.monotonic()
    completed = await call.media.play(long_prompt)
    assert not completed  # stopped by the far end's BYE, not played out
    assert time.monotonic() - started < len(long_prompt) / 16000 - 2
    assert call.hung_up.is_set() and call.ended_by == "remote"
    assert call.state is CallState.ENDED
    await call.hangup()  # a no-op once ended


async def test_dtmf_received_while_playing(baresip, sip_ua: UserAgent, prompt_pcm: bytes) -> None:
    phone = baresip(answer="auto")
    call = await sip_ua.call(phone.uri, ring_timeout_s=10)
    assert call.outcome is CallResult.ANSWERED
    long_prompt = prompt_pcm * 4
    play = asyncio.create_task(call.media.play(long_prompt, stop_on_dtmf=True))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(phone.send_dtmf, "2")
    completed = await asyncio.wait_for(play, 5)
    assert completed is False  # the key press stopped the prompt
    await asyncio.to_thread(phone.send_dtmf, "3#")
    digits: list[str] = []
    deadline = time.monotonic() + 5
    while len(digits) < 3 and time.monotonic() < deadline:
        item = await call.media.get(wait_s=0.5)
        if isinstance(item, DtmfDigit):
            digits.append(item.digit)
    await asyncio.sleep(0.5)
    digits += [e.digit for e in call.media.drain_events() if isinstance(e, DtmfDigit)]
    assert digits == ["2", "3", "#"]  # each once: the three end packets are deduplicated
    await call.hangup()


async def test_interrupt_event_stops_prompt_within_a_frame(baresip, sip_ua: UserAgent, prompt_pcm: bytes) -> None:
    phone = baresip(answer="auto")
    call = await sip_ua.call(phone.uri, ring_timeout_s=10)
    stop = asyncio.Event()
    play = asyncio.create_task(call.media.play(prompt_pcm * 3, stop))
    await asyncio.sleep(0.5)
    stop.set()
    set_at = time.monotonic()
    assert await play is False
    assert time.monotonic() - set_at < 0.1
    await call.hangup()


async def test_manual_answer_never_picked_is_cancelled(baresip, sip_ua: UserAgent) -> None:
    phone = baresip(answer="manual")
    call = await sip_ua.call(phone.uri, ring_timeout_s=3)
    assert call.outcome is CallResult.NO_ANSWER
    assert call.sip_status == 487
    assert call.ringing_at is not None and 2.5 < call.ring_duration_s < 6
    await _wait_closed(phone)
    assert "CALL_INCOMING" in phone.event_types()
    assert call.state is CallState.ENDED


async def test_busy_maps_to_486(baresip, sip_ua: UserAgent) -> None:
    phone = baresip(reject_incoming=True)
    call = await sip_ua.call(phone.uri, ring_timeout_s=10)
    assert call.sip_status == 486
    assert call.outcome is CallResult.BUSY


async def test_nothing_listening_times_out_within_10s(sip_ua: UserAgent) -> None:
    dead = f"sip:nobody@127.0.0.1:{free_port()}"
    started = time.monotonic()
    call = await sip_ua.call(dead, ring_timeout_s=45)
    elapsed = time.monotonic() - started
    assert call.outcome is CallResult.TIMEOUT and call.sip_status is None
    assert elapsed <= 10


async def test_options_both_ways(baresip, sip_ua: UserAgent) -> None:
    phone = baresip(answer="auto")
    assert await sip_ua.options(phone.uri) == 200
    reply = await asyncio.to_thread(phone.command, "options", f"sip:ivr@127.0.0.1:{sip_ua.port}")
    assert reply.get("ok") is True
    for _ in range(50):  # baresip prints the OPTIONS reply to its log
        if "200 OK" in phone.log():
            break
        await asyncio.sleep(0.1)
    assert "200 OK" in phone.log()


async def test_tcp_transport(baresip, ua_factory, prompt_pcm: bytes) -> None:
    phone = baresip(answer="auto", transport="tcp")
    ua = await ua_factory(transport=TransportKind.TCP)
    call = await ua.call(phone.uri, ring_timeout_s=10)
    assert call.outcome is CallResult.ANSWERED, (call.sip_status, phone.log()[-1500:])
    assert await call.media.play(prompt_pcm[: 16000 * 2])
    await call.hangup()
    await _wait_closed(phone)
    assert "tcp" in phone.log().lower()


# A call kept over 60 s (ACK correctness): test_kamailio.py's
# test_calls_stay_up_direct_past_60s_and_through_the_proxy_past_32s (both long holds at once).


async def test_refer_transfers_to_duty_line(baresip, sip_ua: UserAgent) -> None:
    elder = baresip(answer="auto")
    duty = baresip(answer="auto", user="duty")
    call = await sip_ua.call(elder.uri, ring_timeout_s=10)
    assert call.outcome is CallResult.ANSWERED
    transferred = await call.refer(duty.uri, timeout_s=10)
    assert transferred is True, elder.log()[-1500:]
    await asyncio.to_thread(duty.wait_event, "CALL_ESTABLISHED", 5)
    await call.hangup()


async def test_refer_to_dead_line_is_false(baresip, sip_ua: UserAgent) -> None:
    elder = baresip(answer="auto")
    call = await sip_ua.call(elder.uri, ring_timeout_s=10)
    assert await call.refer(f"sip:duty@127.0.0.1:{free_port()}", timeout_s=6) is False
    await call.hangup()
