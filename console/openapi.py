"""The OpenAPI 3 document of the console JSON API (served at /api/openapi.json)."""

from __future__ import annotations

from typing import Any

_ERR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _op(summary: str, *, params: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None,
        ok: str = "200", csrf: bool = False, multipart: bool = False, public: bool = False,
        binary: bool = False, extra: dict[str, str] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {
        ok: {"description": "成功", "content": {"audio/wav" if binary else "application/json": {"schema": {}}}},
        "400": {"description": "参数或请求内容不正确（错误信息说明哪一项）", "content": _ERR},
        "401": {"description": "未登录", "content": _ERR},
        "404": {"description": "不存在或不在管辖范围", "content": _ERR},
    }
    if body is not None and not multipart:
        responses["415"] = {"description": "请求体不是 application/json", "content": _ERR}
    for code, desc in (extra or {}).items():
        responses[code] = {"description": desc, "content": _ERR}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    parameters = list(params or [])
    if csrf:
        parameters.append({"name": "X-CSRF-Token", "in": "header", "required": True, "schema": {"type": "string"},
                           "description": "登录时返回的 csrf_token"})
        responses["403"] = {"description": "CSRF 校验失败，或您的角色不能做这件事", "content": _ERR}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        ctype = "multipart/form-data" if multipart else "application/json"
        op["requestBody"] = {"required": True, "content": {ctype: {"schema": body}}}
    if public:
        op["security"] = []
    return op


def _path_id(desc: str) -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}, "description": desc}


