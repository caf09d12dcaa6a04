"""Pages for ledger upload, events (lockdowns, weather alerts) and the monthly report."""

from __future__ import annotations

import asyncio
import io
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy.orm import Session

from console import events, report
from console.scope import Principal, scoped_region
from console.web import page, principal, render, state
from storage.enums import RegionLevel, StaffRole
from storage.ledger.importer import LedgerImportReport, import_ledger
from storage.models.region import Region

SHANGHAI = ZoneInfo("Asia/Shanghai")
LEDGER_SUFFIXES = (".xlsx", ".csv")


def ledger_county(session: Session, me: Principal) -> tuple[bool, str | None]:
    """(may import, county code to restrict the import to). Admins: anywhere; county officers: their county."""
    if me.role is StaffRole.ADMIN:
        return True, None
    if me.role is StaffRole.COUNTY_OFFICER:
        region = session.get(Region, me.region_id)
        if region is not None and region.level is RegionLevel.COUNTY:
            return True, region.code
    return False, None


async def run_ledger_import(request: web.Request, filename: str, data: bytes, dry_run: bool) -> LedgerImportReport:
    """The CLI's importer, called with the uploaded bytes (same validator, same row errors)."""
    st, me = state(request), principal(request)
    allowed, county = await st.read(lambda s: ledger_county(s, me))
    if not allowed:
        raise web.HTTPForbidden(text="只有县级民政干部和管理员可以导入台账")
    if not filename.lower().endswith(LEDGER_SUFFIXES):
        rep = LedgerImportReport()
        from storage.ledger.validate import RowError

        rep.errors.append(RowError(None, "", "", "只支持 .xlsx 或 .csv 文件"))
        return rep
    return await asyncio.to_thread(
        import_ledger, io.BytesIO(data), sessions=st.sessions, vault=st.vault, now=st.now, county_code=county,
        dry_run=dry_run, filename=filename,
    )


@page
async def ledger_form(request: web.Request) -> web.StreamResponse:
    st, me = state(request), principal(request)
    allowed, _county = await st.read(lambda s: ledger_county(s, me))
    if not allowed:
        return render(request, "error.html", {"message": "只有县级民政干部和管理员可以导入台账"}, status=403)
    return render(request, "ledger.html", {"result": None})


@page
async def ledger_upload(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        return render(request, "ledger.html", {"result": None, "error": "请选择要上传的台账文件"}, status=400)
    data = upload.file.read()
    dry = form.get("dry_run") == "1"
    result = await run_ledger_import(request, upload.filename, data, dry)
    keep = state(request).config.upload_dir
    if keep is not None and result.written:
        keep.mkdir(parents=True, exist_ok=True)
        stamp = state(request).now().astimezone(SHANGHAI).strftime("%Y%m%d-%H%M%S")
        with tempfile.NamedTemporaryFile(dir=keep, prefix=f"{stamp}-", suffix=Path(upload.filename).suffix,
                                         delete=False) as f:
            f.write(data)
    return render(request, "ledger.html", {"result": result, "filename": upload.filename},
                  status=200 if result.ok else 422)


@page
async def events_page(request: web.Request) -> web.StreamResponse:
    st, me = state(request), principal(request)
    now = st.now()
    listed = await st.read(lambda s: events.list_events(s, me, now))
    regions = await st.read(lambda s: events.declarable_regions(s, me))
    return render(request, "events.html", {"events": listed, "regions": regions, "error": None})


def _local_dt(raw: str, label: str) -> datetime:
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=SHANGHAI)
    except ValueError as exc:
        raise events.EventError(f"{label}格式不正确：“{raw}”") from exc


@page
async def lockdown_declare(request: web.Request) -> web.StreamResponse:
    st, me = state(request), principal(request)
    form = await request.post()
    now = st.now()
    try:
        starts = _local_dt(str(form.get("starts_at") or ""), "开始时间") if form.get("starts_at") else now
        days = int(str(form.get("days") or "14"))
        ends = _local_dt(str(form.get("ends_at")), "结束时间") if form.get("ends_at") else starts + timedelta(days=days)
        code = str(form.get("region") or "")
        title = str(form.get("title") or "").strip()
        await asyncio.to_thread(events.declare_and_replan, st.sessions, me, code, title, starts, ends, now,
                                st.config.policies)
    except (events.EventError, ValueError) as exc:
        listed = await st.read(lambda s: events.list_events(s, me, now))
        regions = await st.read(lambda s: events.declarable_regions(s, me))
        return render(request, "events.html", {"events": listed, "regions": regions, "error": str(exc)}, status=400)
    raise web.HTTPSeeOther("/events")


@page
async def event_end(request: web.Request) -> web.StreamResponse:
    st, me = state(request), principal(request)
    eid = int(request.match_info["id"]) if request.match_info["id"].isdigit() else 0
    now = st.now()
    try:
        await asyncio.to_thread(events.end_and_replan, st.sessions, me, eid, now, st.config.policies)
    except events.EventNotFound as exc:
        raise web.HTTPNotFound(text=str(exc)) from exc
    except events.EventError as exc:
        return render(request, "error.html", {"message": str(exc)}, status=400)
    raise web.HTTPSeeOther("/events")


def _report_args(request: web.Request) -> tuple[str, str | None]:
    st = state(request)
    month = request.query.get("month") or report.current_month(st.now())
    return month, request.query.get("region") or None


async def build_report(request: web.Request, month: str, code: str | None) -> report.MonthlyReport:
    st, me = state(request), principal(request)
    now = st.now()

    def do(s: Session) -> report.MonthlyReport:
        region = scoped_region(s, me, code)
        if region is None:
            raise web.HTTPNotFound(text="没有这个地区（或不在您的管辖范围）")
        return report.monthly_report(s, month, region, now)

    try:
        return await st.read(do)
    except report.ReportError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from exc


@page
async def report_page(request: web.Request) -> web.StreamResponse:
    month, code = _report_args(request)
    rep = await build_report(request, month, code)
    ctx: dict[str, Any] = {"r": rep, "chart": report.chart_for(rep), "month": month, "code": code or "",
                           "months": report.previous_months(state(request).now())}
    return render(request, "report.html", ctx)


@page
async def report_xlsx(request: web.Request) -> web.StreamResponse:
    month, code = _report_args(request)
    rep = await build_report(request, month, code)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "report.xlsx"
        report.write_xlsx(rep, path)
        body = path.read_bytes()
    name = f"tanfang-report-{month}-{rep.region_code}.xlsx"
    return web.Response(body=body, headers={
        "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "Content-Disposition": f'attachment; filename="{name}"'})
