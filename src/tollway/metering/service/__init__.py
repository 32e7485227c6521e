"""Usage metering: idempotent events, exact per-period counters, quota thresholds.

Meters are declared in the catalog (``count``, ``sum``, ``max``, ``unique`` over a
property) with a period (``day``, ``month``, ``lifetime``; calendar periods in UTC).
An event counts exactly once: its ``(organization, idempotency_key)`` is unique, a
retry with the same body is reported as a duplicate, the same key with another body
is refused (409 ``idempotency_key_reused``). Counters are updated in the same
transaction as the events, so they always equal the events' aggregate. Crossing 80 %
and 100 % of a quota publishes ``usage.threshold_reached`` once per period.
"""
