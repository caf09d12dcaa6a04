"""The master secret for field encryption: from settings, else from (or generated into) the data dir."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from storage.crypto import Vault, generate_secret
from tanfang.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE = "secret.key"


def load_secret(settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / KEY_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    return _generate(path)


def _generate(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = generate_secret()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secret + "\n")
    log.warning(
        "未设置 TANFANG_SECRET_KEY：已生成新密钥并保存到 %s。请备份此文件；丢失后已加密的身份证号和电话将无法解密。",
        path,
        extra={"action": "secret_generated"},
    )
    return secret


def load_vault(settings: Settings) -> Vault:
    return Vault(load_secret(settings))
