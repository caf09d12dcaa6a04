import pytest

from storage.enums import Category as C
from storage.ledger.categories import CategoryError, format_categories, parse_categories


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("独居", {C.LIVING_ALONE}),
        ("独居老人", {C.LIVING_ALONE}),
        ("孤寡", {C.LIVING_ALONE}),
        ("空巢", {C.EMPTY_NEST}),
        ("留守老人", {C.LEFT_BEHIND}),
        ("半失能", {C.DISABLED}),
        ("失能/半失能", {C.DISABLED}),
        ("重度残疾", {C.SEVERELY_DISABLED}),
        ("重残", {C.SEVERELY_DISABLED}),
        ("失独", {C.BEREAVED_ONLY_CHILD}),
        ("计生特殊家庭", {C.BEREAVED_ONLY_CHILD}),
        ("计划生育特殊家庭", {C.BEREAVED_ONLY_CHILD}),
        ("独居、失能", {C.LIVING_ALONE, C.DISABLED}),
        ("独居,失能", {C.LIVING_ALONE, C.DISABLED}),
        ("独居，重度残疾", {C.LIVING_ALONE, C.SEVERELY_DISABLED}),
        ("空巢/留守", {C.EMPTY_NEST, C.LEFT_BEHIND}),
        ("空巢；留守", {C.EMPTY_NEST, C.LEFT_BEHIND}),
        ("空巢和留守", {C.EMPTY_NEST, C.LEFT_BEHIND}),
        ("孤寡 失能", {C.LIVING_ALONE, C.DISABLED}),
        ("living_alone、disabled", {C.LIVING_ALONE, C.DISABLED}),
        ("", set()),
    ],
)
def test_names_and_separators(cell: str, expected: set[C]) -> None:
    assert parse_categories(cell) == frozenset(expected)


def test_unknown_word_named() -> None:
    with pytest.raises(CategoryError, match="低保"):
        parse_categories("独居、低保")


def test_format_round_trips() -> None:
    cats = frozenset({C.DISABLED, C.LIVING_ALONE, C.BEREAVED_ONLY_CHILD})
    assert format_categories(cats) == "独居、失能、计划生育特殊家庭"
    assert parse_categories(format_categories(cats)) == cats
