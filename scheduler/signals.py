"""Home-device signals: an SOS-button press (→ a call at once, top priority, any hour) or a
water-meter reading (< 10 L in 24 h → a check-in within 2 h). Recorded with their source.

``POST /api/signals`` authenticates each device by its own bearer token (stored hashed);
``tanfang signals ingest`` takes the same JSON records from a trusted file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.config import PolicySet
from scheduler.queue import RequestKind, request_call, write_session
from storage.models import DeviceSignal, DeviceToken, Elder

log = logging.getLogger(__name__)


class SignalIn(BaseModel):
    """One record: ``{"device_id", "kind": "sos"|"water", "observed_at", "litres_24h"?}``."""

    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(min_length=1, max_length=64)
    kind: Literal["sos", "water"]
    observed_at: datetime
    litres_24h: float | None = Field(default=None, ge=0)


@dataclass(frozen=True)
class SignalResult:
    signal_id: int | None
    action: str  # call_now / call_within / none / duplicate
    checkin_id: int | None
    message: str


class SignalError(ValueError):
    pass


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def register_device(session: Session, *, device_id: str, elder_id: int, kind: str, now: datetime) -> str:
    """Bind a device to an elder; returns the token (shown once, only its hash is stored)."""
    if kind not in ("sos_button", "water_meter"):
        raise SignalError("设备类型只能是 sos_button 或 water_meter")
    if session.get(Elder, elder_id) is None:
        raise SignalError(f"老人 {elder_id} 不存在")
    if session.scalar(select(DeviceToken.id).where(DeviceToken.device_id == device_id)) is not None:
        raise SignalError(f"设备 {device_id} 已登记")
    token = secrets.token_urlsafe(32)
    session.add(DeviceToken(device_id=device_id, elder_id=elder_id, kind=kind, token_hash=hash_token(token),
                            created_at=now, updated_at=now))
    return token


def ingest(session: Session, sig: SignalIn, *, source: str, now: datetime, policies: PolicySet,
           device: DeviceToken | None = None) -> SignalResult:
    if sig.observed_at.tzinfo is None:
        raise SignalError("observed_at 必须带时区，例如 2026-12-03T08:00:00+08:00")
    if device is None:
        device = session.scalar(select(DeviceToken).where(DeviceToken.device_id == sig.device_id,
                                                          DeviceToken.active.is_(True)))
        if device is None:
            raise SignalError(f"设备 {sig.device_id} 未登记或已停用")
    if sig.kind == "water" and sig.litres_24h is None:
        raise SignalError("水表读数缺少 litres_24h（过去 24 小时用水升数）")
    dup = session.scalar(select(DeviceSignal.id).where(DeviceSignal.device_id == sig.device_id,
                                                       DeviceSignal.kind == sig.kind,
                                                       DeviceSignal.observed_at == sig.observed_at))
    if dup is not None:
        return SignalResult(dup, "duplicate", None, "重复上报，已忽略")
    device.last_seen_at = now
    action, checkin_id, message = "none", None, "已记录"
    if sig.kind == "sos":
        req = request_call(session, device.elder_id, RequestKind.SOS, now, reason="紧急呼叫按钮被按下",
                           source=source, dialog_flags={"sos": True}, policy=policies)
        action, checkin_id, message = "call_now", req.id, "已安排立即回拨（最高优先级）"
    elif sig.litres_24h is not None:
        path = session.scalar(select(Elder.region_id).where(Elder.id == device.elder_id))
        del path
        pol = policies.default
        if sig.litres_24h < pol.signals.water_min_litres_24h:
            req = request_call(session, device.elder_id, RequestKind.SIGNAL, now,
                               reason=f"24 小时用水仅 {sig.litres_24h:.1f} 升，低于 {pol.signals.water_min_litres_24h:g} 升",
                               source=source, dialog_flags={"water_alert": True}, policy=policies)
            action, checkin_id = "call_within", req.id
            message = f"用水异常，已安排 {int(pol.water_within.total_seconds() // 3600)} 小时内探访"
    row = DeviceSignal(device_id=sig.device_id, elder_id=device.elder_id, kind=sig.kind, value=sig.litres_24h,
                       observed_at=sig.observed_at, received_at=now, source=source[:100], action=action,
                       checkin_id=checkin_id)
    session.add(row)
    session.flush()
    log.info("device signal", extra={"action": f"signal_{sig.kind}", "result": action})
    return SignalResult(row.id, action, checkin_id, message)


def ingest_lines(sessions: sessionmaker[Session], lines: list[str], *, source: str, now: datetime,
                 policies: PolicySet) -> list[SignalResult]:
    """JSON lines (or one JSON array). All records are validated first; then each is applied in
    its own transaction (one bad device never loses the others)."""
    text = "\n".join(lines).strip()
    try:
        raw = json.loads(text) if text.startswith("[") else [json.loads(ln) for ln in lines if ln.strip()]
    except json.JSONDecodeError as exc:
        raise SignalError(f"JSON 格式错误（第 {exc.lineno} 行）：{exc.msg}") from exc
    records = []
    for i, r in enumerate(raw, 1):
        try:
            records.append(SignalIn.model_validate(r))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise SignalError(f"第 {i} 条记录的 {'.'.join(map(str, err['loc']))} 有误：{err['msg']}") from exc
    out = []
    for rec in records:
        with write_session(sessions) as s:
            out.append(ingest(s, rec, source=source, now=now, policies=policies))
    return out


def signals_routes(sessions: sessionmaker[Session], policies: PolicySet,
                   now: Callable[[], datetime]) -> list[web.RouteDef]:
    """``POST /api/signals`` with ``Authorization: Bearer <device token>``; no console login."""

    async def post_signal(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return _json({"error": "缺少设备令牌（Authorization: Bearer …）"}, 401)
        token_hash = hash_token(auth[7:].strip())
        try:
            body = await request.json()
            sig = SignalIn.model_validate(body)
        except (json.JSONDecodeError, ValueError) as exc:
            detail = exc.errors()[0] if isinstance(exc, ValidationError) else None
            where = ".".join(map(str, detail["loc"])) if detail else "body"
            return _json({"error": f"请求内容有误：{where}"}, 400)

        def work() -> tuple[int, dict[str, object]]:
            with write_session(sessions) as s:
                dev = s.scalar(select(DeviceToken).where(DeviceToken.device_id == sig.device_id,
                                                         DeviceToken.active.is_(True)))
                if dev is None or not hmac.compare_digest(dev.token_hash, token_hash):
                    return 401, {"error": "设备令牌无效"}
                try:
                    res = ingest(s, sig, source=f"api:{sig.device_id}", now=now(), policies=policies, device=dev)
                except SignalError as exc:
                    return 400, {"error": str(exc)}
                return 200, {"signal_id": res.signal_id, "action": res.action, "checkin_id": res.checkin_id,
                             "message": res.message}

        import asyncio

        try:
            status, payload = await asyncio.to_thread(work)
        except IntegrityError:
            status, payload = 200, {"action": "duplicate", "message": "重复上报，已忽略"}
        return _json(payload, status)

    return [web.post("/api/signals", post_signal)]


def _json(payload: dict[str, object], status: int) -> web.Response:
    return web.json_response(payload, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))
