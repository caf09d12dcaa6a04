"""The administrative region tree: province / city / county / township / village."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from storage.enums import RegionLevel
from storage.models.base import Base, enum_column


class Region(Base):
    """One node. ``path`` is the materialised path of codes ("23/2301/230183/…"), so a
    subtree is ``path LIKE '<path>/%'`` and scoping stays one indexed predicate."""

    __tablename__ = "regions"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    level: Mapped[RegionLevel] = mapped_column(enum_column(RegionLevel, 16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id"), index=True)
    path: Mapped[str] = mapped_column(String(255), index=True)

    parent: Mapped[Region | None] = relationship(remote_side=[id])

    def contains(self, other: Region) -> bool:
        return other.path == self.path or other.path.startswith(self.path + "/")
