"""One demo session: the village, the WeChat stand-in, the whole application on the embedded
database, a real round of check-ins for the village elders with progress printed in Chinese as it
happens, then serving until Ctrl-C (or stopping after the round with ``exit_after_round``).

Demo check-ins are requested like a staff member's "call now" (``RequestKind.MANUAL``,
``ignore_call_window``), so the demo works at any hour; the planner is not started (it would plan
the other 44 sample elders, whose numbers lead nowhere), and the retry ladder is compressed to
20 s steps by a demo policy file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from bot.testing import WechatServerSim, new_aes_key
from console.report import current_month, monthly_report
from dialogs.engine import DialogEngine
from dialogs.script import load_scripts
from ivr.tts import PromptCache
from scheduler.config import load_policy
from scheduler.queue import Queue, RequestKind
from storage.enums import CheckInStatus, Locale, Outcome, Severity
from storage.models import Region
from storage.models.checkin import CallAttempt, CheckIn
from storage.models.elder import Contact, Elder
from storage.models.escalation import Alert, AlertStatus, Escalation
from tanfang.app import Component, build_app
from tanfang.assembly import (
    mount_console,
    mount_escalation_watchdog,
    mount_outbox,
    mount_signals,
    mount_wechat,
)
from tanfang.context import Context, build_context
from tanfang.demo import wechat as wx
from tanfang.demo.peers import free_port, have_baresip
from tanfang.demo.prompts import Spoken, prerender, script_prompts
from tanfang.demo.village import DEMO_VILLAGE, Village, Villager
from tanfang.settings import Settings
from tanfang.telephony import mount_dialer

log = logging.getLogger(__name__)
SHANGHAI = ZoneInfo("Asia/Shanghai")
COUNTY = "230183"
DEMO_POLICY = """# tanfang demo: the retry ladder compressed to seconds so a round ends in about a minute
defaults:
  retry:
    ladder: ["20s", "20s"]
    trunk_backoff: "10s"
