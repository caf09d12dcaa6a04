"""Field encryption and masking: personal numbers never leave in clear text unless revealed."""

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.crypto import Vault, VaultError, generate_secret
from storage.masking import MaskingFilter, mask_id, mask_phone, mask_text


def test_round_trip_and_random_nonce(vault: Vault) -> None:
    a, b = vault.encrypt("13900001234"), vault.encrypt("13900001234")
    assert a != b  # random nonce: equal plaintexts do not look equal at rest
    assert vault.decrypt(a) == vault.decrypt(b) == "13900001234"
    assert b"13900001234" not in a


def test_blind_index_is_keyed(vault: Vault) -> None:
    other = Vault(generate_secret())
    assert vault.blind_index("230183194503121234") == vault.blind_index("230183194503121234")
    assert vault.blind_index("230183194503121234") != other.blind_index("230183194503121234")


def test_wrong_key_is_a_clear_error(vault: Vault) -> None:
    token = vault.encrypt("x")
    with pytest.raises(VaultError, match="密钥"):
        Vault(generate_secret()).decrypt(token)
    with pytest.raises(VaultError):
        vault.decrypt(b"junk")


def test_short_or_garbage_secret_refused() -> None:
    with pytest.raises(VaultError, match="太短"):
        Vault("c2hvcnQ=")


def test_masks() -> None:
    assert mask_id("23018319450312123X") == "2301**********123X"
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("0451-86123456") == "0451-****3456"


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_mask_text_hides_the_middle_of_every_mobile(number: str) -> None:
    out = mask_text(f"电话{number}，请回电")
    assert number not in out
    assert number[3:7] not in out.replace(number[-4:], "")


@given(st.from_regex(r"[1-6][0-9]{5}(19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9])[0-9]{3}[0-9X]", fullmatch=True))
def test_mask_text_hides_id_numbers(id_number: str) -> None:
    out = mask_text(f"身份证号 {id_number} 已登记")
    assert id_number not in out
    assert id_number[6:14] not in out


def test_logging_filter_masks_arguments(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tanfang.test.mask")
    handler_filter = MaskingFilter()
    logger.addFilter(handler_filter)
    try:
        with caplog.at_level(logging.INFO, logger="tanfang.test.mask"):
            logger.info("calling %s for %s", "13900001234", "23018319450312123X")
    finally:
        logger.removeFilter(handler_filter)
    assert "13900001234" not in caplog.text
    assert "23018319450312123X" not in caplog.text
    assert "139****1234" in caplog.text
