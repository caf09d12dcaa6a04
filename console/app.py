"""Mount the staff console (pages, JSON API, local static files) onto the application."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from console import api, pages, views, wechat_views
from console.config import ConsoleConfig
from console.web import STATE, ConsoleState, on_prepare, setup_templates
from storage.crypto import Vault

STATIC_DIR = Path(__file__).resolve().parent / "static"


def mount(
    app: web.Application,
    *,
    sessions: sessionmaker[Session],
    vault: Vault,
    now: Callable[[], datetime],
    config: ConsoleConfig,
) -> None:
    app[STATE] = ConsoleState(sessions=sessions, vault=vault, now=now, config=config)
    setup_templates(app, config.timezone)
    app.on_response_prepare.append(on_prepare)
    r = app.router
    r.add_static("/static/console/", STATIC_DIR, append_version=False)
    r.add_get("/", views.root)
    r.add_get("/login", views.login_form)
    r.add_post("/login", views.login_submit)
    r.add_post("/logout", views.logout)
    r.add_get("/escalations", views.escalation_queue)
    r.add_get("/escalations/{id}", views.escalation_detail)
    r.add_post("/escalations/{id}/ack", views.escalation_ack)
    r.add_post("/escalations/{id}/resolve", views.escalation_resolve)
    r.add_get("/elders", views.elder_search)
    r.add_get("/elders/{id}", views.elder_profile)
    r.add_post("/elders/{id}/reveal", views.elder_reveal)
    r.add_post("/elders/{id}/consent", views.elder_consent)
    r.add_post("/elders/{id}/export", views.elder_export)
    r.add_get("/elders/{id}/visit", views.visit_form)
    r.add_post("/elders/{id}/visit", views.visit_submit)
    r.add_get("/recordings/{id}", views.recording)
    r.add_get("/alerts", views.alerts_page)
    r.add_get("/ledger", pages.ledger_form)
    r.add_post("/ledger", pages.ledger_upload)
    r.add_get("/events", pages.events_page)
    r.add_post("/events/lockdown", pages.lockdown_declare)
    r.add_post("/events/{id}/end", pages.event_end)
    r.add_get("/report", pages.report_page)
    r.add_get("/report.xlsx", pages.report_xlsx)
    api.add_routes(app)
    wechat_views.add_routes(app)
