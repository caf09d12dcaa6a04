"""The wire format: our checks agree with the simulator (written independently of wechatpy)."""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import wire
from bot.bindings import last_four
from bot.flows import family_command
from bot.ports import BotTurn
from bot.testing import WechatServerSim, new_aes_key, wechat_sha1


def test_signature_matches_wechat_scheme() -> None:
    assert wire.sign("tok", "1700000000", "42") == wechat_sha1("tok", "1700000000", "42")
    wire.verify(("tok", "1", "2"), wechat_sha1("tok", "1", "2"))
    for bad in (None, "", "x" * 40, wechat_sha1("tok", "1", "3"), "é"):
        with pytest.raises(wire.SignatureError):
            wire.verify(("tok", "1", "2"), bad)


def test_freshness_window() -> None:
    now = time.time()
    wire.check_fresh(str(int(now) - 100), now)
    for bad in (None, "", "abc", "-5", str(int(now) - 301), str(int(now) + 301), "1" * 20, "１２３"):
        with pytest.raises(wire.SignatureError):
            wire.check_fresh(bad, now)


def test_decrypt_what_the_simulator_encrypts_and_back() -> None:
    aes = new_aes_key()
    keys = wire.CallbackKeys("tok", "wxapp", aes)
    crypto = keys.crypto()
    assert crypto is not None
    sim = WechatServerSim("tok", "wxapp", aes, "safe")
    inner = sim.text("o1", "你好，最近怎么样？", msg_id=7)
    params, body = sim.envelope(inner)
    assert wire.decrypt_envelope(keys, crypto, body, params).decode() == inner
    reply = wire.encrypt_reply(keys, crypto, "<xml><Content>好</Content></xml>", "n1", "1700000000")
    assert sim.open_reply(reply) == "<xml><Content>好</Content></xml>"
    # wrong appid inside the ciphertext is refused
    other = WechatServerSim("tok", "wxother", aes, "safe")
    p2, b2 = other.envelope(inner)
    with pytest.raises(wire.WireError):
        wire.decrypt_envelope(keys, crypto, b2, p2)


def test_entities_and_doctype_refused_before_parsing() -> None:
    for body in (b'<!DOCTYPE x [<!ENTITY a "b">]><xml/>', b"<!ENTITY a 'b'>", b"<!doctype html><xml/>"):
        with pytest.raises(wire.WireError):
            wire.parse_xml(body)
    with pytest.raises(wire.WireError):
        wire.guard_xml(b"a" * (wire.MAX_BODY_BYTES + 1))


def test_message_parsing_and_dedup_keys() -> None:
    sim = WechatServerSim("tok", "wx", None, "plain")
    msg = wire.to_message(sim.text("o1", "hi", msg_id=99).encode())
    assert wire.dedup_key(msg) == "m:99:o1"
    ev = wire.to_message(sim.event("o1", "subscribe", key="qrscene_abc", create_time=1700000000).encode())
    assert wire.dedup_key(ev) == "e:o1:1700000000:subscribe_scan:abc"
    for junk in (b"<xml><MsgType>text</MsgType></xml>", b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName>"
                 b"<MsgType><x>1</x></MsgType></xml>", b"<root/>", b"\xff\xfe"):
        with pytest.raises(wire.WireError):
            wire.to_message(junk)


@given(st.binary(max_size=300))
def test_to_message_only_raises_wire_errors(body: bytes) -> None:
    with contextlib.suppress(wire.WireError):
        wire.to_message(body)


def test_last_four_ignores_formatting() -> None:
    assert last_four("+86 139-1234-5678") == "5678"
    assert last_four("0451-8888 1234") == "1234"
    assert last_four("１３９ １２３４ ５６７８") == "5678"  # full-width, as typed in some ledgers
    assert last_four("12345") == "2345"  # refused by the ledger rules: plain digits


def test_family_commands() -> None:
    assert family_command("给我妈打个电话") == "call"
    assert family_command("想请人上门看看") == "visit"
    assert family_command("最近怎么样") == "status"
    assert family_command("解除绑定") == "unbind"
    assert family_command("订阅日报") == "digest_on"
    assert family_command("今天天气") is None


def test_keypad_options_render_as_reply_digits() -> None:
    turn = BotTurn(texts=("最近身体怎么样？",), options=(("1", "挺好"), ("2", "不太好")))
    assert turn.render() == "最近身体怎么样？\n回复1：挺好\n回复2：不太好"
