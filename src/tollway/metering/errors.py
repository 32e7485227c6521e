"""The metering domain's errors."""

from __future__ import annotations

from tollway.errors import Conflict, Unprocessable
from tollway.kit.numbers import MAX_USAGE_PER_PERIOD


class InvalidQuantity(Unprocessable):
    code = "invalid_quantity"
    title = "Invalid quantity"


class InvalidTimestamp(Unprocessable):
    code = "invalid_timestamp"
    title = "Invalid timestamp"


class TimestampInFuture(Unprocessable):
    code = "timestamp_in_future"
    title = "Timestamp in the future"


class PeriodClosed(Unprocessable):
    code = "period_closed"
    title = "Period closed"


class MissingProperty(Unprocessable):
    code = "missing_property"
    title = "Missing property"


class BatchTooLarge(Unprocessable):
    code = "batch_too_large"
    title = "Batch too large"


class UsageLimitExceeded(Unprocessable):
    code = "usage_limit_exceeded"
    title = "Usage limit exceeded"

    def __init__(self, meter: str) -> None:
        super().__init__(
            f"a meter counts at most {MAX_USAGE_PER_PERIOD:,} units a period; "
            f"this event would take {meter} past it",
            meter=meter,
            maximum=MAX_USAGE_PER_PERIOD,
        )


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    title = "Idempotency key reused"
