"""The sweep that applies stored provider events, one transaction per event."""

from __future__ import annotations

import sys
from datetime import datetime

import structlog
from sqlalchemy import select

from tollway.kit.sweeps import SweepContext, claim_due, register_sweep
from tollway.payments import repository
from tollway.payments.env import PaymentEnv
from tollway.payments.models import WebhookEvent
from tollway.payments.webhooks.queue import webhook_queue

log = structlog.get_logger("tollway.payments")

BATCH = 2000
#: Events applied in one transaction.
CHUNK = 100


@register_sweep("payments.process_webhook_events", interval_seconds=1.0)
async def process_webhook_events(context: SweepContext) -> int:
    """Apply due events; a failing handler is retried with backoff, then parked.

    Events are applied :data:`CHUNK` to a transaction; when one of them fails the
    chunk is rolled back and replayed one event per transaction, so the failure is
    recorded on that event alone.
    """
    env = PaymentEnv.of(context)
    now = context.clock.now()
    async with context.database.transaction(write=False) as session:
        due_ids = list((await session.execute(repository.due_events(now, limit=BATCH))).scalars())
    handled = 0
    for start in range(0, len(due_ids), CHUNK):
        chunk = due_ids[start : start + CHUNK]
        try:
            handled += await _apply_chunk(context, env, chunk)
            continue
        except Exception:
            if len(chunk) == 1:
                await _record_failure(context, chunk[0], now)
                continue
            log.warning("webhook.chunk_failed", size=len(chunk), exc_info=True)
        for row_id in chunk:
            try:
                handled += await _apply_chunk(context, env, [row_id])
            except Exception:
                await _record_failure(context, row_id, now)
    return handled


async def _apply_chunk(context: SweepContext, env: PaymentEnv, chunk: list[str]) -> int:
    done = 0
    async with context.database.transaction() as session:
        statement = claim_due(
            select(WebhookEvent)
            .where(WebhookEvent.id.in_(chunk), WebhookEvent.status == "pending")
            .order_by(WebhookEvent.next_attempt_at, WebhookEvent.id),
            context.database,
        )
        rows = list((await session.execute(statement)).scalars().all())
        await webhook_queue.read_ahead(session, env, rows)
        for row in rows:
            row.status = await webhook_queue.apply(session, env, row)
            row.attempts += 1
            row.processed_at = context.clock.now()
            row.next_attempt_at = None
            row.last_error = None
            done += 1
    return done


async def _record_failure(context: SweepContext, row_id: str, now: datetime) -> None:
    # Called from an ``except`` block: any handler failure (a bug, a lost connection)
    # must not block the other events. It is logged here, recorded on the row and
    # retried with backoff.
    error = sys.exc_info()[1]
    log.exception("webhook.handler_failed", webhook_event=row_id)
    async with context.database.transaction() as session:
        await webhook_queue.record_failure(
            session, row_id=row_id, error=f"{type(error).__name__}: {error}", now=now
        )