"""
# family members bound to WeChat (elder, contact) — 陈红梅 gets the emergency alert
FAMILY = (("陈建国", "陈红梅"), ("张永贵", "张立新"), ("赵善姬", "赵雪梅"))
RESULT_LABELS = {"answered": "接通", "busy": "占线", "no_answer": "无人接听", "rejected": "拒接",
                 "not_found": "空号", "machine": "答录机", "announcement": "运营商提示音", "timeout": "线路超时",
                 "trunk_error": "线路故障"}
TERMINAL = (CheckInStatus.DONE, CheckInStatus.UNREACHED, CheckInStatus.CANCELLED)


@dataclass
class ElderResult:
    name: str
    script: str
    status: CheckInStatus
    outcome: Outcome | None
    attempts: int  # failed attempts counted by the retry ladder
    calls: int = 0  # calls placed (CallAttempt rows)


@dataclass
class DemoResult:
    url: str
    elders: dict[str, ElderResult] = field(default_factory=dict)
    escalations: list[tuple[str, Severity, str]] = field(default_factory=list)  # elder, severity, reason
    wechat: list[wx.SentMessage] = field(default_factory=list)
    contact_calls: list[tuple[str, CheckInStatus, bool]] = field(default_factory=list)  # contact, status, accepted
    visited: int = 0
    total: int = 0
    finished: bool = False  # the round ended (not stopped or timed out)


def quiet_console_logs(path: Path) -> None:
    """The terminal shows the demo's progress; the full INFO log goes to ``path``."""
    root = logging.getLogger()
    streams = [h for h in root.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    if any(getattr(h, "_tanfang_demo", False) for h in root.handlers):
        return
    fh = logging.FileHandler(path, encoding="utf-8")
    fh._tanfang_demo = True  # type: ignore[attr-defined]
    if streams:
        for f in streams[0].filters:
            fh.addFilter(f)
        fh.setFormatter(streams[0].formatter)
    root.addHandler(fh)
    for h in streams:
        h.setLevel(logging.WARNING)


async def prerender_village(ctx: Context, prompts: PromptCache, villagers: tuple[Villager, ...]) -> int:
    s = ctx.settings
    engine = DialogEngine(load_scripts())
    spoken: list[Spoken] = []
    with ctx.sessions() as db:
        for v in villagers:
            if v.elder:
                elder = db.scalars(select(Elder).where(Elder.name == v.name)).first()
                if elder is None:
                    continue
                spoken += script_prompts(engine, v, locale=elder.locale, sex=elder.sex, tts_rate=s.tts_rate,
                                         hotline=s.hotline, service_name=s.service_name)
            else:
                of = next((e for e, c in FAMILY if c == v.name), None)
                spoken += script_prompts(engine, v, locale=Locale.ZH, sex=None, tts_rate=s.tts_rate,
                                         hotline=s.hotline, service_name=s.service_name, contact_of=of)
    return await prerender(prompts, spoken)


def demo_settings(settings: Settings, village: Village, api_base: str, port: int) -> Settings:
    demo_dir = settings.data_dir / "demo"
    policy = demo_dir / "policy.yaml"
    policy.write_text(DEMO_POLICY, encoding="utf-8")
    return settings.model_copy(update={
        "policy_file": policy, "port": port,
        "sip_dial_template": village.dial_plan().template, "sip_trunk": None, "sip_local_port": free_port(),
        "sip_ring_timeout_s": 10.0, "line_capacity": 8, "shutdown_grace_s": 5.0, "duty_line": None,
        "wechat_appid": wx.APPID, "wechat_secret": wx.SECRET, "wechat_token": wx.new_token(),
        "wechat_aes_key": new_aes_key(), "wechat_mode": "safe", "wechat_api_base": api_base,
        "wechat_template_alert": wx.TEMPLATE_ALERT, "public_url": f"http://{settings.host}:{port}",
    })


class Progress:
    """Reads the round's state from the database and says what changed, in Chinese."""

    def __init__(self, ctx: Context, checkins: dict[int, Villager], log_path: Path, say: Callable[[str], None], *,
                 since_checkin: int, since_escalation: int) -> None:
        self.ctx = ctx
        self.checkins = checkins
        self.log_path = log_path
        self.say = say
        self.since_checkin = since_checkin
        self.since_escalation = since_escalation
        self.seen: dict[int, tuple[CheckInStatus, int]] = {}
        self.seen_escalations: set[int] = set()
        self.seen_messages = 0
        self.names: dict[str, str] = {}

    def _t(self) -> str:
        return f"[{self.ctx.now().astimezone(SHANGHAI):%H:%M:%S}]"

    def poll(self) -> bool:
        """Print what is new; True when the round is over (all settled, alerts delivered)."""
        settled = True
        with self.ctx.sessions() as s:
            contact_rows = s.scalars(select(CheckIn).where(CheckIn.kind == "emergency_contact",
                                                           CheckIn.id > self.since_checkin)).all()
            rows = [s.get(CheckIn, cid) for cid in self.checkins] + list(contact_rows)
            for row in rows:
                if row is None:
                    continue
                state = (row.status, row.attempts)
                if self.seen.get(row.id) != state:
                    self.seen[row.id] = state
                    self.say(f"{self._t()} {self._describe(s, row)}")
                settled = settled and row.status in TERMINAL
            for esc in s.scalars(select(Escalation).where(Escalation.id > self.since_escalation)):
                if esc.id not in self.seen_escalations:
                    self.seen_escalations.add(esc.id)
                    name = esc.elder.name if esc.elder else "?"
                    extra = "，已通知家属并开始呼叫紧急联系人" if esc.severity is Severity.P1 else ""
                    self.say(f"{self._t()}   ⚠ 预警 {esc.severity.value}（{esc.severity.label}）{name}：{esc.reason}{extra}")
            pending = s.scalar(select(func.count()).select_from(Alert).where(
                Alert.status == AlertStatus.PENDING, Alert.channel == "wechat")) or 0
        sent = wx.read_sent(self.log_path)
        if len(sent) > self.seen_messages:
            self.names = wx.names_by_openid(self.ctx)
            for m in sent[self.seen_messages:]:
                who = self.names.get(m.openid, m.openid)
                self.say(f"{self._t()}   ✉ 微信{m.kind} → {who}：{m.text[:70]}")
            self.seen_messages = len(sent)
        return settled and pending == 0

    def _describe(self, s: Session, row: CheckIn) -> str:
        if row.kind == "emergency_contact":
            contact = s.get(Contact, (row.dialog_flags or {}).get("contact_id"))
            who = f"紧急联系人 {contact.name}（{contact.relation}）" if contact else "紧急联系人"
        else:
            v = self.checkins[row.id]
            who = v.name
        last = s.scalars(select(CallAttempt).where(CallAttempt.checkin_id == row.id)
                         .order_by(CallAttempt.id.desc()).limit(1)).first()
        st = row.status
        if st is CheckInStatus.DIALING:
            return f"☎ 正在拨打 {who}（第 {row.attempts + 1} 次）"
        if st is CheckInStatus.DUE:
            return f"… {who}：排队等待拨打"
        if last is None:
            return f"{who}：{st.label}"
        result = RESULT_LABELS.get(last.result or "", last.result or "")
        if last.result == "answered" and not last.digits and not last.intents and (last.talk_seconds or 0) < 8:
            result = "接通后对方挂断"
        if st is CheckInStatus.RETRY_WAIT:
            wait = max(0, int((row.next_attempt_at - self.ctx.now()).total_seconds()))
            return f"  {who}：{result} → {wait} 秒后重拨（已拨 {row.attempts} 次）"
        if st is CheckInStatus.UNREACHED:
            return f"✗ {who}：{result}，连续 {row.attempts} 次未联系上 → 未联系上，转人工上门探访"
        if st is CheckInStatus.DONE:
            if row.kind == "emergency_contact":
                accepted = bool((last.dialog_result or {}).get("accepted"))
                return f"✓ {who}：接通，{'按1，表示马上去处理' if accepted else '未能前往'}"
            said = [t.get("text", "") for t in (last.transcript or []) if t.get("who") == "elder" and t.get("text")]
            heard = "、".join(f"「{x}」" for x in said[:6]) or "（没有回答）"
            outcome = row.outcome.label if row.outcome else "—"
            return f"✓ {who}：{result} {last.talk_seconds or 0:.0f} 秒，回答 {heard} → 结果：{outcome}"
        return f"{who}：{st.label}"


def _elder_ids(ctx: Context, villagers: list[Villager]) -> dict[str, int]:
    with ctx.sessions() as s:
        county = s.scalar(select(Region).where(Region.code == COUNTY))
        out: dict[str, int] = {}
        for v in villagers:
            eid = s.scalar(select(Elder.id).join(Region, Region.id == Elder.region_id)
                           .where(Elder.name == v.name, Region.path.like(f"{county.path if county else COUNTY}%")))
            if eid is None:
                raise RuntimeError(f"示例台帐中没有老人 {v.name}：请先运行 tanfang demo --no-serve 导入示例数据")
            out[v.name] = eid
        return out


def _max_id(ctx: Context, column: InstrumentedAttribute[int]) -> int:
    with ctx.sessions() as s:
        return int(s.scalar(select(func.max(column))) or 0)


def collect_result(ctx: Context, url: str, checkins: dict[int, Villager], *, since_checkin: int,
                   since_escalation: int, log_path: Path) -> DemoResult:
    result = DemoResult(url=url)
    with ctx.sessions() as s:
        for cid, v in checkins.items():
            row = s.get(CheckIn, cid)
            if row is not None:
                calls = s.scalar(select(func.count()).select_from(CallAttempt).where(CallAttempt.checkin_id == cid))
                result.elders[v.name] = ElderResult(v.name, v.script, row.status, row.outcome, row.attempts, calls or 0)
        for esc in s.scalars(select(Escalation).where(Escalation.id > since_escalation).order_by(Escalation.id)):
            result.escalations.append((esc.elder.name, esc.severity, esc.reason))
        for row in s.scalars(select(CheckIn).where(CheckIn.kind == "emergency_contact", CheckIn.id > since_checkin)):
            contact = s.get(Contact, (row.dialog_flags or {}).get("contact_id"))
            last = s.scalars(select(CallAttempt).where(CallAttempt.checkin_id == row.id)
                             .order_by(CallAttempt.id.desc()).limit(1)).first()
            accepted = bool(last and (last.dialog_result or {}).get("accepted"))
            result.contact_calls.append((contact.name if contact else "?", row.status, accepted))
        county = s.scalar(select(Region).where(Region.code == COUNTY))
        if county is not None:
            report = monthly_report(s, current_month(ctx.now()), county, ctx.now())
            result.visited, result.total = report.overall.visited, report.overall.total
    result.wechat = wx.read_sent(log_path)
    return result


async def run_demo(settings: Settings, *, password: str, user: str, exit_after_round: bool = False,
                   round_timeout_s: float = 240.0, say: Callable[[str], None] = print,
                   stop: asyncio.Event | None = None) -> DemoResult:
    """The demo session (see the module docstring). ``stop`` ends it early (Ctrl-C sets it)."""
    if not have_baresip():
        raise RuntimeError("没有找到 baresip（或其 ctrl_tcp 模块）：请先运行 bash scripts/setup.sh")
    stop = stop or asyncio.Event()
    demo_dir = settings.data_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    log_path = demo_dir / "wechat.jsonl"
    log_path.write_text("", encoding="utf-8")
    port = settings.port
    url = f"http://{settings.host}:{port}/"

    quiet_console_logs(demo_dir / "tanfang.log")
    fake = wx.DemoWechatApi(wx.APPID, wx.SECRET, log_path=log_path)
    prompts = PromptCache(settings.prompts_dir, default_rate=settings.tts_rate)
    village = Village(demo_dir / "village", prompts)
    runner: web.AppRunner | None = None
    ctx: Context | None = None
    try:
        api_base = await fake.start()
        say(f"✓ 微信接口替身已启动：{api_base}（消息不会发往真正的微信）")
        say("… 正在启动演示村的电话（baresip，127.0.0.1）：")
        await asyncio.to_thread(village.start, lambda p: say(
            f"   ☏ {p.villager.name} {p.villager.number[:3]}****{p.villager.number[-4:]} → {p.peer.uri}：{p.villager.script}"))
        dsettings = demo_settings(settings, village, api_base, port)
        ctx = build_context(dsettings)
        say("… 正在用 espeak-ng 合成通话提示音（只在第一次运行时合成，之后从缓存读取）")
        new = await prerender_village(ctx, prompts, village.villagers)
        say(f"✓ 提示音已就绪（新合成 {new} 条）")
        components: list[Component] = [mount_signals, mount_console, mount_wechat, mount_outbox, mount_escalation_watchdog,
                      partial(mount_dialer, plan=village.dial_plan()), wx.mount_demo_wechat_page(log_path)]
        app = build_app(ctx, components)
        say("… 正在启动服务（首次运行要训练意图模型、加载朝鲜语语音识别模型，约需半分钟）")
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, port)
        try:
            await site.start()
        except OSError as exc:
            raise RuntimeError(f"端口 {port} 已被占用：请关闭占用它的程序，或用 tanfang demo --port 8090 换一个端口") from exc
        say(f"✓ 服务已启动：{url}（控制台、接口、微信回调、外呼、预警值守；演示不启动自动计划）")

        sim = WechatServerSim(dsettings.wechat_token or "", wx.APPID, dsettings.wechat_aes_key, "safe")
        async with aiohttp.ClientSession() as http:
            binder = wx.FamilyBinder(ctx, f"http://127.0.0.1:{port}/wechat", sim, http)
            for elder, contact in FAMILY:
                reply = await binder.bind(elder, contact, wx.demo_openid(contact))
                say(f"✓ 家属 {contact}（{elder}）用绑定码 + 手机后四位在微信里绑定：{reply.splitlines()[0]}")

        villagers = [v for v in DEMO_VILLAGE if v.elder]
        ids = await asyncio.to_thread(_elder_ids, ctx, villagers)
        since_checkin = await asyncio.to_thread(_max_id, ctx, CheckIn.id)
        since_escalation = await asyncio.to_thread(_max_id, ctx, Escalation.id)
        queue = Queue(ctx.sessions, load_policy(dsettings.policy_file))
        checkins: dict[int, Villager] = {}
        now = ctx.now()
        for v in villagers:
            req = await asyncio.to_thread(queue.request_call, ids[v.name], RequestKind.MANUAL, now,
                                          reason="演示：立即探访", source="demo", ignore_call_window=True)
            checkins[req.id] = v
        say(f"\n▶ 开始一轮探访：{len(checkins)} 位老人（现在 {now.astimezone(SHANGHAI):%H:%M}；"
            "演示的探访不受拨打时段限制，重拨间隔缩短为 20 秒，连续 3 次未接通即转人工）\n")

        progress = Progress(ctx, checkins, log_path, say, since_checkin=since_checkin,
                            since_escalation=since_escalation)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + round_timeout_s
        finished = False
        while not stop.is_set() and loop.time() < deadline:
            if await asyncio.to_thread(progress.poll):
                finished = True
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        result = await asyncio.to_thread(partial(collect_result, ctx, url, checkins, since_checkin=since_checkin,
                                                 since_escalation=since_escalation, log_path=log_path))
        result.finished = finished
        if finished:
            say_summary(result, say)
        elif not stop.is_set():
            say(f"\n本轮在 {round_timeout_s:.0f} 秒内没有全部结束（见上面的进度）；服务继续运行。")
        say(f"\n去哪里看：\n  控制台      {url}   账号 {user}   密码 {password}\n"
            f"  预警队列    {url}escalations\n  微信消息    {url}demo/wechat（演示专用页面）\n"
            f"  月度报告    {url}report\n  健康/指标   {url}healthz   {url}metrics\n")
        if not exit_after_round and not stop.is_set():
            say("演示服务仍在运行，按 Ctrl-C 停止（会挂断通话、关闭演示村的电话和微信替身）。")
            await stop.wait()
        return result
    finally:
        say("… 正在停止：结束通话、关闭服务、演示村电话和微信替身")
        if runner is not None:
            await runner.cleanup()
        with contextlib.suppress(Exception):
            await fake.stop()
        await asyncio.to_thread(village.stop)
        if ctx is not None:
            ctx.close()
        left = village.alive()
        say("✓ 已全部停止" if not left else f"仍有进程未退出：{left}")


def say_summary(r: DemoResult, say: Callable[[str], None]) -> None:
    say("\n■ 本轮探访结果")
    for e in r.elders.values():
        outcome = e.outcome.label if e.outcome else e.status.label
        say(f"  {e.name:<4} {outcome:<6} 拨打 {e.calls} 次  （{e.script}）")
    for name, status, accepted in r.contact_calls:
        say(f"  紧急联系人 {name}：{status.label}{'，已确认马上去处理' if accepted else ''}")
    sev: dict[str, int] = {}
    for _n, s, _r in r.escalations:
        sev[s.value] = sev.get(s.value, 0) + 1
    say("■ 生成预警：" + ("，".join(f"{k} × {v}" for k, v in sorted(sev.items())) or "无"))
    say(f"■ 微信消息：{len(r.wechat)} 条（打开 {r.url}demo/wechat 查看）")
    say(f"■ 本月探访报告（尚志市）：已探访 {r.visited} / {r.total} 位老人")


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def main(settings: Settings, *, password: str, user: str, exit_after_round: bool) -> DemoResult:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    return await run_demo(settings, password=password, user=user, exit_after_round=exit_after_round, stop=stop)
