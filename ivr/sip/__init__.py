"""SIP user agent for outbound check-in calls (aiosipua parser/SDP/digest + our own transactions and dialogs).

Public API::

    from ivr.sip import SipConfig, TransportKind, UserAgent, Call, CallState, CallResult
    from ivr.media.rtp import RtpSession, AudioFrame, DtmfDigit, MediaSink, MediaDirection

    ua = UserAgent(SipConfig(local_host="127.0.0.1", transport=TransportKind.UDP,
                             proxy="sip:127.0.0.1:5060", username="ivr", password="…", register=True))
    await ua.start()                       # binds; REGISTERs (and refreshes) when register=True
    call = await ua.call("sip:elder@host:port" or "1001", ring_timeout_s=45, headers=None)
    call.outcome                           # CallResult: answered, busy, no_answer, rejected, not_found,
                                           #   unavailable, timeout, trunk_error, auth_failed
    call.sip_status, call.reason           # final SIP status (None when nothing answered)
    call.state                             # CallState: calling/proceeding/ringing/answered/ended
    call.ring_duration_s, call.talk_duration_s, call.started_at, call.early_media
    completed = await call.media.play(pcm_8k_s16le, interrupt=event, stop_on_dtmf=False)
    async for item in call.media.frames():  # AudioFrame(pcm, ts) | DtmfDigit(digit, duration_ms, ts)
        ...
    item = await call.media.get(wait_s=0.5) # or poll with a timeout (None on timeout/closed)
    call.media.add_sink(recorder)           # MediaSink.on_media(direction, pcm, at): tee of both ways
    await call.media.send_dtmf("5")
    await call.hung_up.wait()              # the far end sent BYE; call.ended covers both sides
    ok = await call.refer("sip:duty@host")  # blind transfer; False when refused/unsupported/unconfirmed
    await call.hangup()                     # BYE from us (no-op once ended)
    await ua.options("sip:peer")            # status code of an OPTIONS ping, None if nothing answered
    await ua.stop()                         # hangs up, unregisters, closes

Timers: our INVITE Timer B is ``SipConfig.invite_timeout_s`` (8 s) so a dead trunk is a
``timeout`` in under 10 s; the ring timeout CANCELs after a provisional response.
"""

from ivr.sip.call import Call, CallState
from ivr.sip.config import SipConfig, TransportKind
from ivr.sip.outcome import CallResult, result_for_status
from ivr.sip.registration import RegistrationError
from ivr.sip.ua import UserAgent

__all__ = [
    "Call",
    "CallResult",
    "CallState",
    "RegistrationError",
    "SipConfig",
    "TransportKind",
    "UserAgent",
    "result_for_status",
]
