"""Phone numbers: formatting variants normalise identically; masking hides the middle digits."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.enums import PhoneKind
from storage.ledger.phones import PhoneError, normalise_phone, split_phones
from storage.masking import mask_phone


@pytest.mark.parametrize(
    ("raw", "normal", "kind"),
    [
        ("13900001234", "13900001234", PhoneKind.MOBILE),
        ("139 0000 1234", "13900001234", PhoneKind.MOBILE),
        ("139-0000-1234", "13900001234", PhoneKind.MOBILE),
        ("+86 139 0000 1234", "13900001234", PhoneKind.MOBILE),
        ("+86-13900001234", "13900001234", PhoneKind.MOBILE),
        ("008613900001234", "13900001234", PhoneKind.MOBILE),
        ("8613900001234", "13900001234", PhoneKind.MOBILE),
        ("１３９００００１２３４", "13900001234", PhoneKind.MOBILE),
        ("0451-53990001", "0451-53990001", PhoneKind.LANDLINE),
        ("0451 53990001", "0451-53990001", PhoneKind.LANDLINE),
        ("045153990001", "0451-53990001", PhoneKind.LANDLINE),
        ("(0451)53990001", "0451-53990001", PhoneKind.LANDLINE),
        ("（0451）5399 0001", "0451-53990001", PhoneKind.LANDLINE),
        ("０４５１－５３９９０００１", "0451-53990001", PhoneKind.LANDLINE),
        ("+86 451 53990001", "0451-53990001", PhoneKind.LANDLINE),
        ("010-62345678", "010-62345678", PhoneKind.LANDLINE),
        ("0453-6123456", "0453-6123456", PhoneKind.LANDLINE),
    ],
)
def test_variants(raw: str, normal: str, kind: PhoneKind) -> None:
    phone = normalise_phone(raw)
    assert (phone.number, phone.kind) == (normal, kind)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "为空"),
        ("1390000123", "11位"),
        ("139000012345", "11位"),
        ("12900001234", "13–19"),
        ("53990001", "缺少区号"),
        ("0451-5399", "座机号格式"),
        ("0451-53990001转8001", "分机"),
        ("+1 415 5550100", "中国大陆"),
        ("无", "非数字"),
        ("1.39E+10", "非数字"),
    ],
)
def test_junk_refused_with_chinese_reason(raw: str, reason: str) -> None:
    with pytest.raises(PhoneError, match=reason):
        normalise_phone(raw)


def test_split_cell_with_several_numbers() -> None:
    assert split_phones("13900001234、0451-53990001") == ["13900001234", "0451-53990001"]
    assert split_phones("13900001234，13900005678") == ["13900001234", "13900005678"]
    assert split_phones("139 0000 1234 0451 53990001") == ["139 0000 1234", "0451 53990001"]
    assert split_phones("13900001234/13900005678;13900009999") == ["13900001234", "13900005678", "13900009999"]
    assert split_phones("13900001234 5678") == ["13900001234", "5678"]  # leftover kept for the report


mobiles = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
landlines = st.tuples(
    st.sampled_from(["010", "021", "0451", "0453", "0433"]), st.from_regex(r"[2-9][0-9]{6,7}", fullmatch=True)
)


def _variants(digits: str) -> st.SearchStrategy[str]:
    def fullwidth(s: str) -> str:
        return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in s)

    return st.sampled_from([
        digits,
        f"{digits[:3]} {digits[3:7]} {digits[7:]}",
        f"{digits[:3]}-{digits[3:7]}-{digits[7:]}",
        f"+86 {digits}",
        f"+86{digits}",
        f"0086-{digits}",
        fullwidth(digits),
        f" {digits} ",
    ])


@given(mobiles.flatmap(lambda m: st.tuples(st.just(m), _variants(m))))
def test_mobile_variants_normalise_identically(pair: tuple[str, str]) -> None:
    mobile, variant = pair
    assert normalise_phone(variant).number == mobile


@given(landlines, st.sampled_from(["{a}-{n}", "{a} {n}", "{a}{n}", "({a}){n}", "+86 {a1} {n}", "{a}—{n}"]))
def test_landline_variants_normalise_identically(parts: tuple[str, str], fmt: str) -> None:
    area, local = parts
    raw = fmt.format(a=area, a1=area[1:], n=local)
    assert normalise_phone(raw).number == f"{area}-{local}"


@given(st.one_of(mobiles, landlines.map(lambda p: f"{p[0]} {p[1]}")))
def test_normalisation_is_idempotent(raw: str) -> None:
    once = normalise_phone(raw)
    assert normalise_phone(once.number) == once


@given(mobiles)
def test_masked_mobile_hides_middle_digits(mobile: str) -> None:
    masked = normalise_phone(mobile).masked
    assert masked == mask_phone(mobile)
    assert masked == mobile[:3] + "****" + mobile[-4:]  # the middle four digits are gone


@given(landlines)
def test_masked_landline_keeps_only_area_code_and_last_four(parts: tuple[str, str]) -> None:
    area, local = parts
    masked = normalise_phone(f"{area}{local}").masked
    assert masked.startswith(area + "-")
    assert masked.endswith(local[-4:])
    middle = masked[len(area) + 1 : -4]
    assert set(middle) == {"*"} and len(middle) == len(local) - 4
