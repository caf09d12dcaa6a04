"""What the bot does with one inbound message or event (synchronous, inside one DB transaction).

Family members bind, ask for status, a call or a visit, opt into the daily digest and unbind;
elders bound as themselves check in through the dialogs engine; staff are told where their work
is. Replies are plain Chinese text (``None`` = nothing to say, WeChat gets ``success``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, bindparam, select, text, true
from sqlalchemy.orm import Session

from bot import bindings as b
from bot import texts as t
from bot.ports import CallNotAllowed, CallRequester, CheckinEngine, CheckinRecorder, VisitRequester
from storage.crypto import Vault
from storage.enums import Outcome
from storage.models.base import UTCDateTime
from storage.models.checkin import CallAttempt, CheckIn
from storage.models.elder import Contact, Elder, Profile
from storage.models.staff import Staff
from storage.models.wechat import WechatBindingCode, WechatConversation, WechatFollower

log = logging.getLogger(__name__)

CONFIRM_TTL = timedelta(minutes=15)
CHECKIN_TTL = timedelta(minutes=30)
CHOICE_TTL = timedelta(minutes=10)

MENU_KEYS = {"STATUS": "status", "CALL": "call", "VISIT": "visit", "UNBIND": "unbind", "DIGEST": "digest_on"}
_RULES: list[tuple[str, tuple[str, ...]]] = [
    ("unbind", ("解除绑定", "解绑", "取消绑定")),
    ("digest_off", ("取消日报", "退订日报", "关闭日报", "取消每日")),
    ("digest_on", ("订阅日报", "开通日报", "每日平安", "开启日报")),
    ("visit", ("上门", "来家", "探望", "去看看")),
    ("call", ("打个电话", "打电话", "打一个电话", "回个电话")),
    ("status", ("最近怎么样", "怎么样", "近况", "情况", "状态", "好不好")),
    ("help", ("菜单", "帮助", "help", "?", "？")),
]


def family_command(text: str) -> str | None:
    s = text.strip().lower()
    for name, words in _RULES:
        if any(w in s for w in words):
            return name
    return None


# Hot-path statements, built once (executed with parameters on the session's connection).
# The status of an elder in one round trip: name, consent to share, last finished check-in and
# last finished call (each ``LIMIT 1`` subquery joined on true; NULLs when there is none).
_LAST_CHECKIN = (
    select(CheckIn.id, CheckIn.completed_at, CheckIn.outcome)
    .where(CheckIn.elder_id == bindparam("elder_id"), CheckIn.completed_at.is_not(None))
    .order_by(CheckIn.completed_at.desc(), CheckIn.id.desc())
    .limit(1)
    .subquery("last_checkin")
)
_LAST_CALL = (
    select(CallAttempt.checkin_id, CallAttempt.channel, CallAttempt.ended_at, CallAttempt.outcome, CallAttempt.intents)
    .where(CallAttempt.elder_id == bindparam("elder_id"), CallAttempt.ended_at.is_not(None))
    .order_by(CallAttempt.ended_at.desc(), CallAttempt.id.desc())
    .limit(1)
    .subquery("last_call")
)
_STATUS = (
    select(
        Elder.name,
        Profile.health_details_shared_with_family.label("shared"),
        _LAST_CHECKIN.c.id.label("checkin_id"),
        _LAST_CHECKIN.c.completed_at,
        _LAST_CHECKIN.c.outcome.label("checkin_outcome"),
        _LAST_CALL.c.checkin_id.label("call_checkin_id"),
        _LAST_CALL.c.channel,
        _LAST_CALL.c.ended_at,
        _LAST_CALL.c.outcome.label("call_outcome"),
        _LAST_CALL.c.intents,
    )
    .select_from(Elder)
    .outerjoin(Profile, Profile.elder_id == Elder.id)
    .outerjoin(_LAST_CHECKIN, true())
    .outerjoin(_LAST_CALL, true())
    .where(Elder.id == bindparam("elder_id"))
)
_ELDER_NAME = select(Elder.name).where(Elder.id == bindparam("elder_id"))

# Create the follower or set its last inbound time (the 48-hour window) and, in the same round
# trip, whether it has a conversation (its expiry). Plain SQL valid on PostgreSQL and SQLite: the
# dialects' ``insert().on_conflict_do_update()`` has no cache key, so SQLAlchemy would compile it
# for every message.
_TOUCH = (
    text(
        "INSERT INTO wechat_followers (openid, subscribed, failed_code_attempts, last_inbound_at) "
        "VALUES (:openid, TRUE, 0, :now) "
        "ON CONFLICT (openid) DO UPDATE SET last_inbound_at = excluded.last_inbound_at "
        "RETURNING (SELECT c.expires_at FROM wechat_conversations c WHERE c.openid = :openid) AS conv_expires_at"
    )
    .bindparams(bindparam("openid", type_=String()), bindparam("now", type_=UTCDateTime()))
    .columns(conv_expires_at=UTCDateTime())
)


@dataclass(frozen=True)
class Inbound:
    """One inbound message or event, reduced to what the flows use."""

    openid: str
    kind: str  # text / voice / event / other
    text: str | None = None
    event: str | None = None  # subscribe / subscribe_scan / scan / unsubscribe / click / ...
    event_key: str | None = None
    voice_unrecognised: bool = False
    intent: Any = None  # the zh intent, parsed off the event loop before the transaction


@dataclass
class BotConfig:
    service_name: str = "探访关爱服务"
    hotline: str = "12349"


@dataclass
class Flows:
    vault: Vault
    config: BotConfig = field(default_factory=BotConfig)
    calls: CallRequester | None = None
    visits: VisitRequester | None = None
    engine: CheckinEngine | None = None
    recorder: CheckinRecorder | None = None

    # -- entry -----------------------------------------------------------------
    def handle(self, session: Session, msg: Inbound, now: datetime) -> str | None:
        conv_expires_at = self._touch_follower(session, msg.openid, now)
        if msg.kind == "event":
            return self._event(session, msg, now)
        conv = self._conversation(session, msg.openid, now) if conv_expires_at is not None else None
        if msg.kind not in ("text", "voice"):
            return t.UNSUPPORTED
        text = (msg.text or "").strip()
        if conv is not None and conv.kind == "bind_confirm":
            if text.isdigit() and len(text) == 4:
                return self._confirm(session, conv, msg.openid, text, now)
            session.delete(conv)
            conv = None
        if text.isdigit() and len(text) == 6:
            return self._lookup(session, msg.openid, b.CodeKind.CODE, text, now)
        bindings = b.binding_rows(session, msg.openid)
        elder_binding = next((x for x in bindings if x.role == b.BindRole.ELDER), None)
        if elder_binding is not None and elder_binding.elder_id is not None:
            return self._elder_turn(session, elder_binding.elder_id, conv, msg, text, now)
        if conv is not None and conv.kind == "choose_elder":
            reply = self._choice(session, conv, msg.openid, text, now)
            if reply is not None:
                return reply
        command = family_command(text)
        if command == "unbind":
            return self._unbind(session, msg.openid, now)
        family = [x for x in bindings if x.role == b.BindRole.FAMILY and x.elder_id is not None]
        if not family:
            if any(x.role == b.BindRole.STAFF for x in bindings):
                return t.STAFF_HELLO
            if msg.voice_unrecognised:
                return t.VOICE_UNCLEAR
            return t.NOT_BOUND if command else t.welcome(self.config.service_name)
        return self._family(session, family, command, msg.openid, now)

    # -- events ----------------------------------------------------------------
    def _event(self, session: Session, msg: Inbound, now: datetime) -> str | None:
        event = (msg.event or "").lower()
        follower = session.get(WechatFollower, msg.openid)
        assert follower is not None
        if event == "unsubscribe":
            follower.subscribed = False
            follower.unsubscribed_at = now
            b.unbind_all(session, msg.openid, now, "unsubscribe")
            conv = session.get(WechatConversation, msg.openid)
            if conv is not None:
                session.delete(conv)
            return None
        if event in ("subscribe", "subscribe_scan", "scan"):
            if event != "scan":
                follower.subscribed = True
                follower.subscribed_at = now
            scene = (msg.event_key or "").removeprefix("qrscene_")
            if event != "subscribe" and scene:
                return self._lookup(session, msg.openid, b.CodeKind.SCENE, scene, now)
            return t.welcome(self.config.service_name)
        if event == "click":
            command = MENU_KEYS.get((msg.event_key or "").upper())
            if command is None:
                return t.MENU
            bindings = b.binding_rows(session, msg.openid)
            if command == "unbind":
                return self._unbind(session, msg.openid, now)
            family = [x for x in bindings if x.role == b.BindRole.FAMILY and x.elder_id is not None]
            if not family:
                return t.NOT_BOUND
            return self._family(session, family, command, msg.openid, now)
        return None

    # -- binding ---------------------------------------------------------------
    def _lookup(self, session: Session, openid: str, kind: b.CodeKind, value: str, now: datetime) -> str:
        follower = session.get(WechatFollower, openid)
        assert follower is not None
        if b.lookups_blocked(follower, now):
            return t.CODE_BLOCKED
        code = b.find_code(session, self.vault, kind, value, now)
        if code is None:
            b.note_failed_lookup(follower, now)
            log.info("unknown binding code", extra={"action": "wechat_code_unknown"})
            return t.CODE_UNKNOWN
        self._set_conversation(session, follower.openid, "bind_confirm", {"code_id": code.id}, now, CONFIRM_TTL)
        return t.confirm_prompt(self._who(session, code))

    def _who(self, session: Session, code: WechatBindingCode) -> str:
        if code.staff_id is not None:
            staff = session.get(Staff, code.staff_id)
            return f"工作人员 {staff.name if staff else ''}"
        elder = session.get(Elder, code.elder_id) if code.elder_id else None
        name = elder.name if elder else ""
        if code.contact_id is not None:
            contact = session.get(Contact, code.contact_id)
            rel = f"（{contact.name}，{contact.relation}）" if contact else ""
            return f"老人 {name} 的家属{rel}"
        return f"老人 {name} 本人"

    def _confirm(self, session: Session, conv: WechatConversation, openid: str, digits: str, now: datetime) -> str:
        code = session.get(WechatBindingCode, conv.state.get("code_id"))
        if code is None or code.used_at or code.revoked_at or code.expires_at <= now or code.attempts >= code.max_attempts:
            session.delete(conv)
            return t.CODE_UNKNOWN
        expected = b.expected_last_four(session, self.vault, code)
        if expected is None:
            session.delete(conv)
            return t.CONFIRM_NO_PHONE
        import hmac

        if not hmac.compare_digest(expected.encode(), digits.encode()):
            code.attempts += 1
            log.info("binding confirmation failed", extra={"action": "wechat_bind_wrong_digits", "code_id": code.id})
            if code.attempts >= code.max_attempts:
                code.revoked_at = now
                session.delete(conv)
                return t.CONFIRM_LOCKED
            return t.CONFIRM_WRONG
        who = self._who(session, code)
        b.bind(session, code, openid, now)
        session.delete(conv)
        return t.bound(who)

    def _unbind(self, session: Session, openid: str, now: datetime) -> str:
        rows = b.unbind_all(session, openid, now, "user")
        if not rows:
            return t.NOTHING_TO_UNBIND
        names = []
        for r in rows:
            if r.elder_id is not None:
                elder = session.get(Elder, r.elder_id)
                names.append(elder.name if elder else "老人")
            else:
                names.append("工作人员账号")
        log.info("wechat unbound", extra={"action": "wechat_unbound", "count": len(rows)})
        return t.UNBOUND.format(names="、".join(dict.fromkeys(names)))

    # -- family ----------------------------------------------------------------
    def _family(
        self, session: Session, family: list[b.BindingRow], command: str | None, openid: str, now: datetime
    ) -> str:
        elder_ids = list(dict.fromkeys(x.elder_id for x in family if x.elder_id is not None))
        if command == "status":
            return "\n\n".join(self.status_text(session, eid, now) for eid in elder_ids)
        if command in ("digest_on", "digest_off"):
            for row in b.active_bindings(session, openid):
                if row.role == b.BindRole.FAMILY:
                    row.digest_opt_in = command == "digest_on"
            return t.DIGEST_ON if command == "digest_on" else t.DIGEST_OFF
        if command in ("call", "visit"):
            if len(elder_ids) > 1:
                names = [self._elder_name(session, eid) for eid in elder_ids]
                self._set_conversation(
                    session, openid, "choose_elder", {"action": command, "elders": elder_ids}, now, CHOICE_TTL
                )
                return t.choose_elder(names)
            return self._act(session, command, elder_ids[0], openid, now)
        return t.MENU

    def _choice(self, session: Session, conv: WechatConversation, openid: str, text: str, now: datetime) -> str | None:
        elders = conv.state.get("elders", [])
        action = conv.state.get("action", "")
        session.delete(conv)
        if text.isdigit() and 1 <= int(text) <= len(elders):
            return self._act(session, action, int(elders[int(text) - 1]), openid, now)
        return None

    def _act(self, session: Session, action: str, elder_id: int, openid: str, now: datetime) -> str:
        name = self._elder_name(session, elder_id)
        who = f"wechat:{openid[-6:]}"
        if action == "call":
            if self.calls is None:
                return f"暂时无法自动安排电话，请拨打 {self.config.hotline} 联系工作人员。"
            try:  # refused before anything is written
                due = self.calls.request_call_now(session, elder_id=elder_id, now=now, requested_by=who)
            except CallNotAllowed:
                log.info("call refused: no consent", extra={"action": "wechat_call_no_consent", "elder_id": elder_id})
                if self.visits is not None:
                    self.visits.request_visit(session, elder_id=elder_id, now=now, requested_by=who,
                                              note="家属请求探访电话，老人未同意自动电话，请人工联系")
                return t.call_needs_consent(name)
            log.info("family asked for a call", extra={"action": "wechat_call_requested", "elder_id": elder_id})
            if due is not None and due - now > timedelta(minutes=5):
                return t.call_later(name, t.local_time(due))
            return t.call_scheduled(name)
        if self.visits is None:
            return f"暂时无法在线登记，请拨打 {self.config.hotline} 联系工作人员上门。"
        self.visits.request_visit(
            session, elder_id=elder_id, now=now, requested_by=who, note="家属通过公众号请求上门看望"
        )
        log.info("family asked for a visit", extra={"action": "wechat_visit_requested", "elder_id": elder_id})
        return t.visit_requested(name)

    def _elder_name(self, session: Session, elder_id: int) -> str:
        name = session.connection().execute(_ELDER_NAME, {"elder_id": elder_id}).scalar()
        return name or "老人"

    def status_text(self, session: Session, elder_id: int, now: datetime) -> str:
        """The last finished check-in in plain words; health details only with the elder's consent."""
        row = session.connection().execute(_STATUS, {"elder_id": elder_id}).first()
        if row is None:  # no such elder (deleted meanwhile)
            return "老人：暂时还没有探访记录。"
        name = row.name or "老人"
        has_checkin = row.completed_at is not None and row.checkin_outcome is not None
        if not has_checkin and row.call_outcome is None:
            return f"{name}：暂时还没有探访记录。"
        if has_checkin:
            when, outcome = row.completed_at, row.checkin_outcome
            channel = "微信" if row.call_checkin_id == row.checkin_id and row.channel == "wechat" else "电话"
        else:
            assert row.ended_at is not None
            when, outcome, channel = row.ended_at, row.call_outcome, "微信" if row.channel == "wechat" else "电话"
        lines = [f"{name} 最近一次探访：{t.local_time(when)}（{channel}）", f"结果：{t.OUTCOME_WORDS[Outcome(outcome)]}。"]
        details = [t.INTENT_WORDS[i] for i in (row.intents or []) if i in t.INTENT_WORDS]
        if row.shared and details:
            lines.append("老人在通话中" + "；".join(dict.fromkeys(details)) + "。")
        elif details or outcome in (Outcome.NEEDS_FOLLOWUP, Outcome.EMERGENCY):
            lines.append(f"具体情况请咨询工作人员（热线 {self.config.hotline}）。")
        return "\n".join(lines)

    # -- elders ----------------------------------------------------------------
    def _elder_turn(  # noqa: PLR0917
        self,
        session: Session,
        elder_id: int,
        conv: WechatConversation | None,
        msg: Inbound,
        text: str,
        now: datetime,
    ) -> str:
        if msg.voice_unrecognised:
            return t.VOICE_UNCLEAR
        if self.engine is None:
            return t.ELDER_NO_ENGINE.format(hotline=self.config.hotline)
        elder = session.get(Elder, elder_id)
        if elder is None:
            return t.ELDER_NO_ENGINE.format(hotline=self.config.hotline)
        digit = text if len(text) == 1 and text.isdigit() else None
        if conv is None or conv.kind != "checkin":
            if conv is not None:
                session.delete(conv)
                session.flush()
            state, opener = self.engine.start(elder_id=elder_id, elder_name=elder.name, locale=str(elder.locale), now=now)
            data: dict[str, Any] = {
                "dialog": state,
                "started_at": now.isoformat(),
                "transcript": [{"who": "system", "text": opener.render(), "at": now.isoformat()}],
            }
        else:
            data = dict(conv.state)
        data["transcript"].append({"who": "elder", "text": text, "at": now.isoformat(), "via": msg.kind})
        state, turn = self.engine.answer(
            data["dialog"], text=None if digit else text, digit=digit, now=now, intent=msg.intent
        )
        data["dialog"] = state
        reply = turn.render()
        data["transcript"].append({"who": "system", "text": reply, "at": now.isoformat()})
        if turn.finished:
            if conv is not None and conv in session:
                session.delete(conv)
            if self.recorder is not None:
                self.recorder.record(
                    session,
                    elder_id=elder_id,
                    started_at=datetime.fromisoformat(data["started_at"]),
                    now=now,
                    transcript=data["transcript"],
                    turn=turn,
                )
        else:
            self._set_conversation(session, msg.openid, "checkin", data, now, CHECKIN_TTL)
        return reply

    # -- state -------------------------------------------------------------------
    def _touch_follower(self, session: Session, openid: str, now: datetime) -> datetime | None:
        """Create the follower if new and set its last inbound time (the 48-hour window), in one
        statement that also locks the row: one message per follower at a time. Returns the
        expiry of the follower's conversation (None: it has none)."""
        return session.connection().execute(_TOUCH, {"openid": openid, "now": now}).scalar()

    def _conversation(self, session: Session, openid: str, now: datetime) -> WechatConversation | None:
        conv = session.get(WechatConversation, openid)
        if conv is not None and conv.expires_at <= now:
            session.delete(conv)
            session.flush()
            return None
        return conv

    def _set_conversation(  # noqa: PLR0917
        self, session: Session, openid: str, kind: str, state: dict[str, Any], now: datetime, ttl: timedelta
    ) -> None:
        conv = session.get(WechatConversation, openid)
        if conv is None:
            session.add(WechatConversation(openid=openid, kind=kind, state=state, updated_at=now, expires_at=now + ttl))
        else:
            conv.kind, conv.state, conv.updated_at, conv.expires_at = kind, state, now, now + ttl


def record_wechat_checkin(
    session: Session,
    *,
    elder_id: int,
    started_at: datetime,
    now: datetime,
    transcript: list[dict[str, Any]],
    turn: Any,
) -> CallAttempt:
    """Store a finished WeChat check-in as a CallAttempt (channel "wechat"). Default recorder."""
    attempt = CallAttempt(
        elder_id=elder_id,
        channel="wechat",
        started_at=started_at,
        answered_at=started_at,
        ended_at=now,
        result="answered",
        transcript=transcript,
        intents=list(turn.intents),
        outcome=Outcome(turn.outcome) if turn.outcome else None,
        dialog_result=dict(turn.result),
    )
    session.add(attempt)
    session.flush()
    return attempt


class DefaultRecorder:
    """Records the call attempt; the escalation hook (triage) is added by the assembly when present."""

    def record(
        self,
        session: Session,
        *,
        elder_id: int,
        started_at: datetime,
        now: datetime,
        transcript: list[dict[str, Any]],
        turn: Any,
    ) -> None:
        record_wechat_checkin(
            session, elder_id=elder_id, started_at=started_at, now=now, transcript=transcript, turn=turn
        )
