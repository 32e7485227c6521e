"""Incoming provider events: verify the signature, store the event, answer.

Verify the signature on the raw body -> insert into ``webhook_events`` (unique per
provider and event ID; a duplicate changes nothing) -> answer 2xx. Nothing is applied
here: the ``payments.process_webhook_events`` sweep applies stored events
(:mod:`tollway.payments.webhooks.queue`).

The sandbox sends its events to the same intake as ``POST /api/v1/webhooks/sandbox``:
:meth:`WebhookIntake.provider` hands it :meth:`WebhookIntake.deliver_to` as its
``deliver`` callback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.kit.ids import new_id
from tollway.kit.session_state import SessionKey
from tollway.payments import repository
from tollway.payments.env import PaymentEnv
from tollway.payments.errors import ProviderNotConfigured
from tollway.payments.providers.protocol import PaymentProvider, ProviderEvent
from tollway.payments.providers.sandbox import Deliver, SandboxProvider
from tollway.payments.providers.selection import provider_for, sandbox_for

log = structlog.get_logger("tollway.payments")

#: Events the sandbox sent while :meth:`WebhookIntake.holding` was open, stored after it.
HELD_DELIVERIES: SessionKey[list[tuple[bytes, str]]] = SessionKey("payments.held_deliveries")


def _pending_event_row(provider: str, event: ProviderEvent, now: datetime) -> dict[str, Any]:
    """A verified provider event as a ``webhook_events`` row, waiting to be applied."""
    return {
        "id": new_id("whe"),
        "provider": provider,
        "event_id": event.id,
        "event_type": event.type,
        "payload": event.payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "received_at": now,
    }


class WebhookIntake:
    async def receive(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        provider_name: str,
        raw_body: bytes,
        signature_header: str | None,
    ) -> tuple[str, bool]:
        """Verify and store one incoming event; returns (stored row id, duplicate).

        Only the configured provider's events are taken: with Stripe configured, the
        sandbox endpoint answers 404 (its secret must not be able to pay Stripe's bills).
        """
        if provider_name != env.settings.payment_provider:
            raise ProviderNotConfigured(
                f"the payment provider {provider_name!r} is not configured here"
            )
        provider = provider_for(env, name=provider_name)
        event = provider.parse_event(raw_body=raw_body, signature_header=signature_header)
        now = env.clock.now()
        row = _pending_event_row(provider_name, event, now)
        row_id = row["id"]
        inserted = await repository.insert_event(session, row)
        if inserted:
            log.debug(
                "webhook.received", provider=provider_name, event_id=event.id, type=event.type
            )
            return row_id, False
        existing = await repository.get_event(session, provider=provider_name, event_id=event.id)
        assert existing is not None
        log.info("webhook.duplicate", provider=provider_name, event_id=event.id)
        return existing.id, True

    async def receive_many(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        provider_name: str,
        deliveries: list[tuple[bytes, str]],
    ) -> None:
        """:meth:`receive` of many (raw body, signature header), stored by one statement
        (duplicates change nothing, as there)."""
        if provider_name != env.settings.payment_provider:
            raise ProviderNotConfigured(
                f"the payment provider {provider_name!r} is not configured here"
            )
        provider = provider_for(env, name=provider_name)
        now = env.clock.now()
        rows = [
            _pending_event_row(
                provider_name,
                provider.parse_event(raw_body=raw_body, signature_header=signature_header),
                now,
            )
            for raw_body, signature_header in deliveries
        ]
        await repository.insert_events(session, rows)

    def deliver_to(self, session: AsyncSession, env: PaymentEnv) -> Deliver:
        """The sandbox's ``deliver``: its events enter this transaction's intake."""

        async def deliver(raw_body: bytes, header: str) -> None:
            held = HELD_DELIVERIES.get(session)
            if held is not None:
                # charge_many stores its charges' events together when they are sent.
                held.append((raw_body, header))
                return
            # The same entry point as POST /api/v1/webhooks/sandbox: signature checked,
            # event stored, processed later by the sweep.
            await self.receive(
                session, env, provider_name="sandbox", raw_body=raw_body, signature_header=header
            )

        return deliver

    def provider(
        self, session: AsyncSession, env: PaymentEnv, *, name: str | None = None
    ) -> PaymentProvider:
        """The configured provider; the sandbox delivers its events into this transaction."""
        return provider_for(env, name=name, deliver=self.deliver_to(session, env))

    def sandbox(self, session: AsyncSession, env: PaymentEnv) -> SandboxProvider:
        """The sandbox, delivering its events into this transaction."""
        return sandbox_for(env, deliver=self.deliver_to(session, env))

    @asynccontextmanager
    async def holding(
        self, session: AsyncSession, env: PaymentEnv, *, provider_name: str
    ) -> AsyncIterator[None]:
        """Hold the events the sandbox sends inside the block; store them with one
        statement when it ends (not when it raises)."""
        held: list[tuple[bytes, str]] = []
        HELD_DELIVERIES.set(session, held)
        try:
            yield
        finally:
            HELD_DELIVERIES.pop(session)
        if held:
            await self.receive_many(session, env, provider_name=provider_name, deliveries=held)


webhook_intake = WebhookIntake()
