"""Secrets at rest: keys derived from ``TOLLWAY_SECRET_KEY`` per purpose.

``SecretBox(secret_key, purpose="totp")`` encrypts small values (Fernet: AES-128-CBC
plus HMAC-SHA256, authenticated) under a key derived with HKDF-SHA256, so one
configured secret yields independent keys for independent uses. ``keyed_digest``
is an HMAC-SHA256 under such a key, for values looked up by their hash (recovery
codes). Changing ``TOLLWAY_SECRET_KEY`` makes what was sealed under it unreadable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(secret: str, *, purpose: str) -> bytes:
    """32 bytes for ``purpose``, independent of the keys of every other purpose."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"tollway:{purpose}".encode()
    ).derive(secret.encode())


def keyed_digest(secret: str, value: str, *, purpose: str) -> str:
    return hmac.new(derive_key(secret, purpose=purpose), value.encode(), hashlib.sha256).hexdigest()


class SealedValueInvalid(ValueError):
    """The value was not sealed with this key (or was altered)."""


class SecretBox:
    def __init__(self, secret: str, *, purpose: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(derive_key(secret, purpose=purpose)))

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode()
        except InvalidToken as error:
            raise SealedValueInvalid("the sealed value does not open with this key") from error
