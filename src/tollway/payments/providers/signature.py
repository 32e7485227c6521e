"""Stripe's webhook signature scheme, used by every provider Tollway speaks to.

``Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
During a secret rotation the sender puts several ``v1`` values in one header, and
the receiver may hold several secrets (the old and the new); one match of any
secret with any ``v1`` is enough. A timestamp further than the tolerance from now is refused, so a
captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime

from tollway.payments.errors import WebhookSignatureError

TOLERANCE_SECONDS = 300
SIGNATURE_HEADER = "Stripe-Signature"


def compute_signature(secret: str, timestamp: int, raw_body: bytes) -> str:
    message = str(timestamp).encode() + b"." + raw_body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secrets: list[str], timestamp: int, raw_body: bytes) -> str:
    """The header value for ``raw_body``: one ``v1`` per secret (rotation sends two)."""
    parts = [f"t={timestamp}"]
    parts += [f"v1={compute_signature(secret, timestamp, raw_body)}" for secret in secrets]
    return ",".join(parts)


def verify(
    *,
    secret: str | Sequence[str],
    raw_body: bytes,
    header: str | None,
    now: datetime,
    tolerance_seconds: int = TOLERANCE_SECONDS,
) -> int:
    """Check ``header`` against ``raw_body``; return the signed timestamp or raise 400."""
    if not header:
        raise WebhookSignatureError(
            f"the {SIGNATURE_HEADER} header is missing", code="webhook_signature_missing"
        )
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise WebhookSignatureError(f"the {SIGNATURE_HEADER} header needs t= and at least one v1=")
    if abs(now.timestamp() - timestamp) > tolerance_seconds:
        raise WebhookSignatureError(
            f"the signature timestamp is more than {tolerance_seconds} s from now",
            code="webhook_timestamp_out_of_tolerance",
        )
    secrets = [secret] if isinstance(secret, str) else list(secret)
    expected = [compute_signature(one, timestamp, raw_body) for one in secrets]
    if not any(
        hmac.compare_digest(mine, candidate) for mine in expected for candidate in candidates
    ):
        raise WebhookSignatureError("no v1 signature matches the body")
    return timestamp
