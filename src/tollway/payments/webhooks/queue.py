"""Stored provider events, applied by the ``payments.process_webhook_events`` sweep.

Handlers (:mod:`tollway.payments.webhooks.handlers`, one per event type, entered with
:func:`handles`) *set* state: a succeeded payment never goes back to failed, refunds
only grow, so any order of delivery and any number of repeats end in the same state.
A failing handler is retried with exponential backoff and parked after
:data:`MAX_ATTEMPTS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.errors import Conflict, NotFound
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams, PageResult
from tollway.payments import repository
from tollway.payments.env import PaymentEnv
from tollway.payments.listeners import read_aheads
from tollway.payments.models import WebhookEvent
from tollway.payments.providers.protocol import ProviderEvent
from tollway.payments.service.prepared import READ_PAYMENTS

log = structlog.get_logger("tollway.payments")

MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 30
BACKOFF_CAP_SECONDS = 6 * 3600

EventHandler = Callable[[AsyncSession, PaymentEnv, str, ProviderEvent], Awaitable[None]]
_HANDLERS: dict[str, EventHandler] = {}


def handles(event_type: str) -> Callable[[EventHandler], EventHandler]:
    """Decorator: ``fn`` applies provider events of ``event_type``."""

    def decorator(fn: EventHandler) -> EventHandler:
        _HANDLERS[event_type] = fn
        return fn

    return decorator


def backoff_seconds(attempts: int) -> int:
    """30 s, 60 s, 120 s, ... capped at six hours."""
    return int(min(BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1), BACKOFF_CAP_SECONDS))


class WebhookQueue:
    async def read_ahead(
        self, session: AsyncSession, env: PaymentEnv, rows: list[WebhookEvent]
    ) -> None:
        """Lock the payments a chunk of stored events names (by Tollway ID or idempotency
        key) in one query, and let their purposes' listeners read what they will need:
        the handlers then find them without a query per event."""
        payment_ids: set[str] = set()
        keys: set[str] = set()
        for row in rows:
            data = row.payload.get("data")
            obj = data.get("object") if isinstance(data, dict) else None
            metadata = obj.get("metadata") if isinstance(obj, dict) else None
            if not isinstance(metadata, dict):
                continue
            if isinstance(metadata.get("tollway_payment_id"), str):
                payment_ids.add(metadata["tollway_payment_id"])
            if isinstance(metadata.get("tollway_idempotency_key"), str):
                keys.add(metadata["tollway_idempotency_key"])
        if not payment_ids and not keys:
            return
        payments = await repository.list_payments_by_ids_or_keys(
            session, payment_ids=sorted(payment_ids), keys=sorted(keys)
        )
        read = READ_PAYMENTS.setdefault(session, dict)
        for payment in payments:
            read[payment.id] = payment
            if payment.idempotency_key is not None:
                read[payment.idempotency_key] = payment
        for purpose, read_ahead in read_aheads().items():
            of_purpose = [payment for payment in payments if payment.purpose == purpose]
            if of_purpose:
                await read_ahead(session, env, of_purpose)

    async def apply(self, session: AsyncSession, env: PaymentEnv, row: WebhookEvent) -> str:
        """Run the handler of one stored event; returns the new status (processed/ignored)."""
        handler = _HANDLERS.get(row.event_type)
        if handler is None:
            log.info("webhook.unknown_type", provider=row.provider, type=row.event_type)
            return "ignored"
        payload = row.payload
        event = ProviderEvent(
            id=row.event_id,
            type=row.event_type,
            created=int(payload.get("created", 0)),
            object=dict(payload.get("data", {}).get("object", {})),
            payload=payload,
        )
        await handler(session, env, row.provider, event)
        return "processed"

    async def record_failure(
        self, session: AsyncSession, *, row_id: str, error: str, now: datetime
    ) -> WebhookEvent | None:
        row = await repository.get_event_by_id(session, row_id)
        if row is None or row.status != "pending":
            return row
        row.attempts += 1
        row.last_error = error[:2000]
        if row.attempts >= MAX_ATTEMPTS:
            row.status = "parked"
            row.next_attempt_at = None
            log.error("webhook.parked", event_id=row.event_id, attempts=row.attempts)
            await outbox.publish(
                session,
                "webhook_event.parked",
                {
                    "id": row.id,
                    "provider": row.provider,
                    "event_id": row.event_id,
                    "type": row.event_type,
                    "error": row.last_error,
                },
                occurred_at=now,
            )
        else:
            row.next_attempt_at = now + timedelta(seconds=backoff_seconds(row.attempts))
        await session.flush()
        return row

    async def list_events(
        self, session: AsyncSession, *, params: PageParams, status: str | None
    ) -> PageResult[WebhookEvent]:
        return await repository.list_events(session, params=params, status=status)

    async def requeue(self, session: AsyncSession, *, row_id: str, now: datetime) -> WebhookEvent:
        """Give a parked event another round of attempts (an operator fixed the cause)."""
        row = await repository.get_event_by_id(session, row_id)
        if row is None:
            raise NotFound("no such webhook event", code="webhook_event_not_found")
        if row.status != "parked":
            raise Conflict("only a parked event can be retried", code="webhook_event_not_parked")
        row.status = "pending"
        row.attempts = 0
        row.next_attempt_at = now
        await session.flush()
        audit_service.record(session, action="webhook_event.requeued", target=row.id)
        return row


webhook_queue = WebhookQueue()
