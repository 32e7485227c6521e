"""Sweeps: release holds past their TTL, book lots past their expiry.

Both read their due rows from the database, so a hold left open when a process
stopped is released by whichever process sweeps next. Each item runs in its own
transaction and re-checks its state under the wallet lock: running twice, or on two
workers at once, moves nothing twice.
"""

from __future__ import annotations

from tollway.kit.sweeps import SweepContext, register_sweep
from tollway.ledger import repository
from tollway.ledger.service.grants import grant_service
from tollway.ledger.service.holds import hold_service

BATCH = 200


@register_sweep("ledger.release_expired_holds", interval_seconds=1.0)
async def release_expired_holds(context: SweepContext) -> int:
    """Release every hold whose TTL has run out (status ``expired``)."""
    now = context.clock.now()
    async with context.database.transaction(write=False) as session:
        due = await repository.list_due_reservation_ids(session, now=now, limit=BATCH)
    released = 0
    for organization_id, reservation_id in due:
        async with context.database.transaction() as session:
            if await hold_service.expire_hold(
                session, organization_id=organization_id, reservation_id=reservation_id, now=now
            ):
                released += 1
    return released


@register_sweep("ledger.expire_grants", interval_seconds=5.0)
async def expire_grants(context: SweepContext) -> int:
    """Move the unspent credits of lots past their expiry to the expiry account."""
    now = context.clock.now()
    async with context.database.transaction(write=False) as session:
        due = await repository.list_due_grant_ids(session, now=now, limit=BATCH)
    for organization_id, grant_id in due:
        async with context.database.transaction() as session:
            await grant_service.expire_grant(
                session,
                organization_id=organization_id,
                grant_id=grant_id,
                now=now,
                low_balance_threshold=context.settings.credits_low_balance_threshold,
            )
    return len(due)
