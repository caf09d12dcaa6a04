"""Every family, elder and staff flow through the simulator, in plain, compatible and safe mode."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.bindings import CodeKind, issue_binding_code
from bot.dedup import write_session
from storage.enums import CheckInStatus, Outcome, Severity
from storage.models.checkin import CallAttempt, CheckIn
from storage.models.elder import Profile
from storage.models.escalation import Escalation
from storage.models.wechat import WechatBinding, WechatBindingCode, WechatFollower
from tests.integration.bot.conftest import Harness, now_utc

FAMILY = "o_family_0001"


def issue(h: Harness, **kw: object) -> str:
    with write_session(h.engine) as s:
        kw.setdefault("elder_id", h.world.elder_id)
        return issue_binding_code(s, h.vault, now=now_utc(), **kw).value  # type: ignore[arg-type]


async def bind_family(h: Harness, openid: str = FAMILY) -> None:
    code = issue(h, contact_id=h.world.contact_id)
    reply = await h.say(openid, code)
    assert reply and "后四位" in reply and "王秀英" in reply
    reply = await h.say(openid, "5678")
    assert reply and reply.startswith("绑定成功")


async def test_get_verification(harness: Harness) -> None:
    params = harness.sim.verify_url("hello42")
    async with harness.http.get(harness.url, params=params) as r:
        assert r.status == 200 and await r.text() == "hello42"
    params["signature"] = "0" * 40
    async with harness.http.get(harness.url, params=params) as r:
        assert r.status == 403


async def test_follow_gets_welcome_and_menu(harness: Harness) -> None:
    reply = await harness.send(harness.sim.event(FAMILY, "subscribe"))
    assert reply and "欢迎关注" in reply and "最近怎么样" in reply and "6 位绑定码" in reply


async def test_bind_by_code_with_last_four_and_consent(harness: Harness) -> None:
    h = harness
    code = issue(h, contact_id=h.world.contact_id)
    assert len(code) == 6 and code.isdigit()
    assert "后四位" in (await h.say(FAMILY, code) or "")
    assert (await h.say(FAMILY, "0000")) == "手机号后四位不正确，请再试一次。"
    reply = await h.say(FAMILY, "5678")
    assert reply and reply.startswith("绑定成功") and "儿子" in reply
    with Session(h.engine) as s:
        b = s.scalars(select(WechatBinding)).one()
        assert (b.openid, b.role, b.elder_id, b.contact_id) == (FAMILY, "family", h.world.elder_id, h.world.contact_id)
        assert b.consent_at is not None and "同意" in b.consent_text
        code_row = s.scalars(select(WechatBindingCode)).one()
        assert code_row.used_at is not None and code_row.attempts == 1
        # the code itself is never stored
        assert code not in (code_row.code_hash or "")
    # single use: a second follower cannot reuse it
    assert "不正确或已失效" in (await h.say("o_other", code) or "")


async def test_bind_by_qr_scene_subscribe_and_scan(harness: Harness) -> None:
    h = harness
    scene = issue(h, contact_id=h.world.contact_id, kind=CodeKind.SCENE)
    reply = await h.send(h.sim.event(FAMILY, "subscribe", key=f"qrscene_{scene}"))
    assert reply and "后四位" in reply
    assert (await h.say(FAMILY, "5678") or "").startswith("绑定成功")
    scene2 = issue(h, contact_id=h.world.contact2_id, kind=CodeKind.SCENE)
    reply = await h.send(h.sim.event("o_daughter", "SCAN", key=scene2))
    assert reply and "女儿" in reply
    assert (await h.say("o_daughter", "9999") or "").startswith("绑定成功")


async def test_wrong_digits_lock_the_code(harness: Harness) -> None:
    h = harness
    code = issue(h, contact_id=h.world.contact_id)
    await h.say(FAMILY, code)
    for _ in range(4):
        assert "不正确" in (await h.say(FAMILY, "1111") or "")
    assert "已失效" in (await h.say(FAMILY, "1111") or "")
    assert "不正确或已失效" in (await h.say(FAMILY, code) or "")


async def test_guessing_codes_is_limited(harness: Harness) -> None:
    h = harness
    code = issue(h, contact_id=h.world.contact_id)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        assert "不正确或已失效" in (await h.say("o_guess", wrong) or "")
    assert "次数过多" in (await h.say("o_guess", code) or "")


async def test_status_without_and_with_health_consent(harness: Harness) -> None:
    h = harness
    await bind_family(h)
    assert "暂时还没有探访记录" in (await h.say(FAMILY, "最近怎么样") or "")
    done = now_utc() - timedelta(hours=2)
    with write_session(h.engine) as s:
        ci = CheckIn(elder_id=h.world.elder_id, slot="s1", status=CheckInStatus.DONE, due_at=done, next_attempt_at=done,
                     outcome=Outcome.NEEDS_FOLLOWUP, completed_at=done)
        s.add(ci)
        s.flush()
        s.add(CallAttempt(checkin_id=ci.id, elder_id=h.world.elder_id, started_at=done, ended_at=done,
                          intents=["unwell"], outcome=Outcome.NEEDS_FOLLOWUP))
    reply = await h.say(FAMILY, "最近怎么样")
    assert reply and "王秀英 最近一次探访" in reply and "需要跟进" in reply
    assert "身体" not in reply and "12349" in reply
    with write_session(h.engine) as s:
        s.get(Profile, h.world.elder_id).health_details_shared_with_family = True  # type: ignore[union-attr]
    reply = await h.send(h.sim.event(FAMILY, "CLICK", key="STATUS"))
    assert reply and "身体有些不舒服" in reply


async def test_call_now_and_visit_request(harness: Harness) -> None:
    h = harness
    await bind_family(h)
    reply = await h.say(FAMILY, "给我妈打个电话")
    assert reply and ("马上给王秀英打" in reply or "已安排在" in reply)
    again = await h.say(FAMILY, "再给我妈打个电话")
    assert again and "王秀英" in again
    reply = await h.say(FAMILY, "想请人上门看看")
    assert reply and "上门看望王秀英" in reply
    with Session(h.engine) as s:
        ci = s.scalars(select(CheckIn).where(CheckIn.kind == "family_request")).one()  # asked twice: one call
        assert ci.status in (CheckInStatus.DUE, CheckInStatus.PLANNED) and ci.elder_id == h.world.elder_id
        assert "家属通过公众号请求探访电话" in ci.reasons
        esc = s.scalars(select(Escalation)).one()
        assert esc.severity is Severity.P3 and esc.elder_id == h.world.elder_id


async def test_digest_opt_in_and_unbind(harness: Harness) -> None:
    h = harness
    await bind_family(h)
    assert "开通每日平安" in (await h.say(FAMILY, "订阅日报") or "")
    with Session(h.engine) as s:
        assert s.scalars(select(WechatBinding.digest_opt_in)).one() is True
    assert "解除与 王秀英 的绑定" in (await h.say(FAMILY, "解除绑定") or "")
    assert "还没有绑定" in (await h.say(FAMILY, "最近怎么样") or "")
    with Session(h.engine) as s:
        assert s.scalars(select(WechatBinding.unbound_at)).one() is not None


async def test_unsubscribe_unbinds(harness: Harness) -> None:
    h = harness
    await bind_family(h)
    assert await h.send(h.sim.event(FAMILY, "unsubscribe")) is None
    with Session(h.engine) as s:
        assert s.get(WechatFollower, FAMILY).subscribed is False  # type: ignore[union-attr]
        assert s.scalar(select(func.count()).select_from(WechatBinding).where(WechatBinding.unbound_at.is_(None))) == 0


async def test_elder_checks_in_by_text_and_keypad(harness: Harness) -> None:
    h = harness
    code = issue(h)  # the elder themself
    assert "本人" in (await h.say("o_elder", code) or "")
    assert (await h.say("o_elder", "0001") or "").startswith("绑定成功")
    reply = await h.say("o_elder", "你好")
    assert reply and "回复1：挺好" in reply and "回复2：不太好" in reply
    assert "祝您身体健康" in (await h.say("o_elder", "1") or "")
    reply = await h.say("o_elder", "今天有点头晕，不太舒服")
    assert reply and "工作人员会尽快联系您" in reply
    with Session(h.engine) as s:
        calls = s.scalars(select(CallAttempt).where(CallAttempt.channel == "wechat").order_by(CallAttempt.id)).all()
        assert [c.outcome for c in calls] == [Outcome.WELL, Outcome.NEEDS_FOLLOWUP]
        assert calls[0].transcript[1]["text"] == "你好" and calls[0].transcript[3]["text"] == "1"


async def test_elder_voice_with_recognition_and_without(harness: Harness) -> None:
    h = harness
    code = issue(h)
    await h.say("o_elder", code)
    await h.say("o_elder", "0001")
    reply = await h.send(h.sim.voice("o_elder", "media1", recognition="我挺好的"))
    assert reply and "回复1" in reply or "祝您身体健康" in (reply or "")
    reply = await h.send(h.sim.voice("o_elder", "media2"))
    assert reply and "请打字回复" in reply


async def test_staff_binding(harness: Harness) -> None:
    h = harness
    with write_session(h.engine) as s:
        code = issue_binding_code(s, h.vault, now=now_utc(), staff_id=h.world.staff_id).value
    assert "工作人员 赵干事" in (await h.say("o_staff", code) or "")
    assert (await h.say("o_staff", "1111") or "").startswith("绑定成功")
    assert "工作台" in (await h.say("o_staff", "你好") or "")


async def test_console_views_revoke_and_unbind(harness: Harness) -> None:
    from bot.bindings import bindings_for_elder, codes_for_elder, revoke_code, unbind

    h = harness
    await bind_family(h)
    spare = issue(h, contact_id=h.world.contact2_id)
    now = now_utc()
    with write_session(h.engine) as s:
        codes = codes_for_elder(s, h.world.elder_id)
        assert [c.state(now) for c in codes] == ["有效", "已使用"]
        assert revoke_code(s, codes[0].code_id, now) and not revoke_code(s, codes[0].code_id, now)
        views = bindings_for_elder(s, h.world.elder_id)
        assert len(views) == 1 and views[0].contact_id == h.world.contact_id and FAMILY not in views[0].openid_masked
        assert unbind(s, views[0].binding_id, now)
    assert "不正确或已失效" in (await h.say("o_x", spare) or "")
    assert "还没有绑定" in (await h.say(FAMILY, "最近怎么样") or "")
