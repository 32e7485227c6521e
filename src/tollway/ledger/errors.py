"""The ledger's error codes (listed in docs/errors.md)."""

from __future__ import annotations

from tollway.errors import Conflict, NotFound, PaymentRequired, RateLimited, Unprocessable


class InvalidAmount(Unprocessable):
    code = "invalid_amount"
    title = "Invalid amount"


class InvalidExpiry(Unprocessable):
    code = "invalid_expiry"
    title = "Invalid expiry"


class BalanceLimitExceeded(Conflict):
    code = "balance_limit_exceeded"
    title = "Balance limit exceeded"


class InvalidTtl(Unprocessable):
    code = "invalid_ttl"
    title = "Invalid hold TTL"


class InvalidGrantSource(Unprocessable):
    code = "invalid_grant_source"
    title = "Invalid grant source"


class InsufficientCredits(PaymentRequired):
    code = "insufficient_credits"
    title = "Insufficient credits"
    #: The refused request still counts in the abuse battery's windows (a request was
    #: made); it is not a failure towards the temporary block, so a top-up helps at once.
    commit_transaction = True


class HoldNotFound(NotFound):
    code = "hold_not_found"
    title = "Hold not found"


class GrantNotFound(NotFound):
    code = "grant_not_found"
    title = "Grant not found"


class HoldNotActive(Conflict):
    code = "hold_not_active"
    title = "Hold not active"


class AmountExceedsHold(Unprocessable):
    code = "amount_exceeds_hold"
    title = "Amount exceeds the hold"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_conflict"
    title = "Idempotency key reused"


class AbuseDenied(RateLimited):
    """A denial of the abuse battery that carries ``Retry-After`` (code set per check)."""


class RequestTooLarge(Unprocessable):
    code = "request_too_large"
    title = "Too many credits in one request"


class OutputTooLarge(Unprocessable):
    code = "output_too_large"
    title = "Output too large"
    #: The refused commit counts towards the abuse battery's temporary block.
    commit_transaction = True
