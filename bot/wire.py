"""The WeChat callback wire format: signatures, AES envelopes and guarded XML parsing.

Signatures are computed with wechatpy's ``WeChatSigner`` (what ``check_signature`` uses) but
compared with :func:`hmac.compare_digest`, because wechatpy compares with ``!=``. AES envelopes
use wechatpy's ``PrpCrypto`` after our own constant-time ``msg_signature`` check. XML is refused
before parsing when it declares a DOCTYPE or ENTITY (billion laughs, external entities).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from dataclasses import dataclass
from typing import Any

import xmltodict
from wechatpy import parse_message
from wechatpy.crypto import PrpCrypto
from wechatpy.messages import BaseMessage
from wechatpy.utils import WeChatSigner

MAX_BODY_BYTES = 64 * 1024
FRESHNESS_SECONDS = 300
_FORBIDDEN = re.compile(rb"<!\s*(DOCTYPE|ENTITY)|<\?xml-stylesheet|SYSTEM\s+[\"']", re.IGNORECASE)
_MAX_DEPTH = 4


class WireError(Exception):
    """The request is malformed (400)."""


class SignatureError(Exception):
    """The signature is missing, stale or wrong (403)."""


@dataclass(frozen=True)
class CallbackKeys:
    token: str
    appid: str
    aes_key: str | None = None  # 43 characters EncodingAESKey; None = plain mode only

    def crypto(self) -> PrpCrypto | None:
        if not self.aes_key:
            return None
        key = base64.b64decode(self.aes_key + "=")
        if len(key) != 32:
            raise ValueError("TANFANG_WECHAT_AES_KEY 长度不对：应为 43 个字符的 EncodingAESKey")
        return PrpCrypto(key)


def sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return str(signer.signature)


def verify(expected_parts: tuple[str, ...], given: str | None) -> None:
    if not given:
        raise SignatureError("missing signature")
    if not hmac.compare_digest(sign(*expected_parts).encode(), given.encode("utf-8", "replace")):
        raise SignatureError("bad signature")


def check_fresh(timestamp: str | None, now_ts: float, window: int = FRESHNESS_SECONDS) -> None:
    if not timestamp or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError("bad timestamp")
    if abs(now_ts - int(timestamp)) > window:
        raise SignatureError("stale timestamp")


def guard_xml(body: bytes) -> None:
    if len(body) > MAX_BODY_BYTES:
        raise WireError("body too large")
    if _FORBIDDEN.search(body):
        raise WireError("DOCTYPE/ENTITY refused")


def parse_xml(body: bytes | str) -> dict[str, Any]:
    """Parse a flat ``<xml>…</xml>`` document into a dict of strings (after :func:`guard_xml`)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    guard_xml(raw)
    try:
        doc = xmltodict.parse(raw, disable_entities=True)
    except Exception as exc:  # expat errors, encoding errors: all mean "junk"
        raise WireError(f"malformed XML: {type(exc).__name__}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("xml"), dict):
        raise WireError("no <xml> root")
    root = doc["xml"]
    _check_depth(root, 0)
    return root


def _check_depth(node: Any, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise WireError("XML nested too deep")
    if isinstance(node, dict):
        for v in node.values():
            _check_depth(v, depth + 1)
    elif isinstance(node, list):
        for v in node:
            _check_depth(v, depth + 1)


_ENCRYPT = re.compile(rb"<Encrypt>\s*(?:<!\[CDATA\[([A-Za-z0-9+/=]{1,87400})\]\]>|([A-Za-z0-9+/=]{1,87400}))\s*</Encrypt>")


def envelope_encrypt(body: bytes) -> str | None:
    """The ``Encrypt`` element of a (guarded) AES envelope: a fast path for the usual shape,
    the XML parser for anything else."""
    guard_xml(body)
    if body.count(b"<Encrypt>") == 1:
        m = _ENCRYPT.search(body)
        if m:
            return (m.group(1) or m.group(2)).decode("ascii")
    value = parse_xml(body).get("Encrypt")
    return value if isinstance(value, str) else None


def decrypt_envelope(keys: CallbackKeys, crypto: PrpCrypto, body: bytes, query: dict[str, str]) -> bytes:
    """Verify ``msg_signature`` over (token, timestamp, nonce, Encrypt) and decrypt the inner XML."""
    encrypt = envelope_encrypt(body)
    if not isinstance(encrypt, str) or not encrypt:
        raise WireError("no Encrypt element")
    verify((keys.token, query.get("timestamp", ""), query.get("nonce", ""), encrypt), query.get("msg_signature"))
    try:
        inner = crypto.decrypt(encrypt, keys.appid)
    except (ValueError, binascii.Error, IndexError, UnicodeDecodeError, TypeError, OverflowError) as exc:
        raise WireError(f"cannot decrypt: {type(exc).__name__}") from exc
    except Exception as exc:  # wechatpy raises InvalidAppIdException (a bare Exception subclass)
        raise WireError(f"cannot decrypt: {type(exc).__name__}") from exc
    return str(inner).encode("utf-8")


def encrypt_reply(keys: CallbackKeys, crypto: PrpCrypto, reply_xml: str, nonce: str, timestamp: str) -> str:
    encrypt = crypto.encrypt(reply_xml, keys.appid)
    encrypt_text = encrypt.decode() if isinstance(encrypt, bytes) else str(encrypt)
    signature = sign(keys.token, timestamp, nonce, encrypt_text)
    return (
        "<xml>\n"
        f"<Encrypt><![CDATA[{encrypt_text}]]></Encrypt>\n"
        f"<MsgSignature><![CDATA[{signature}]]></MsgSignature>\n"
        f"<TimeStamp>{timestamp}</TimeStamp>\n"
        f"<Nonce><![CDATA[{nonce}]]></Nonce>\n"
        "</xml>"
    )


def to_message(inner: bytes) -> BaseMessage:
    """The inner XML as a wechatpy message/event (after guards); raises WireError on junk."""
    guard_xml(inner)
    try:
        msg = parse_message(inner.decode("utf-8"))
    except Exception as exc:  # expat errors, missing <xml>, odd field conversions: all junk
        raise WireError(f"cannot parse message: {type(exc).__name__}") from exc
    if msg is None:
        raise WireError("empty message")
    fields = msg._data
    if not isinstance(fields, dict):
        raise WireError("no <xml> root")
    _check_depth(fields, 0)
    for name in ("ToUserName", "FromUserName", "MsgType"):
        if not isinstance(fields.get(name), str) or not fields[name]:
            raise WireError(f"missing {name}")
    ct = fields.get("CreateTime")
    if ct is not None and (not isinstance(ct, str) or not ct.isascii() or not ct.isdigit() or len(ct) > 12):
        raise WireError("bad CreateTime")
    for name, value in fields.items():
        if value is not None and not isinstance(value, str) and name not in ("ScanCodeInfo", "SendPicsInfo", "SendLocationInfo"):
            raise WireError(f"unexpected structure in {name}")
    return msg


def dedup_key(msg: BaseMessage) -> str:
    """MsgId for messages; FromUserName+CreateTime+Event+EventKey for events (WeChat's own rule)."""
    raw = msg._data  # the parsed fields
    if msg.type == "event":
        event = str(raw.get("Event", ""))
        key = str(raw.get("EventKey") or "")
        return f"e:{msg.source}:{raw.get('CreateTime', '')}:{event}:{key}"[:160]
    return f"m:{raw.get('MsgId', '')}:{msg.source}"[:160]
