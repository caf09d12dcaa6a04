"""The UA under test (fast timers) and a scripted peer, for the SIP unit tests."""

from __future__ import annotations

import pytest

from ivr.sip import SipConfig, UserAgent
from tests.unit.sip.fake_peer import FAST, FakePeer


@pytest.fixture
async def ua():
    agent = UserAgent(SipConfig(local_host="127.0.0.1", **FAST))
    await agent.start()
    yield agent
    await agent.stop()


@pytest.fixture
async def peer():
    p = await FakePeer.open()
    yield p
    p.close()
