"""The region tree file (YAML), its idempotent import, and name look-ups for the ledger.

File format (levels follow depth: province → city → county → township → village; every
child's code starts with its parent's code)::

    - code: "23"
      name: 黑龙江省
      children:
        - code: "2301"
          name: 哈尔滨市
          children:
            - code: "230183"
              name: 尚志市
              children:
                - code: "230183102"
                  name: 亚布力镇
                  children:
                    - {code: "230183102201", name: 青云村}

A node may state ``level:`` explicitly (it must then agree with its depth below its parent, so
a file may start at a city or county whose ancestors are already in the database).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.enums import RegionLevel
from storage.models.region import Region

_LEVELS = list(RegionLevel)
_CODE = re.compile(r"^\d{2,12}$")


class RegionFileError(ValueError):
    """The region file is malformed; the message (Chinese) names the node."""


@dataclass
class RegionNode:
    code: str
    name: str
    level: RegionLevel
    children: list[RegionNode] = field(default_factory=list)
    parent_code: str | None = None

    def walk(self) -> Iterator[RegionNode]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True)
class RegionImportResult:
    created: int
    updated: int
    unchanged: int


def parse_region_tree(data: Any, *, parent_code: str | None = None, level: RegionLevel | None = None) -> list[RegionNode]:
    """Turn the loaded YAML (a list of nodes, or one node) into checked :class:`RegionNode` s."""
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise RegionFileError("区划文件应是节点列表（每个节点有 code、name，可有 children）")
    nodes: list[RegionNode] = []
    for item in data:
        if not isinstance(item, dict) or "code" not in item or "name" not in item:
            raise RegionFileError(f"区划节点缺少 code 或 name：{item!r}")
        code, name = str(item["code"]).strip(), str(item["name"]).strip()
        if not _CODE.match(code):
            raise RegionFileError(f"区划代码应为2–12位数字：{name}（{code}）")
        if parent_code is not None and not code.startswith(parent_code):
            raise RegionFileError(f"下级区划代码应以上级代码 {parent_code} 开头：{name}（{code}）")
        own = item.get("level")
        try:
            node_level = RegionLevel(own) if own else (level or RegionLevel.PROVINCE)
        except ValueError:
            raise RegionFileError(f"未知的区划级别 {own!r}：{name}（{code}）") from None
        if level is not None and node_level is not level:
            raise RegionFileError(f"区划级别与层级不符：{name}（{code}）应为{level.label}")
        children_data = item.get("children") or []
        if children_data and node_level is RegionLevel.VILLAGE:
            raise RegionFileError(f"村/社区下不能再有下级：{name}（{code}）")
        child_level = _LEVELS[node_level.depth + 1] if node_level is not RegionLevel.VILLAGE else None
        node = RegionNode(code, name, node_level, parent_code=parent_code)
        node.children = parse_region_tree(children_data, parent_code=code, level=child_level) if children_data else []
        nodes.append(node)
    return nodes


def load_region_file(path: Path) -> list[RegionNode]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RegionFileError(f"无法读取区划文件 {path.name}：{exc}") from exc
    nodes = parse_region_tree(data)
    codes = [n.code for root in nodes for n in root.walk()]
    dupes = sorted({c for c in codes if codes.count(c) > 1})
    if dupes:
        raise RegionFileError(f"区划代码重复：{'、'.join(dupes)}")
    return nodes


def import_regions(session: Session, roots: Iterable[RegionNode]) -> RegionImportResult:
    """Insert or update every node by code (idempotent). The caller owns the transaction."""
    existing = {r.code: r for r in session.scalars(select(Region))}
    created = updated = unchanged = 0
    for root in roots:
        for node in root.walk():
            parent: Region | None = None
            if node.parent_code is not None:
                parent = existing[node.parent_code]
            elif node.level is not RegionLevel.PROVINCE:
                parent = _existing_parent(existing, node)
            path = f"{parent.path}/{node.code}" if parent else node.code
            region = existing.get(node.code)
            if region is None:
                region = Region(code=node.code, name=node.name, level=node.level, parent=parent, path=path)
                session.add(region)
                existing[node.code] = region
                created += 1
                continue
            changed = (region.name, region.level, region.path) != (node.name, node.level, path) or (
                region.parent_id != (parent.id if parent else None)
            )
            if changed:
                region.name, region.level, region.parent, region.path = node.name, node.level, parent, path
                updated += 1
            else:
                unchanged += 1
        session.flush()
    return RegionImportResult(created, updated, unchanged)


def _existing_parent(existing: dict[str, Region], node: RegionNode) -> Region:
    want = _LEVELS[node.level.depth - 1]
    candidates = [r for c, r in existing.items() if node.code.startswith(c) and r.level is want]
    if len(candidates) != 1:
        raise RegionFileError(f"找不到 {node.name}（{node.code}）的上级{want.label}：请先导入上级区划")
    return candidates[0]


def list_regions(session: Session, under: str | None = None) -> list[Region]:
    """Regions in tree order (by path), optionally only the subtree of code ``under``."""
    stmt = select(Region).order_by(Region.path)
    if under:
        root = session.scalar(select(Region).where(Region.code == under))
        if root is None:
            return []
        stmt = stmt.where((Region.path == root.path) | Region.path.like(root.path + "/%"))
    return list(session.scalars(stmt))


# -- name look-up for ledger rows ----------------------------------------------------------

_SUFFIXES = ("街道办事处", "村民委员会", "居民委员会", "村委会", "居委会", "街道", "社区", "镇", "乡", "村")


def _name_key(name: str) -> str:
    """Compare names without spaces and without a trailing 镇/乡/街道/村/社区/委员会."""
    n = "".join(name.split())
    for suffix in _SUFFIXES:
        if n.endswith(suffix) and len(n) > len(suffix):
            return n[: -len(suffix)]
    return n


@dataclass(frozen=True)
class PlaceRef:
    region_id: int
    code: str
    name: str


@dataclass
class RegionIndex:
    """Township and village names of one county (or of all counties), for matching ledger rows.

    Pure data: built once from the database (:func:`load_region_index`) or by hand in tests.
    """

    scope: str  # e.g. "尚志市" or "全部县区" — named in error messages
    townships: dict[str, list[PlaceRef]] = field(default_factory=dict)  # key → refs
    villages: dict[tuple[str, str], list[PlaceRef]] = field(default_factory=dict)  # (township code, key)

    def add_township(self, ref: PlaceRef) -> None:
        refs = self.townships.setdefault(_name_key(ref.name), [])
        if ref.name in (r.name for r in refs):
            refs.insert(0, ref)
        else:
            refs.append(ref)

    def add_village(self, township_code: str, ref: PlaceRef) -> None:
        self.villages.setdefault((township_code, _name_key(ref.name)), []).append(ref)

    def township(self, name: str) -> PlaceRef:
        """The township called ``name``; :class:`LookupError` with a Chinese reason if none or several."""
        refs = self.townships.get(_name_key(name), [])
        exact = [r for r in refs if r.name == "".join(name.split())]
        refs = exact or refs
        if not refs:
            raise LookupError(f"{self.scope}没有名为“{name}”的乡镇（街道）")
        if len(refs) > 1:
            raise LookupError(f"乡镇名称“{name}”在多个县区都有，请用 --county 指定县区代码")
        return refs[0]

    def village(self, township: PlaceRef, name: str) -> PlaceRef:
        refs = self.villages.get((township.code, _name_key(name)), [])
        exact = [r for r in refs if r.name == "".join(name.split())]
        refs = exact or refs
        if not refs:
            raise LookupError(f"{township.name}没有名为“{name}”的村（社区）")
        if len(refs) > 1:
            raise LookupError(f"{township.name}有多个名为“{name}”的村（社区）")
        return refs[0]


def load_region_index(session: Session, county_code: str | None = None) -> RegionIndex:
    """Townships and villages under ``county_code`` (or everywhere). ``LookupError`` if the
    county is unknown or no region tree was imported."""
    scope_path: str | None = None
    scope = "全部县区"
    if county_code:
        county = session.scalar(select(Region).where(Region.code == county_code))
        if county is None:
            raise LookupError(f"没有代码为 {county_code} 的县区：请先用 tanfang regions import 导入区划")
        scope_path, scope = county.path, county.name
    stmt = select(Region.id, Region.code, Region.name, Region.level, Region.parent_id).where(
        Region.level.in_([RegionLevel.TOWNSHIP, RegionLevel.VILLAGE])
    )
    if scope_path:
        stmt = stmt.where(Region.path.like(scope_path + "/%"))
    rows = session.execute(stmt).all()
    index = RegionIndex(scope=scope)
    by_id: dict[int, PlaceRef] = {}
    for rid, code, name, level, _parent in rows:
        if level is RegionLevel.TOWNSHIP:
            ref = PlaceRef(rid, code, name)
            by_id[rid] = ref
            index.add_township(ref)
    for rid, code, name, level, parent in rows:
        if level is RegionLevel.VILLAGE and parent in by_id:
            index.add_village(by_id[parent].code, PlaceRef(rid, code, name))
    if not index.townships:
        raise LookupError(f"{scope}下还没有乡镇区划：请先用 tanfang regions import 导入区划文件")
    return index
