"""GB 11643 ID numbers: spelling variants accepted, every single-digit error caught."""

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.enums import Sex
from storage.ledger.idcard import IdNumberError, check_digit, make_id, normalise_id, parse_id

# A published textbook example of GB 11643 (check digit X).
KNOWN_X = "11010519491231002X"


def test_known_example_with_x() -> None:
    ident = parse_id(KNOWN_X)
    assert ident.birth_date == date(1949, 12, 31)
    assert ident.sex is Sex.FEMALE
    assert ident.region_code == "110105"


@pytest.mark.parametrize(
    "spelling",
    ["11010519491231002x", "１１０１０５１９４９１２３１００２Ｘ", " 110105 19491231 002X ", "110105-19491231-002x", "１１０１０５　１９４９１２３１００２ｘ"],
)
def test_spelling_variants_normalise(spelling: str) -> None:
    assert parse_id(spelling).number == KNOWN_X
    assert normalise_id(spelling) == KNOWN_X


def test_wrong_check_digit() -> None:
    with pytest.raises(IdNumberError, match="校验位"):
        parse_id("110105194912310021")


def test_legacy_15_digits_refused_with_advice() -> None:
    with pytest.raises(IdNumberError, match="15位"):
        parse_id("230183450312002")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("", "为空"), ("2301831945", "18位"), ("23018319450312002A", "数字"), ("990183194503120025", "省份"),
     (make_id("230183", date(1945, 3, 12), 2)[:10] + "1345" + "0026", "出生日期")],
)
def test_malformed(raw: str, reason: str) -> None:
    with pytest.raises(IdNumberError, match=reason):
        parse_id(raw)


def test_future_birth_date_refused_when_today_given() -> None:
    with pytest.raises(IdNumberError, match="不合理"):
        parse_id(make_id("230183", date(2030, 1, 1), 11), today=date(2026, 1, 1))


regions = st.sampled_from(["230183", "110105", "230102", "440305", "650102"])
births = st.dates(min_value=date(1900, 1, 1), max_value=date(2020, 12, 31))
sequences = st.integers(min_value=0, max_value=999)


@given(regions, births, sequences)
def test_generated_ids_pass_and_round_trip(region: str, born: date, seq: int) -> None:
    number = make_id(region, born, seq)
    ident = parse_id(number)
    assert ident.number == number
    assert ident.birth_date == born
    assert ident.sex is (Sex.MALE if seq % 2 else Sex.FEMALE)
    assert ident.region_code == region
    # lower-case x and full-width digits are the same number
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c.lower() for c in number)
    assert parse_id(fullwidth).number == number


@given(regions, births, sequences, st.integers(min_value=0, max_value=17), st.integers(min_value=1, max_value=10))
def test_any_single_character_corruption_fails(region: str, born: date, seq: int, pos: int, delta: int) -> None:
    number = make_id(region, born, seq)
    alphabet = "0123456789X" if pos == 17 else "0123456789"
    i = alphabet.index(number[pos])
    corrupted_char = alphabet[(i + delta) % len(alphabet)]
    if corrupted_char == number[pos]:
        return
    corrupted = number[:pos] + corrupted_char + number[pos + 1 :]
    with pytest.raises(IdNumberError):
        parse_id(corrupted)


def test_check_digit_matches_make_id() -> None:
    n = make_id("230183", date(1938, 7, 1), 123)
    assert n[17] == check_digit(n[:17])
