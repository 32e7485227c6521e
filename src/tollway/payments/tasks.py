"""The sweep that applies stored provider events, one transaction per event."""

from __future__ import annotations

import structlog
from sqlalchemy import select

from tollway.kit.sweeps import SweepContext, claim_due, register_sweep
from tollway.payments import repository
from tollway.payments.models import WebhookEvent
from tollway.payments.service import PaymentEnv, webhook_service

log = structlog.get_logger("tollway.payments")

BATCH = 200


@register_sweep("payments.process_webhook_events", interval_seconds=1.0)
async def process_webhook_events(context: SweepContext) -> int:
    """Apply due events; a failing handler is retried with backoff, then parked."""
    env = PaymentEnv(settings=context.settings, clock=context.clock)
    now = context.clock.now()
    async with context.database.transaction(write=False) as session:
        due_ids = [
            row.id
            for row in (await session.execute(repository.due_events(now, limit=BATCH))).scalars()
        ]
    handled = 0
    for row_id in due_ids:
        try:
            async with context.database.transaction() as session:
                statement = claim_due(
                    select(WebhookEvent).where(
                        WebhookEvent.id == row_id, WebhookEvent.status == "pending"
                    ),
                    context.database,
                )
                row = (await session.execute(statement)).scalar_one_or_none()
                if row is None:
                    continue  # another worker holds or finished it
                status = await webhook_service.apply(session, env, row)
                row.status = status
                row.attempts += 1
                row.processed_at = context.clock.now()
                row.next_attempt_at = None
                row.last_error = None
                await session.flush()
            handled += 1
        except Exception as error:
            # Any handler failure (a bug, a lost connection) must not block the other
            # events: it is logged here, recorded on the row and retried with backoff.
            log.exception("webhook.handler_failed", webhook_event=row_id)
            async with context.database.transaction() as session:
                await webhook_service.record_failure(
                    session, row_id=row_id, error=f"{type(error).__name__}: {error}", now=now
                )
    return handled
