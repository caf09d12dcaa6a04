"""``tanfang staff add USERNAME --role ROLE --region CODE [--name NAME]`` and ``staff list``.

The password is read from standard input when it is not a terminal (``echo … | tanfang staff add``),
otherwise from a hidden prompt asked twice. Only its argon2 hash is stored.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from sqlalchemy import select

from console.auth import MIN_PASSWORD_LENGTH, hash_password
from storage.enums import StaffRole
from storage.migrate import is_current
from storage.models.region import Region
from storage.models.staff import Staff
from tanfang.cli import CliError
from tanfang.context import build_context
from tanfang.settings import Settings

ROLES = [r.value for r in StaffRole]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("staff", help="工作人员账号：添加、重设密码、停用、列出")
    ss = p.add_subparsers(dest="staff_command", required=True, metavar="ACTION")
    a = ss.add_parser("add", help="添加控制台账号（密码从标准输入或提示读取）")
    a.add_argument("username")
    a.add_argument("--role", required=True, choices=ROLES, help="admin / county_officer / township_officer / visitor")
    a.add_argument("--region", required=True, help="所属行政区划代码（决定可见范围）")
    a.add_argument("--name", help="姓名（默认同用户名）")
    a.set_defaults(handler=cmd_add)
    pw = ss.add_parser("passwd", help="重设密码")
    pw.add_argument("username")
    pw.set_defaults(handler=cmd_passwd)
    d = ss.add_parser("disable", help="停用账号（并使其登录失效）")
    d.add_argument("username")
    d.set_defaults(handler=cmd_disable)
    ls = ss.add_parser("list", help="列出账号")
    ls.set_defaults(handler=cmd_list)


def read_password() -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
    else:
        password = getpass.getpass("密码：")
        if getpass.getpass("再输入一次：") != password:
            raise CliError("两次输入的密码不一致")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CliError(f"密码至少需要 {MIN_PASSWORD_LENGTH} 个字符")
    return password


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    ctx = build_context(settings)
    try:
        if not is_current(ctx.engine):
            raise CliError("数据库结构不是最新版本：请先运行 tanfang db upgrade")
        with ctx.sessions() as s:
            region = s.scalar(select(Region).where(Region.code == args.region))
            if region is None:
                raise CliError(f"行政区划代码不存在：{args.region}（先用 tanfang regions 导入区划）")
            if s.scalar(select(Staff.id).where(Staff.username == args.username)) is not None:
                raise CliError(f"用户名已存在：{args.username}")
        password = read_password()
        with ctx.sessions() as s, s.begin():
            s.add(Staff(name=args.name or args.username, role=StaffRole(args.role), region_id=region.id,
                        username=args.username, password_hash=hash_password(password), active=True))
        print(f"已添加账号 {args.username}（{StaffRole(args.role).label}，{region.name}）")
        return 0
    finally:
        ctx.close()


def cmd_passwd(args: argparse.Namespace, settings: Settings) -> int:
    ctx = build_context(settings)
    try:
        with ctx.sessions() as s:
            if s.scalar(select(Staff.id).where(Staff.username == args.username)) is None:
                raise CliError(f"没有这个用户名：{args.username}")
        password = read_password()
        with ctx.sessions() as s, s.begin():
            staff = s.scalar(select(Staff).where(Staff.username == args.username))
            assert staff is not None
            staff.password_hash = hash_password(password)
            _end_sessions(s, staff.id)
        print(f"已重设 {args.username} 的密码，原有登录已失效")
        return 0
    finally:
        ctx.close()


def _end_sessions(s: object, staff_id: int) -> None:
    from sqlalchemy import delete
    from sqlalchemy.orm import Session

    from storage.models.escalation import ConsoleSession

    assert isinstance(s, Session)
    s.execute(delete(ConsoleSession).where(ConsoleSession.staff_id == staff_id))


def cmd_disable(args: argparse.Namespace, settings: Settings) -> int:
    ctx = build_context(settings)
    try:
        with ctx.sessions() as s, s.begin():
            staff = s.scalar(select(Staff).where(Staff.username == args.username))
            if staff is None:
                raise CliError(f"没有这个用户名：{args.username}")
            staff.active = False
            _end_sessions(s, staff.id)
        print(f"已停用 {args.username}")
        return 0
    finally:
        ctx.close()


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    ctx = build_context(settings)
    try:
        with ctx.sessions() as s:
            rows = s.execute(select(Staff, Region).join(Region, Region.id == Staff.region_id)
                             .where(Staff.username.is_not(None)).order_by(Staff.username)).all()
            for staff, region in rows:
                state = "" if staff.active else "（已停用）"
                print(f"{staff.username}\t{staff.name}\t{staff.role.label}\t{region.code} {region.name}{state}")
        return 0
    finally:
        ctx.close()
