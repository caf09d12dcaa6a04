"""The policy's target categories from the words county ledgers actually use."""

from __future__ import annotations

import re

from storage.enums import Category
from storage.ledger._text import squash_spaces, to_halfwidth

# Variant → category. 半失能 counts as 失能: the policy's monthly home visit covers both.
_NAMES: dict[str, Category] = {}
for _cat, _words in {
    Category.LIVING_ALONE: "独居 独居老人 孤寡 孤寡老人 独居孤寡 独身 孤老 单身独居",
    Category.EMPTY_NEST: "空巢 空巢老人 纯老家庭 纯老户",
    Category.LEFT_BEHIND: "留守 留守老人 农村留守老人",
    Category.DISABLED: "失能 失能老人 半失能 半失能老人 失能半失能 失能/半失能 部分失能 完全失能 失智 失智老人",
    Category.SEVERELY_DISABLED: "重残 重度残疾 重残老人 重度残疾人 一级残疾 二级残疾 一二级残疾 重度残疾老人",
    Category.BEREAVED_ONLY_CHILD: "计划生育特殊家庭 计生特殊家庭 计划生育特殊困难家庭 计生特扶 失独 失独家庭 失独老人 "
    "独生子女伤残家庭 独生子女死亡家庭 伤残独生子女家庭 计生特殊",
}.items():
    for _w in _words.split():
        _NAMES[_w] = _cat
# Code values and labels too (so an export always re-imports).
for _cat in Category:
    _NAMES[_cat.value] = _cat
    _NAMES[_cat.label] = _cat

_SPLIT = re.compile(r"[、,，;；/|\\\n+＋]+|及|和|与|兼")
_TRAILING = ("老人", "人员", "家庭", "户")


class CategoryError(ValueError):
    """Unknown category words; ``str(exc)`` names them in Chinese."""


def _lookup(word: str) -> Category | None:
    if word in _NAMES:
        return _NAMES[word]
    for suffix in _TRAILING:
        if word.endswith(suffix) and word[: -len(suffix)] in _NAMES:
            return _NAMES[word[: -len(suffix)]]
    return None


def parse_categories(cell: str) -> frozenset[Category]:
    """``"独居、失能"`` → {LIVING_ALONE, DISABLED}. Unknown words raise :class:`CategoryError`."""
    text = to_halfwidth(cell).strip()
    if not text:
        return frozenset()
    whole = _lookup(squash_spaces(text))  # "失能/半失能", "计划生育特殊家庭" before splitting
    if whole is not None:
        return frozenset({whole})
    found: set[Category] = set()
    unknown: list[str] = []
    for part in _SPLIT.split(text):
        for word in part.split():
            cat = _lookup(word)
            if cat is None:
                unknown.append(word)
            else:
                found.add(cat)
    if unknown:
        allowed = "、".join(c.label for c in Category)
        raise CategoryError(f"无法识别的老人类别：{'、'.join(unknown)}（可用：{allowed}）")
    return frozenset(found)


def format_categories(categories: frozenset[Category] | set[Category]) -> str:
    """The ledger spelling, in the enum's order: ``独居、失能``."""
    return "、".join(c.label for c in Category if c in categories)
