"""Disputes (chargebacks): they freeze the organization's paid access while open or
lost; the access listeners (billing) re-evaluate the license state when that changes."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.errors import Conflict, NotFound
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams, PageResult
from tollway.payments import repository
from tollway.payments.env import PaymentEnv
from tollway.payments.listeners import access_listeners
from tollway.payments.models import PaymentDispute
from tollway.payments.service.charges import charge_service

log = structlog.get_logger("tollway.payments")


class DisputeService:
    async def access_frozen(self, session: AsyncSession, *, organization_id: str) -> bool:
        """True while a dispute of the organization is open or was lost."""
        return await repository.has_freezing_dispute(session, organization_id=organization_id)

    async def record_dispute(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        provider: str,
        obj: dict[str, Any],
        closed: bool,
    ) -> None:
        """Set a dispute's state from an event; tell the access listeners when the
        organization's freeze changes. A ``created`` after a ``closed`` changes nothing."""
        dispute_ref = str(obj.get("id") or "")
        status = str(obj.get("status") or ("lost" if closed else "needs_response"))[:30]
        dispute = await repository.get_dispute_by_ref(
            session, provider=provider, provider_ref=dispute_ref
        )
        if dispute is None:
            intent_ref = obj.get("payment_intent")
            payment = await charge_service.find_payment(
                session,
                provider=provider,
                obj=obj,
                intent_ref=intent_ref if isinstance(intent_ref, str) else None,
            )
            if payment is None:
                log.warning("webhook.dispute_payment_unknown", dispute=dispute_ref)
                return
            amount = obj.get("amount")
            dispute = PaymentDispute(
                id=new_id("dsp"),
                organization_id=payment.organization_id,
                provider=provider,
                provider_ref=dispute_ref,
                payment_id=payment.id,
                amount_minor=amount if isinstance(amount, int) else payment.amount_minor,
                currency=str(obj.get("currency") or payment.currency)[:3],
                reason=str(obj.get("reason") or "unknown")[:60],
                status=status,
                opened_at=env.clock.now(),
                created_at=env.clock.now(),
            )
            frozen_before = await self.access_frozen(
                session, organization_id=payment.organization_id
            )
            await repository.add(session, dispute)
        else:
            if dispute.closed_at is not None:
                return
            frozen_before = await self.access_frozen(
                session, organization_id=dispute.organization_id
            )
            dispute.status = status
        if closed and dispute.closed_at is None:
            dispute.closed_at = env.clock.now()
        await self._announce_dispute(
            session,
            env,
            dispute,
            audit_action="dispute.closed" if closed else "dispute.opened",
            event_type="dispute.closed" if closed else "dispute.created",
            frozen_before=frozen_before,
        )

    async def settle_dispute(
        self, session: AsyncSession, env: PaymentEnv, *, dispute_id: str, note: str
    ) -> PaymentDispute:
        """An operator's word that a lost dispute is settled (the customer paid the
        amount back another way): it stops freezing the organization's access, which
        comes back unless another dispute still freezes it. Open disputes are decided by
        the provider, so only a lost one can be settled (409 ``dispute_not_lost``)."""
        dispute = await repository.get_dispute(session, dispute_id)
        if dispute is None:
            raise NotFound("no such dispute", code="dispute_not_found")
        if dispute.status != "lost" or dispute.closed_at is None:
            raise Conflict(
                f"only a lost dispute can be settled; this one is {dispute.status}",
                code="dispute_not_lost",
            )
        frozen_before = await self.access_frozen(session, organization_id=dispute.organization_id)
        dispute.status = "settled"
        await self._announce_dispute(
            session,
            env,
            dispute,
            audit_action="dispute.settled",
            event_type="dispute.settled",
            frozen_before=frozen_before,
            note=note,
        )
        return dispute

    async def _announce_dispute(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        dispute: PaymentDispute,
        *,
        audit_action: str,
        event_type: str,
        frozen_before: bool,
        note: str | None = None,
    ) -> None:
        """Audit and publish a dispute's change; tell the access listeners when the
        organization's freeze changed with it."""
        await session.flush()
        organization_id = dispute.organization_id
        frozen = await self.access_frozen(session, organization_id=organization_id)
        noted = {"note": note} if note is not None else {}
        audit_service.record(
            session,
            action=audit_action,
            target=dispute.id,
            organization_id=organization_id,
            details={"status": dispute.status, "amount": dispute.amount_minor, **noted},
        )
        await outbox.publish(
            session,
            event_type,
            {
                "id": dispute.id,
                "payment_id": dispute.payment_id,
                "amount": dispute.amount_minor,
                "currency": dispute.currency,
                "reason": dispute.reason,
                "status": dispute.status,
                "access_frozen": frozen,
                **noted,
            },
            organization_id=organization_id,
            occurred_at=env.clock.now(),
        )
        if frozen != frozen_before:
            log.warning(
                "payments.access_frozen" if frozen else "payments.access_restored",
                organization=organization_id,
                dispute=dispute.provider_ref,
            )
            for listener in access_listeners():
                await listener(session, env, organization_id)

    async def list_disputes(
        self,
        session: AsyncSession,
        *,
        params: PageParams,
        status: str | None = None,
        organization_id: str | None = None,
    ) -> PageResult[PaymentDispute]:
        return await repository.list_disputes(
            session, params=params, status=status, organization_id=organization_id
        )


dispute_service = DisputeService()
