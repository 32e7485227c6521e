"""Helpers that belong to no domain: clock, ids, money, pagination, idempotency, outbox."""
