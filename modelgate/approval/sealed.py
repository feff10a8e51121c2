"""Signed (not encrypted) small payloads: approval links, CSRF tokens, sign-in state.

The MAC is computed by AWS KMS with an HMAC key (GenerateMac/VerifyMac), so the key never leaves KMS and never
appears in code, config or the Lambda's memory. Each use has its own `purpose` prefix in the signed message, so
a value sealed for one purpose (a CSRF token) can never be replayed as another (an approval link).

Format: `<base64url(JSON payload)>.<base64url(MAC)>`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Protocol

MAC_ALGORITHM = "HMAC_SHA_256"
MAX_SEALED_CHARS = 4000  # KMS accepts messages up to 4096 bytes; real tokens are ~600 characters


class SealBroken(Exception):
    """Not produced by us for this purpose: malformed, altered, or signed with another key."""


class MacSigner(Protocol):
    def sign(self, message: bytes) -> bytes: ...

    def verify(self, message: bytes, mac: bytes) -> bool: ...


class KmsMacSigner:
    """HMAC with a KMS key of spec HMAC_256 (key usage GENERATE_VERIFY_MAC)."""

    def __init__(self, kms_client: Any, key_id: str) -> None:
        self._kms = kms_client
        self._key_id = key_id

    def sign(self, message: bytes) -> bytes:
        return self._kms.generate_mac(KeyId=self._key_id, Message=message, MacAlgorithm=MAC_ALGORITHM)["Mac"]

    def verify(self, message: bytes, mac: bytes) -> bool:
        try:
            return bool(
                self._kms.verify_mac(KeyId=self._key_id, Message=message, Mac=mac, MacAlgorithm=MAC_ALGORITHM)[
                    "MacValid"
                ]
            )
        except self._kms.exceptions.KMSInvalidMacException:
            return False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _unb64(text: str) -> bytes:
    """Strict: unpadded base64url in its one canonical spelling (RFC 4648 5, 3.3, 3.5); anything else raises."""
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not unpadded base64url")
    decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(decoded) != text:
        raise ValueError("not canonical base64url")
    return decoded


def _message(purpose: str, payload: str) -> bytes:
    return f"modelgate:{purpose}:{payload}".encode()


def seal(purpose: str, payload: dict[str, Any], signer: MacSigner) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(signer.sign(_message(purpose, body)))}"


def unseal(purpose: str, sealed: str, signer: MacSigner) -> dict[str, Any]:
    """The payload, or SealBroken. The MAC is checked before the payload is even parsed."""
    if not isinstance(sealed, str) or not sealed or len(sealed) > MAX_SEALED_CHARS or sealed.count(".") != 1:
        raise SealBroken("not a ModelGate token")
    body, mac_text = sealed.split(".")
    try:
        mac = _unb64(mac_text)
    except (binascii.Error, ValueError):
        raise SealBroken("not a ModelGate token") from None
    if not body or len(mac) != 32 or not signer.verify(_message(purpose, body), mac):
        raise SealBroken("signature does not verify")
    try:
        payload = json.loads(_unb64(body))
    except (binascii.Error, ValueError):
        raise SealBroken("payload is not JSON") from None
    if not isinstance(payload, dict):
        raise SealBroken("payload is not an object")
    return payload


def peek(sealed: str) -> dict[str, Any]:
    """The payload WITHOUT verifying it (never act on it: for wording error messages only); {} if unreadable."""
    try:
        payload = json.loads(_unb64(sealed.split(".")[0]))
    except (AttributeError, binascii.Error, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}