def _q(name: str, desc: str, typ: str = "string", enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": typ}
    if enum:
        schema["enum"] = enum
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": desc}


_obj = lambda props, required=(): {"type": "object", "properties": props, "required": list(required)}  # noqa: E731
_s = {"type": "string"}
_b = {"type": "boolean"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "探访控制台接口", "version": "1.0",
             "description": "与控制台页面相同的操作和相同的地区权限。先 POST /api/login 取得会话和 csrf_token；"
                            "所有修改类请求须带 X-CSRF-Token 头。不在管辖范围内的对象一律返回 404。"},
    "components": {
        "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "tanfang_session"}},
        "schemas": {"Error": _obj({"error": _s}, ["error"])},
    },
    "security": [{"session": []}],
    "paths": {
        "/api/login": {"post": _op("登录", body=_obj({"username": _s, "password": _s}, ["username", "password"]),
                                   public=True, extra={"429": "登录失败次数过多，暂时锁定"})},
        "/api/logout": {"post": _op("退出", csrf=True)},
        "/api/me": {"get": _op("当前用户")},
        "/api/escalations": {"get": _op("待办事项（按截止时间排序）", params=[
            _q("status", "active（默认）或 resolved", enum=["active", "resolved"]),
            _q("severity", "级别", enum=["P1", "P2", "P3"]), _q("mine", "1 = 只看分派给我的"),
            _q("page", "页码", "integer"), _q("page_size", "每页条数（≤200）", "integer")])},
        "/api/escalations/{id}": {"get": _op("事项详情（含最近通话、处理记录）", params=[_path_id("事项 id")])},
        "/api/escalations/{id}/ack": {"post": _op("认领", params=[_path_id("事项 id")], csrf=True,
                                                  extra={"409": "当前状态不能认领"})},
        "/api/escalations/{id}/resolve": {"post": _op(
            "以转介结案（探访/电话回访结案请用登记探访接口）", params=[_path_id("事项 id")], csrf=True,
            extra={"409": "当前状态不能结案"},
            body=_obj({"kind": {"type": "string", "enum": ["referral"]}, "note": _s}, ["note"]))},
        "/api/elders": {"get": _op("查找老人（姓名、完整身份证号或电话）", params=[_q("q", "查询内容")])},
        "/api/elders/{id}": {"get": _op("老人档案（脱敏）、五知、时间线", params=[_path_id("老人 id")])},
        "/api/elders/{id}/reveal": {"post": _op(
            "查看完整身份证号或电话（写入审计日志）", params=[_path_id("老人 id")], csrf=True,
            body=_obj({"what": {"type": "string", "description": "id_number、phone:<电话id> 或 contact:<联系人id>"}},
                      ["what"]))},
        "/api/elders/{id}/visits": {"post": _op(
            "登记探访（可同时更新五知、关闭事项和本月上门任务）", params=[_path_id("老人 id")], csrf=True, ok="201",
            body=_obj({"kind": {"type": "string", "enum": ["home", "phone"]}, "visited_at": {"type": "string", "format": "date-time"},
                       "elder_seen": _b, "hazard_removed": _b, "service_connected": _b,
                       "benefit_application_started": _b, "notes": _s, "escalation_id": {"type": "integer"},
                       "close_escalation": _b, "profile_updates": {"type": "object", "additionalProperties": True}},
                      ["kind"]))},
        "/api/elders/{id}/consent": {"post": _op(
            "登记同意或撤回同意（撤回：立即取消待拨电话，并按期删除个人信息；写入审计日志）", params=[_path_id("老人 id")],
            csrf=True, extra={"409": "个人信息已删除，不能再登记"},
            body=_obj({"status": {"type": "string", "enum": ["granted", "withdrawn"]}, "note": _s}, ["status"]))},
        "/api/elders/{id}/export": {"post": _op(
            "导出老人全部个人信息（查阅复制请求，仅管理员；写入审计日志）", params=[_path_id("老人 id")], csrf=True)},
        "/api/elders/{id}/wechat-codes": {
            "get": _op("微信绑定情况（老人本人和各联系人的绑定与绑定码状态）", params=[_path_id("老人 id")]),
            "post": _op("发放微信绑定码（6位码或二维码场景值，只返回这一次；仅民政干部和管理员；写入审计日志）",
                        params=[_path_id("老人 id")], csrf=True, ok="201",
                        body=_obj({"target": {"type": "string", "description": "elder（老人本人）或 contact:<联系人id>"},
                                   "kind": {"type": "string", "enum": ["code", "scene"]}}, ["target"]))},
        "/api/elders/{id}/wechat-codes/{code_id}": {"delete": _op(
            "作废微信绑定码（仅民政干部和管理员；写入审计日志）",
            params=[_path_id("老人 id"), {"name": "code_id", "in": "path", "required": True,
                                        "schema": {"type": "integer"}, "description": "绑定码 id"}],
            csrf=True, extra={"409": "该绑定码已使用或已作废"})},
        "/api/calls/{id}/recording": {"get": _op("通话录音（写入审计日志）", params=[_path_id("通话 id")], binary=True)},
        "/api/ledger": {"post": _op("上传台账（与命令行相同的校验和导入，出错时全部不导入）", csrf=True, multipart=True, extra={"422": "台账有错误，全部未导入（逐行列出）"},
                                    body=_obj({"file": {"type": "string", "format": "binary"},
                                               "dry_run": {"type": "string", "enum": ["0", "1"]}}, ["file"]))},
        "/api/events": {"get": _op("事件（极端天气、封控）")},
        "/api/events/lockdown": {"post": _op("宣布封控", csrf=True, ok="201", body=_obj(
            {"region": {"type": "string", "description": "地区代码"}, "title": _s,
             "starts_at": {"type": "string", "format": "date-time"}, "ends_at": {"type": "string", "format": "date-time"}},
            ["region", "ends_at"]))},
        "/api/events/{id}/end": {"post": _op("提前结束封控", params=[_path_id("事件 id")], csrf=True)},
        "/api/reports/monthly": {"get": _op("月度报表", params=[_q("month", "如 2026-11"), _q("region", "地区代码")])},
        "/api/alerts": {"get": _op("发送失败的通知和我的通知")},
        "/api/openapi.json": {"get": _op("本文档", public=True)},
    },
}
