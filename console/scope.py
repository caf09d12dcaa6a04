"""Region scoping, in one place: every console/API query filters through these helpers.

A principal sees its own region and everything below it. ``path`` is the materialised region
path ("23/2301/230183/…"); "x or below" is ``path = p OR path LIKE p || '/%'`` (codes are
digits, so no LIKE wildcard can hide in them; a range predicate would depend on the collation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, or_, select, true
from sqlalchemy.orm import Session

from storage.enums import StaffRole
from storage.models.elder import Elder
from storage.models.region import Region


@dataclass(frozen=True)
class Principal:
    """The logged-in staff member, as the console sees them."""

    staff_id: int
    name: str
    role: StaffRole
    region_id: int
    region_path: str
    region_name: str

    @property
    def actor(self) -> str:
        return f"staff:{self.staff_id}"

    @property
    def is_admin(self) -> bool:
        return self.role is StaffRole.ADMIN

    @property
    def can_import(self) -> bool:
        """Ledger imports are county business (the importer is scoped to one county)."""
        return self.role in (StaffRole.ADMIN, StaffRole.COUNTY_OFFICER)

    @property
    def can_manage(self) -> bool:
        """Officers and admins import ledgers and declare events; visitors do not."""
        return self.role is not StaffRole.VISITOR


def path_in_scope(column: Any, path: str) -> ColumnElement[bool]:
    """``column`` is ``path`` or lies below it."""
    escaped = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return or_(column == path, column.like(escaped + "/%", escape="\\"))


def scope_clause(principal: Principal, path_column: Any) -> ColumnElement[bool]:
    """The scoping predicate for any region-path column (admins see everything)."""
    if principal.is_admin:
        return true()
    return path_in_scope(path_column, principal.region_path)


def elder_scope(principal: Principal) -> ColumnElement[bool]:
    """``Elder.region_id`` among the regions the principal may see (a subquery on regions)."""
    if principal.is_admin:
        return true()
    return Elder.region_id.in_(select(Region.id).where(scope_clause(principal, Region.path)))


def scoped_elder(session: Session, principal: Principal, elder_id: int) -> Elder | None:
    """The elder if it exists AND is in scope; otherwise None (callers answer 404 either way)."""
    return session.scalar(select(Elder).where(Elder.id == elder_id, elder_scope(principal)))


def scoped_region(session: Session, principal: Principal, code: str | None) -> Region | None:
    """A region by code within scope; ``None`` code means the principal's own region."""
    if not code:
        return session.get(Region, principal.region_id)
    return session.scalar(select(Region).where(Region.code == code, scope_clause(principal, Region.path)))
