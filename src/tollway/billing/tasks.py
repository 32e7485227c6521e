"""Billing sweeps on the Clock: renewals, dunning retries, grace ends.

Each sweep selects due subscription IDs, then handles each in its own transaction
with the row claimed (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), re-checking that it
is still due: a second worker, or a second run, finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.billing import repository
from tollway.billing.models import (
    GRACE_OVER,
    INCOMPLETE_EXPIRED,
    RENEWAL_DUE,
    RETRY_DUE,
    DueRule,
    Subscription,
)
from tollway.billing.service.collection import collection_service
from tollway.billing.service.license import license_state_service
from tollway.billing.service.lifecycle import lifecycle_service
from tollway.billing.service.renewals import renewal_service
from tollway.kit.sweeps import SweepContext, claim_due, register_sweep
from tollway.payments.env import PaymentEnv
from tollway.payments.tasks import process_webhook_events

BATCH = 2000
#: Subscriptions handled in one transaction.
CHUNK = 100

log = structlog.get_logger("tollway.billing")

Step = Callable[[AsyncSession, PaymentEnv, str], Awaitable[bool]]
#: Reads ahead what the steps of a chunk need (optional).
Prepare = Callable[[AsyncSession, PaymentEnv, list[Subscription]], Awaitable[None]]
#: Completes the chunk's work after its steps, in its transaction (optional).
Finish = Callable[[AsyncSession, PaymentEnv], Awaitable[None]]


async def _run_each(
    context: SweepContext,
    rule: DueRule,
    step: Step,
    prepare: Prepare | None = None,
    finish: Finish | None = None,
) -> int:
    """Claim due subscriptions in chunks and run ``step`` on each.

    A chunk shares one transaction (one commit for :data:`CHUNK` renewals is what
    makes 10,000 renewals take seconds, not minutes). If anything in a chunk fails,
    the chunk is rolled back and its subscriptions are retried one transaction each,
    so one broken subscription never holds back the others.
    """
    env = PaymentEnv.of(context)
    async with context.database.transaction(write=False) as session:
        due = repository.list_due(rule, context.clock.now(), limit=BATCH)
        ids = list((await session.execute(due)).scalars())
    handled = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        try:
            handled += await _run_chunk(context, env, chunk, step, prepare, finish)
        except Exception:
            log.exception("billing.chunk_failed", size=len(chunk), sweep=step.__name__)
            for subscription_id in chunk:
                try:
                    handled += await _run_chunk(
                        context, env, [subscription_id], step, prepare, finish
                    )
                except Exception:
                    # Logged and left due: the next round tries it again.
                    log.exception("billing.item_failed", subscription=subscription_id)
    return handled


async def _run_chunk(
    context: SweepContext,
    env: PaymentEnv,
    chunk: list[str],
    step: Step,
    prepare: Prepare | None,
    finish: Finish | None,
) -> int:
    done = 0
    async with context.database.transaction() as session:
        claimed = await session.execute(
            claim_due(select(Subscription).where(Subscription.id.in_(chunk)), context.database)
        )
        # Held here, so the steps find the rows in the identity map (which keeps clean
        # rows only weakly) instead of reading each again.
        subscriptions = list(claimed.scalars().all())
        if prepare is not None:
            await prepare(session, env, subscriptions)
        for subscription in subscriptions:
            if await step(session, env, subscription.id):
                done += 1
        if finish is not None:
            await finish(session, env)
    return done


async def _renew(session: AsyncSession, env: PaymentEnv, subscription_id: str) -> bool:
    return await renewal_service.renew(session, env, subscription_id=subscription_id)


async def _retry(session: AsyncSession, env: PaymentEnv, subscription_id: str) -> bool:
    return await collection_service.retry(session, env, subscription_id=subscription_id)


async def _end_grace(session: AsyncSession, env: PaymentEnv, subscription_id: str) -> bool:
    return await license_state_service.end_grace(session, env, subscription_id=subscription_id)


@register_sweep("billing.renew", interval_seconds=5.0)
async def renew_subscriptions(context: SweepContext) -> int:
    """Close ended periods: cancellations, scheduled downgrades, invoices for the next period."""
    return await _run_each(
        context,
        RENEWAL_DUE,
        _renew,
        renewal_service.prepare,
        renewal_service.finish,
    )


@register_sweep("billing.retry", interval_seconds=5.0)
async def retry_collections(context: SweepContext) -> int:
    """Dunning: charge past-due invoices again on the catalog's schedule."""
    return await _run_each(context, RETRY_DUE, _retry)


@register_sweep("billing.end_grace", interval_seconds=5.0)
async def end_grace_periods(context: SweepContext) -> int:
    """Licenses whose grace period is over become restricted."""
    return await _run_each(context, GRACE_OVER, _end_grace)


async def _expire(session: AsyncSession, env: PaymentEnv, subscription_id: str) -> bool:
    return await lifecycle_service.expire_incomplete(session, env, subscription_id=subscription_id)


@register_sweep("billing.expire_incomplete", interval_seconds=60.0)
async def expire_incomplete(context: SweepContext) -> int:
    """First invoices unpaid after 23 hours end the attempt; the organization stays on Free."""
    return await _run_each(context, INCOMPLETE_EXPIRED, _expire)


BILLING_SWEEPS = (
    expire_incomplete,
    end_grace_periods,
    renew_subscriptions,
    retry_collections,
    process_webhook_events,
)


async def run_until_quiet(context: SweepContext, *, max_rounds: int = 100) -> int:
    """Run the billing sweeps (and the provider events they cause) until none has work."""
    total = 0
    for _ in range(max_rounds):
        handled = 0
        for sweep in BILLING_SWEEPS:
            handled += await sweep(context)
        total += handled
        if handled == 0:
            break
    return total


async def next_due_at(context: SweepContext, *, after: datetime | None = None) -> datetime | None:
    async with context.database.transaction(write=False) as session:
        return await repository.next_due_at(session, after=after)
