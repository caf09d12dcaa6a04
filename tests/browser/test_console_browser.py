"""The console in a real Chromium (Debian's, driven by Playwright): log in, see the queue, open an
escalation, play its recording, acknowledge, resolve with a home visit, see the report change.
Screenshots go to artifacts/console/."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from console.app import mount
from console.config import ConsoleConfig
from scheduler.escalations import EscalationSpec, Source, create_from_triage
from storage.crypto import Vault
from storage.db import make_engine, make_session_factory
from storage.enums import EscalationStatus, Severity
from storage.migrate import upgrade
from storage.models.checkin import CallAttempt
from storage.models.elder import Elder
from storage.models.escalation import AuditLog, Escalation
from tests.integration.console.world import PASSWORD, World, build_world

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]


class Clock:
    def __init__(self) -> None:
        self.t = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture
def db(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    upgrade(engine)
    return make_session_factory(engine)


@pytest.fixture
def scene(db: sessionmaker[Session], vault: Vault, tmp_path: Path) -> tuple[World, int, Path, Clock]:
    if not shutil.which("espeak-ng") or not Path(CHROMIUM).exists():
        pytest.skip("需要 espeak-ng 和 /usr/bin/chromium")
    clock = Clock()
    rec_dir = tmp_path / "recordings"
    rec_dir.mkdir()
    subprocess.run(["espeak-ng", "-v", "cmn", "-w", str(rec_dir / "call1.wav"), "我有点头晕，暖气也不热"],
                   check=True, capture_output=True, timeout=30)
    world = build_world(db, vault, clock() - timedelta(days=90))
    with db() as s, s.begin():
        elder = s.get(Elder, world.elders["zhang"])
        assert elder is not None
        call = CallAttempt(elder_id=elder.id, started_at=clock() - timedelta(minutes=5), channel="phone",
                           recording_path="call1.wav", target_masked="139****0001",
                           transcript=[{"who": "system", "text": "大娘您好，最近身体咋样？"},
                                       {"who": "elder", "text": "我有点头晕，暖气也不热", "intent": "unwell"}])
        s.add(call)
        s.flush()
        esc = create_from_triage(s, elder, EscalationSpec(Severity.P2, "身体不适：头晕；暖气不热"),
                                 Source.call(call.id), clock())
        esc_id = esc.id
    return world, esc_id, rec_dir, clock


@pytest.fixture
async def server(db: sessionmaker[Session], vault: Vault, scene: tuple[World, int, Path, Clock]) -> AsyncIterator[str]:
    _world, _esc, rec_dir, clock = scene
    app = web.Application()
    mount(app, sessions=db, vault=vault, now=clock, config=ConsoleConfig(recordings_dir=rec_dir))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_officer_works_an_escalation_in_chromium(server: str, db: sessionmaker[Session],
                                                       scene: tuple[World, int, Path, Clock]) -> None:
    from playwright.async_api import async_playwright

    _world, esc_id, _rec, _clock = scene
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(f"{server}/escalations")
            assert "/login" in page.url
            await page.fill("input[name=username]", "jia")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/escalations")
            row = page.locator(f"tr[data-id='{esc_id}']")
            await row.wait_for()
            assert "张桂兰" in await row.inner_text()
            await page.screenshot(path=str(ARTIFACTS / "1-queue.png"), full_page=True)

            await page.goto(f"{server}/report")
            before = await page.inner_text("#visit-rate")

            await page.goto(f"{server}/escalations")
            await row.locator("a").click()
            await page.wait_for_url(f"**/escalations/{esc_id}")
            assert "暖气也不热" in await page.inner_text("ol.transcript")
            audio = page.locator("audio.recording")
            await audio.wait_for()
            played = await audio.evaluate(
                """a => new Promise((ok, fail) => {
                    a.addEventListener('timeupdate', () => { if (a.currentTime > 0.2) ok(a.currentTime); });
                    a.addEventListener('error', () => fail('audio error ' + (a.error && a.error.code)));
                    a.play().catch(e => fail(String(e)));
                })""")
            assert played > 0.2
            assert await audio.evaluate("a => a.duration") > 1.0
            await page.screenshot(path=str(ARTIFACTS / "2-escalation.png"), full_page=True)

            await page.click("#ack")
            await page.wait_for_url(f"**/escalations/{esc_id}")
            assert await page.inner_text("#esc-status") == "已认领"

            await page.click("#visit-link")
            await page.wait_for_url("**/visit?escalation=*")
            await page.check("input[name=hazard_removed]")
            await page.fill("input[name=home_hazards]", "暖气管堵塞")
            await page.fill("#notes", "上门查看，老人头晕已缓解，已联系村里修暖气")
            await page.screenshot(path=str(ARTIFACTS / "3-visit-form.png"), full_page=True)
            await page.click("#save-visit")
            await page.wait_for_url(f"**/escalations/{esc_id}")
            assert await page.inner_text("#esc-status") == "已解决"
            await page.screenshot(path=str(ARTIFACTS / "4-resolved.png"), full_page=True)

            await page.goto(f"{server}/report")
            after = await page.inner_text("#visit-rate")
            assert (before, after) == ("0.0%", "50.0%")  # 甲镇: 张桂兰 visited, 李秀英 not yet
            assert await page.locator("svg.chart rect.bar").count() >= 1
            await page.screenshot(path=str(ARTIFACTS / "5-report.png"), full_page=True)
            assert not [e for e in errors if "Content Security Policy" in e], errors
        finally:
            await browser.close()
    with db() as s:
        esc = s.get(Escalation, esc_id)
        assert esc is not None and esc.status is EscalationStatus.RESOLVED
        actions = s.scalars(select(AuditLog.action)).all()
        assert "play_recording" in actions
