"""Signatures, freshness, size and XML guards, fuzzing (never a 500), retries answered once."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.callback import CallbackService
from bot.dedup import DedupStore
from bot.testing import reply_content, wechat_sha1
from bot.wire import MAX_BODY_BYTES
from tests.integration.bot.conftest import Harness, now_utc

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
    '<!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>'
    "<xml><ToUserName>a</ToUserName><FromUserName>&lol9;</FromUserName><CreateTime>1</CreateTime>"
    "<MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId></xml>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    "<xml><ToUserName>a</ToUserName><FromUserName>&e;</FromUserName><CreateTime>1</CreateTime>"
    "<MsgType>text</MsgType><Content>x</Content><MsgId>2</MsgId></xml>"
)


async def test_bad_and_stale_signatures_are_403(harness: Harness) -> None:
    h = harness
    params, body = h.sim.envelope(h.sim.text("o1", "你好"))
    bad = dict(params, signature="f" * 40)
    assert (await h.post_raw(bad, body))[0] == 403
    missing = {k: v for k, v in params.items() if k != "signature"}
    assert (await h.post_raw(missing, body))[0] == 403
    old = int(time.time()) - 3600
    p_old, b_old = h.sim.envelope(h.sim.text("o1", "你好"), timestamp=old)
    assert (await h.post_raw(p_old, b_old))[0] == 403
    if h.sim.mode != "plain":
        tampered = dict(params, msg_signature="0" * 40)
        assert (await h.post_raw(tampered, body))[0] == 403
    assert h.service.handler_runs == 0


async def test_junk_is_400_and_entities_are_refused(harness: Harness) -> None:
    h = harness
    for junk in (b"", b"not xml", b"<xml><a>", b"<root/>", BILLION_LAUGHS.encode(), EXTERNAL_ENTITY.encode(),
                 b"<xml><ToUserName>a</ToUserName></xml>", "<xml>\u00ff</xml>".encode("latin-1")):
        if h.sim.mode == "plain":
            params, body = h.sim.envelope("x")
            body = junk
        else:
            params, body = h.sim.envelope(junk.decode("utf-8", "replace"))
            if junk in (BILLION_LAUGHS.encode(), EXTERNAL_ENTITY.encode()):
                # also as the outer body itself
                status, _ = await h.post_raw(params, junk)
                assert status == 400
        status, text = await h.post_raw(params, body)
        assert status == 400, (junk[:30], status, text)
    assert h.service.handler_runs == 0


async def test_body_size_limit(harness: Harness) -> None:
    h = harness
    params, _ = h.sim.envelope(h.sim.text("o1", "x"))
    status, _ = await h.post_raw(params, b"<xml>" + b"a" * (MAX_BODY_BYTES + 10) + b"</xml>")
    assert status == 413


async def test_safe_mode_refuses_plain_messages(harness: Harness) -> None:
    h = harness
    if h.sim.mode != "safe":
        pytest.skip("safe mode only")
    ts, nonce = str(int(time.time())), "123"
    params = {"signature": wechat_sha1(h.sim.token, ts, nonce), "timestamp": ts, "nonce": nonce}
    status, _ = await h.post_raw(params, h.sim.text("o1", "最近怎么样").encode())
    assert status == 403


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=2000),
        st.text(max_size=500).map(lambda s: f"<xml><ToUserName>a</ToUserName><FromUserName>{s}</FromUserName>"
                                  f"<CreateTime>1</CreateTime><MsgType>text</MsgType><MsgId>{s}</MsgId></xml>"),
        st.sampled_from([BILLION_LAUGHS, EXTERNAL_ENTITY]),
        st.recursive(st.text(max_size=10), lambda c: st.builds(lambda t, x: f"<{t or 'a'}>{x}</{t or 'a'}>",
                                                                 st.sampled_from(["xml", "Encrypt", "MsgType", "x"]), c),
                     max_leaves=20),
    ),
    query=st.dictionaries(st.sampled_from(["signature", "timestamp", "nonce", "encrypt_type", "msg_signature", "x"]),
                          st.text(max_size=50), max_size=6),
    signed=st.booleans(),
    encrypted=st.booleans(),
)
async def test_fuzz_never_500(harness: Harness, body: bytes | str, query: dict[str, str], signed: bool, encrypted: bool) -> None:
    h = harness
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if signed:
        if encrypted and h.sim.mode != "plain":
            params, raw = h.sim.envelope(raw.decode("utf-8", "replace"))
        else:
            params, _ = h.sim.envelope("x")
            params = {k: v for k, v in params.items() if k in ("signature", "timestamp", "nonce")}
        params.update({k: v for k, v in query.items() if k == "x"})
    else:
        params = query
    status, _ = await h.post_raw(params, raw)
    assert status in (200, 400, 403, 413), status
    async with h.http.get(h.url, params=query) as r:
        assert r.status in (200, 403)


async def test_retries_under_load_answered_once(harness: Harness) -> None:
    """50 messages, each delivered 4 times concurrently (WeChat retries): 50 handler runs, same reply."""
    h = harness
    msgs = [h.sim.text(f"o_load_{i % 7}", "最近怎么样", msg_id=10_000 + i) for i in range(50)]
    envelopes = [h.sim.envelope(m) for m in msgs for _ in range(4)]

    async def post(p: dict[str, str], b: bytes) -> tuple[int, str]:
        return await h.post_raw(p, b)

    results = await asyncio.gather(*(post(p, b) for p, b in envelopes))
    assert all(s == 200 for s, _ in results)
    replies = [reply_content(h.sim.open_reply(t)) for _, t in results]
    for i in range(50):
        group = replies[i * 4:(i + 1) * 4]
        assert group[0] and len(set(group)) == 1, group
    assert h.service.handler_runs == 50
    # a late retry (after completion) gets the stored reply, without running the handler
    p, b = h.sim.envelope(msgs[0])
    status, text = await h.post_raw(p, b)
    assert status == 200 and reply_content(h.sim.open_reply(text)) == replies[0]
    assert h.service.handler_runs == 50


async def test_two_processes_share_the_dedup_row(harness: Harness) -> None:
    """A second service (its own in-process map, as another process) answers from the DB row."""
    h = harness
    other = CallbackService(h.service.keys, h.service.mode, h.engine, h.flows,
                            DedupStore(h.engine, h.vault, "other", now_utc), now=now_utc)
    msg = h.sim.text("o_multi", "最近怎么样", msg_id=77)
    from wechatpy import parse_message

    parsed = parse_message(msg)
    a, b = await asyncio.gather(h.service.answer("m:77:o_multi", parsed), other.answer("m:77:o_multi", parsed))
    assert a and a == b
    assert h.service.handler_runs + other.handler_runs == 1
    await other.drain()


class SlowRecognizer:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def recognize(self, media_id: str, *, locale: str) -> str | None:
        await asyncio.sleep(self.delay)
        return "最近怎么样"


async def test_slow_work_replies_success_then_customer_service_message(harness: Harness) -> None:
    h = harness
    h.service.reply_deadline = 0.3
    h.service.recognizer = SlowRecognizer(0.8)
    openid = "o_slow_" + secrets.token_hex(3)
    msg = h.sim.voice(openid, "media_slow")
    t0 = time.monotonic()
    assert await h.send(msg) is None  # "success" within the deadline
    assert time.monotonic() - t0 < 0.8
    assert await h.send(msg) is None  # WeChat's retry while the work is still running: no second answer
    await h.service.drain()
    sent = h.api_fake.sent("/custom/send")
    assert len(sent) == 1 and sent[0].body["touser"] == openid
    assert "还没有绑定老人" in sent[0].body["text"]["content"]
    # WeChat's retry now gets "success" too, not a second answer
    assert await h.send(msg) is None
    assert h.service.handler_runs == 1
