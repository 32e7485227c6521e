"""The API key format: ``tw_live_`` or ``tw_test_`` + 32 base62 characters (190 random
bits) + a 6-character CRC32 checksum in base62.

The fixed prefix makes a leaked key recognisable to secret scanners; the checksum
lets Tollway refuse a mistyped or invented key without touching the database. Only
HMAC-SHA256(pepper, key) is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LENGTH = 32
CHECKSUM_LENGTH = 6
PREFIXES = {"live": "tw_live_", "test": "tw_test_"}
KEY_PATTERN = re.compile(r"^tw_(live|test)_([0-9A-Za-z]{38})$")
#: Characters of the key shown in lists (``tw_live_AbCd1234``).
DISPLAY_LENGTH = 16


def _base62(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, remainder = divmod(value, 62)
        chars.append(ALPHABET[remainder])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def generate(environment: str) -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return f"{PREFIXES[environment]}{body}{_checksum(body)}"


def looks_valid(key: str) -> bool:
    """Pattern and checksum hold (says nothing about whether the key exists)."""
    match = KEY_PATTERN.match(key)
    if match is None:
        return False
    payload = match.group(2)
    body, checksum = payload[:BODY_LENGTH], payload[BODY_LENGTH:]
    return hmac.compare_digest(_checksum(body), checksum)


def digest(key: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_LENGTH]
