"""Fixtures starting real baresip / kamailio peers and our user agent on 127.0.0.1.

Reusable by the call runner, demo and chaos tests::

    async def test_x(baresip, sip_ua):
        phone = baresip(answer="auto", source_wav=speech)   # started, stopped at teardown
        call = await sip_ua.call(phone.uri)
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.sip import SipConfig, TransportKind, UserAgent
from tests.integration.sip.peers import (
    BaresipPeer,
    KamailioProxy,
    have_baresip,
    have_kamailio,
    read_wav,
    speech_wav,
)

requires_baresip = pytest.mark.skipif(not have_baresip(), reason="baresip (Debian package) not installed")
requires_kamailio = pytest.mark.skipif(not have_kamailio(), reason="kamailio (Debian package) not installed")


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def prompt_pcm(speech_dir: Path) -> bytes:
    """About 3 s of espeak-ng speech, 8 kHz S16LE: what we play to the phone."""
    return read_wav(speech_wav("Hello, this is the community check in call. Please press one if you are well.",
                               speech_dir / "prompt.wav"))


@pytest.fixture(scope="session")
def elder_wav(speech_dir: Path) -> Path:
    """The phone's microphone: a short answer padded with silence to 120 s (baresip hangs up at EOF)."""
    return speech_wav("Hello? Who is it?", speech_dir / "elder.wav", pad_to_s=120)


@pytest.fixture
def baresip(tmp_path: Path, elder_wav: Path) -> Iterator[Callable[..., BaresipPeer]]:
    """Factory: ``baresip(answer="manual", reject_incoming=True, source_wav=..., registrar=..., ...)``."""
    if not have_baresip():
        pytest.skip("baresip not installed")
    peers: list[BaresipPeer] = []
    counter = itertools.count()

    def make(**kwargs: Any) -> BaresipPeer:
        kwargs.setdefault("source_wav", elder_wav)
        peer = BaresipPeer(tmp_path / f"baresip{next(counter)}", **kwargs)
        peers.append(peer)
        return peer.start()

    yield make
    for p in peers:
        p.stop()


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[Callable[..., KamailioProxy]]:
    """Factory: ``kamailio(users={"ivr": "pw", "elder": "pw2"}, invite_auth_users=("ivr",))``."""
    if not have_kamailio():
        pytest.skip("kamailio not installed")
    proxies: list[KamailioProxy] = []
    counter = itertools.count()

    def make(**kwargs: Any) -> KamailioProxy:
        proxy = KamailioProxy(tmp_path / f"kamailio{next(counter)}", **kwargs)
        proxies.append(proxy)
        return proxy.start()

    yield make
    for p in proxies:
        p.stop()


@pytest.fixture
async def ua_factory() -> AsyncIterator[Callable[..., Any]]:
    """Async factory: ``await ua_factory(transport=TransportKind.TCP, proxy=..., ...)`` -> started UA."""
    agents: list[UserAgent] = []

    async def make(**kwargs: Any) -> UserAgent:
        kwargs.setdefault("local_host", "127.0.0.1")
        ua = UserAgent(SipConfig(**kwargs))
        await ua.start()
        agents.append(ua)
        return ua

    yield make
    for ua in agents:
        await ua.stop()


@pytest.fixture
async def sip_ua(ua_factory: Callable[..., Any]) -> UserAgent:
    """A started UDP user agent without proxy."""
    ua: UserAgent = await ua_factory(transport=TransportKind.UDP)
    return ua
