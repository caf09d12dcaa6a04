"""The region tree file and the name index used to place ledger rows (pure parts)."""

import pytest

from storage.enums import RegionLevel
from storage.regions import PlaceRef, RegionFileError, RegionIndex, load_region_file, parse_region_tree
from tests.conftest import SAMPLES


def test_sample_file_levels_follow_depth() -> None:
    (root,) = load_region_file(SAMPLES / "regions.yaml")
    nodes = list(root.walk())
    assert [n.level for n in nodes[:4]] == [RegionLevel.PROVINCE, RegionLevel.CITY, RegionLevel.COUNTY, RegionLevel.TOWNSHIP]
    assert sum(n.level is RegionLevel.VILLAGE for n in nodes) == 8


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ([{"code": "23", "name": "省", "children": [{"code": "2201", "name": "市"}]}], "应以上级代码 23 开头"),
        ([{"code": "23"}], "缺少 code 或 name"),
        ([{"code": "abc", "name": "x"}], "2–12位数字"),
        ([{"code": "230183", "name": "尚志市", "level": "town"}], "未知的区划级别"),
        ({"code": "23", "name": "省", "children": [{"code": "2301", "name": "市", "level": "county"}]}, "级别与层级不符"),
        ("just text", "节点列表"),
    ],
)
def test_malformed_files_are_named(data: object, reason: str) -> None:
    with pytest.raises(RegionFileError, match=reason):
        parse_region_tree(data)


def test_a_file_may_start_below_the_province() -> None:
    (county,) = parse_region_tree([{"code": "230183", "name": "尚志市", "level": "county",
                                    "children": [{"code": "230183102", "name": "亚布力镇"}]}])
    assert county.children[0].level is RegionLevel.TOWNSHIP


def test_township_names_ambiguous_across_counties() -> None:
    index = RegionIndex(scope="全部县区")
    index.add_township(PlaceRef(1, "230183102", "新华镇"))
    index.add_township(PlaceRef(2, "230184102", "新华镇"))
    with pytest.raises(LookupError, match="--county"):
        index.township("新华镇")


def test_exact_name_wins_over_suffixless_match() -> None:
    index = RegionIndex(scope="某县")
    index.add_township(PlaceRef(1, "1", "河东乡"))
    index.add_township(PlaceRef(2, "2", "河东镇"))
    assert index.township("河东镇").code == "2"
    with pytest.raises(LookupError):
        index.township("河东")
