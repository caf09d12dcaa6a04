"""Our UA through kamailio: digest auth (401 REGISTER, 407 INVITE), Record-Route, registration refresh."""

from __future__ import annotations

import asyncio
import time

import pytest

from ivr.sip import CallResult, RegistrationError, TransportKind
from tests.integration.sip.peers import best_correlation, read_wav

pytestmark = pytest.mark.sip

USERS = {"ivr": "ivr-secret", "elder": "elder-secret"}


async def test_register_with_401_digest_and_refresh(kamailio, ua_factory) -> None:
    proxy = kamailio(users=USERS)
    ua = await ua_factory(proxy=proxy.uri, username="ivr", password="ivr-secret", register=True,
                          register_expires_s=4)
    assert ua.registration is not None and ua.registration.registered.is_set()
    assert ua.registration.last_status == 200
    await asyncio.sleep(5)  # refresh at half of the granted 4 s
    assert ua.registration.refreshes >= 1 and ua.registration.registered.is_set()


async def test_register_with_wrong_password_is_refused(kamailio, ua_factory) -> None:
    proxy = kamailio(users=USERS)
    with pytest.raises(RegistrationError, match="401"):
        await ua_factory(proxy=proxy.uri, username="ivr", password="wrong", register=True)


@pytest.mark.parametrize("transport", [TransportKind.UDP, TransportKind.TCP])
async def test_call_through_proxy_with_407_and_record_route(kamailio, baresip, ua_factory, prompt_pcm,
                                                             transport) -> None:
    proxy = kamailio(users=USERS, invite_auth_users=("ivr",))
    phone = baresip(answer="auto", registrar=proxy.domain, password="elder-secret")
    ua = await ua_factory(proxy=proxy.uri, username="ivr", password="ivr-secret", transport=transport)
    call = await ua.call("elder", ring_timeout_s=10)
    assert call.outcome is CallResult.ANSWERED, (call.sip_status, call.reason)
    assert call.dialog is not None
    assert call.dialog.route_set and str(proxy.port) in call.dialog.route_set[0]  # record-routed
    assert await call.media.play(prompt_pcm)
    await call.hangup()
    await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 5)  # our BYE went through the proxy
    await asyncio.sleep(0.3)
    assert best_correlation(prompt_pcm, read_wav(phone.heard()[-1])) > 0.95


async def test_invite_with_wrong_password_is_auth_failed(kamailio, baresip, ua_factory) -> None:
    proxy = kamailio(users=USERS, invite_auth_users=("ivr",))
    baresip(answer="auto", registrar=proxy.domain, password="elder-secret")
    ua = await ua_factory(proxy=proxy.uri, username="ivr", password="nope")
    call = await ua.call("elder", ring_timeout_s=10)
    assert call.outcome is CallResult.AUTH_FAILED and call.sip_status == 407


async def test_unknown_user_is_not_found(kamailio, ua_factory) -> None:
    proxy = kamailio(users=USERS, invite_auth_users=("ivr",))
    ua = await ua_factory(proxy=proxy.uri, username="ivr", password="ivr-secret")
    call = await ua.call("nobody", ring_timeout_s=10)
    assert call.outcome is CallResult.NOT_FOUND and call.sip_status == 404


async def test_options_to_proxy(kamailio, ua_factory) -> None:
    proxy = kamailio(users=USERS)
    ua = await ua_factory(proxy=proxy.uri, username="ivr", password="ivr-secret")
    assert await ua.options(proxy.uri) == 200


@pytest.mark.slow
async def test_calls_stay_up_direct_past_60s_and_through_the_proxy_past_32s(kamailio, baresip, ua_factory, sip_ua,
                                                                           prompt_pcm) -> None:
    """ACK correctness, two ways at once (both only wait, so they share the minute):
    a direct call to baresip stays up over 60 s (a wrong ACK makes the phone give up at 32 s), and a
    call through kamailio stays up past 32 s (an ACK that ignores the route set never reaches the
    phone), then their BYE comes back through the proxy."""

    async def direct() -> None:
        phone = baresip(answer="auto")
        call = await sip_ua.call(phone.uri, ring_timeout_s=10)
        assert call.outcome is CallResult.ANSWERED
        deadline = time.monotonic() + 65
        while time.monotonic() < deadline:
            await asyncio.sleep(5)
            assert not call.hung_up.is_set(), "the phone dropped the call (bad ACK?)"
        assert "CALL_CLOSED" not in phone.event_types()
        assert await call.media.play(prompt_pcm[:8000])
        await call.hangup()
        await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 5.0)
        assert call.talk_duration_s > 60

    async def proxied() -> None:
        proxy = kamailio(users=USERS, invite_auth_users=("ivr",))
        phone = baresip(answer="auto", registrar=proxy.domain, password="elder-secret")
        ua = await ua_factory(proxy=proxy.uri, username="ivr", password="ivr-secret")
        call = await ua.call("elder", ring_timeout_s=10)
        assert call.outcome is CallResult.ANSWERED
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            await asyncio.sleep(4)
            assert not call.hung_up.is_set(), "dropped: the ACK did not follow the route set"
        await asyncio.to_thread(phone.hangup)  # their BYE comes through the proxy
        await asyncio.wait_for(call.hung_up.wait(), 5)
        assert call.ended_by == "remote" and call.talk_duration_s > 40

    await asyncio.gather(direct(), proxied())
