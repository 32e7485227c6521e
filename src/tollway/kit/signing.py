"""The platform's Ed25519 signing keys: marketplace artifacts and license tokens.

Keys live with the other secrets: ``TOLLWAY_SIGNING_KEYS`` (production) or
``<data_dir>/signing_keys.json`` (generated on first start, mode 0600). The newest
key signs; every key still verifies, so a rotation (``rotate_signing_key``) never
invalidates what was signed before. Public keys are published as a JWKS (RFC 8037,
``kty: OKP``, ``crv: Ed25519``) with a ``kid`` that signatures carry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tollway.config import Settings
from tollway.errors import ConfigurationError


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url(self.public_bytes),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }

    def private_text(self) -> str:
        raw = self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return b64url(raw)


def _key_from_text(text: str) -> SigningKey:
    private_key = Ed25519PrivateKey.from_private_bytes(b64url_decode(text))
    public = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    # The key id is derived from the public key, so it cannot disagree with it.
    return SigningKey(kid=hashlib.sha256(public).hexdigest()[:16], private_key=private_key)


class KeyRing:
    """All signing keys, newest last. ``sign`` uses the newest; ``verify`` accepts any."""

    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ConfigurationError("a key ring needs at least one signing key")
        self.keys = keys

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def sign(self, message: bytes) -> tuple[str, str]:
        """(kid, base64url signature) of ``message`` with the current key."""
        return self.current.kid, b64url(self.current.private_key.sign(message))

    def verify(self, message: bytes, signature: str, *, kid: str | None = None) -> bool:
        candidates = [key for key in self.keys if kid is None or key.kid == kid]
        for key in candidates:
            try:
                key.public_key.verify(b64url_decode(signature), message)
            except (InvalidSignature, ValueError):
                continue
            return True
        return False

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in reversed(self.keys)]}


def _keys_file(settings: Settings) -> Path:
    return settings.data_dir / "signing_keys.json"


def _write_keys(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"keys": texts}, handle, indent=2)
    tmp.replace(path)


def load_key_ring(settings: Settings) -> KeyRing:
    """The configured key ring; in development a first key is generated and kept."""
    if settings.signing_keys is not None:
        configured = settings.signing_keys.get_secret_value()
        return KeyRing([_key_from_text(text.strip()) for text in configured.split(",") if text])
    path = _keys_file(settings)
    if path.exists():
        texts: list[str] = json.loads(path.read_text(encoding="utf-8"))["keys"]
        return KeyRing([_key_from_text(text) for text in texts])
    if settings.env == "production":
        raise ConfigurationError(
            "TOLLWAY_SIGNING_KEYS must be set when TOLLWAY_ENV=production "
            "(generate one with `tollway keys generate`)"
        )
    key = SigningKey(kid="", private_key=Ed25519PrivateKey.generate())
    text = key.private_text()
    _write_keys(path, [text])
    return KeyRing([_key_from_text(text)])


def rotate_signing_key(settings: Settings) -> KeyRing:
    """Add a new current key to the stored ring; older keys keep verifying."""
    ring = load_key_ring(settings)
    texts = [key.private_text() for key in ring.keys]
    texts.append(SigningKey(kid="", private_key=Ed25519PrivateKey.generate()).private_text())
    _write_keys(_keys_file(settings), texts)
    return KeyRing([_key_from_text(text) for text in texts])


def generate_key_text() -> str:
    return SigningKey(kid="", private_key=Ed25519PrivateKey.generate()).private_text()
