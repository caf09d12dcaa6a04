"""Field encryption for personal data at rest (ID numbers, phone numbers).

Values are encrypted with AES-256-GCM (random nonce) and found again by a keyed hash (HMAC-SHA256
"blind index") over the normalised value, so equality look-ups never decrypt anything. Both keys
are derived from one master secret with HKDF.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"


class VaultError(Exception):
    """The key is malformed, or a ciphertext does not decrypt with it."""


def generate_secret() -> str:
    """A fresh master secret, base64 (urlsafe) text of 32 random bytes."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _decode_secret(secret: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(secret.strip().encode() + b"==")
    except (ValueError, TypeError) as exc:
        raise VaultError("TANFANG_SECRET_KEY 不是有效的 base64 文本") from exc
    if len(raw) < 32:
        raise VaultError("TANFANG_SECRET_KEY 太短：至少需要 32 字节（base64 编码后约 44 个字符）")
    return raw


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"tanfang-v1", info=info).derive(master)


class Vault:
    """Encrypts, decrypts and blind-indexes short personal strings."""

    def __init__(self, secret: str) -> None:
        master = _decode_secret(secret)
        self._aead = AESGCM(_derive(master, b"field-encryption"))
        self._index_key = _derive(master, b"blind-index")

    def encrypt(self, plaintext: str) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode("utf-8"), None)

    def decrypt(self, token: bytes) -> str:
        if not token or token[:1] != _VERSION or len(token) < 1 + 12 + 16:
            raise VaultError("密文格式不正确")
        try:
            return self._aead.decrypt(token[1:13], token[13:], None).decode("utf-8")
        except InvalidTag as exc:
            raise VaultError("无法解密：密钥与数据不匹配（TANFANG_SECRET_KEY 是否更换过？）") from exc

    def blind_index(self, normalised: str) -> str:
        """Keyed hash for equality look-ups (hex, 32 chars)."""
        return hmac.new(self._index_key, normalised.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
