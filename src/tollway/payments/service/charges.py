"""Payments of what other domains sell: off-session charges of the default card, and
the state every payment moves through as the provider's events arrive.

Owners of a payment's ``purpose`` (billing's invoices, marketplace sales) are told
once about each transition (:mod:`tollway.payments.listeners`). Outcomes are never
taken from the provider's answer to a call: they arrive as signed events, and every
success event is checked against our own payment: an amount or currency that
differs is not credited; the payment is ``flagged`` for an operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.kit.ids import new_id
from tollway.payments import repository
from tollway.payments.env import PaymentEnv
from tollway.payments.errors import CardDeclined, PaymentMethodRequired
from tollway.payments.events import publish_payment_event
from tollway.payments.listeners import purpose_listener
from tollway.payments.models import Payment, PaymentMethod
from tollway.payments.providers.protocol import ChargeRequest, PaymentProvider, ProviderEvent
from tollway.payments.service.customers import customer_service
from tollway.payments.service.prepared import PREPARED_CHARGES, READ_PAYMENTS, PreparedCharges
from tollway.payments.webhooks.intake import webhook_intake

log = structlog.get_logger("tollway.payments")

#: Payment status order: an event may move a payment forward, never back. ``flagged``
#: (money whose amount or currency differs from ours) is final until an operator acts.
_STATUS_RANK = {"pending": 0, "failed": 1, "succeeded": 2, "flagged": 3}


def _scope(purpose: str, reference: str) -> str:
    """The idempotency scope of a charge: what is paid (see ChargeService.charge)."""
    return f"{purpose}:{reference}"[:140]


@dataclass(frozen=True, slots=True)
class OffSessionCharge:
    """One off-session charge of an organization's default card (see
    :meth:`ChargeService.charge`)."""

    organization_id: str
    amount_minor: int
    currency: str
    purpose: str
    reference_id: str
    description: str
    attempt: int = 1
    stable_reference: str | None = None


def provider_metadata(
    payment: Payment, *, with_payment_id: bool = True, with_reference: bool = True
) -> dict[str, str]:
    """Tollway's IDs for the provider's object. An off-session charge leaves out the
    IDs a rolled-back transaction would not make again (the payment's own, a renewal
    invoice's): the retry must send exactly the same parameters with its key, and
    the key finds the payment."""
    metadata = {"organization_id": payment.organization_id, "purpose": payment.purpose}
    if with_reference:
        metadata["reference_id"] = payment.reference_id
    if with_payment_id:
        metadata["tollway_payment_id"] = payment.id
    if payment.idempotency_key:
        metadata["tollway_idempotency_key"] = payment.idempotency_key
    return metadata


class ChargeService:
    async def prepare_charges(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        organization_ids: list[str],
        purpose: str,
        stable_references: list[str],
    ) -> None:
        """Read, in two queries, what the off-session charges this transaction is about
        to make (a billing sweep's chunk) need: the organizations' default cards and
        customers, and how many payments the scopes of ``stable_references`` (see
        :meth:`charge`) already have.

        Each reading serves one :meth:`charge` in this transaction; any change of a
        saved card or customer in the transaction drops the cards read.
        """
        found = await repository.list_default_methods_and_customers(
            session, organization_ids=organization_ids, provider=env.settings.payment_provider
        )
        scopes = [_scope(purpose, reference) for reference in stable_references]
        counted = await repository.count_payments_in_scopes(session, scopes=scopes)
        PREPARED_CHARGES.set(
            session,
            PreparedCharges(
                cards={
                    organization_id: found.get(organization_id)
                    for organization_id in organization_ids
                },
                payments_in_scope={scope: counted.get(scope, 0) for scope in scopes},
            ),
        )

    async def charge(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        organization_id: str,
        amount_minor: int,
        currency: str,
        purpose: str,
        reference_id: str,
        description: str,
        attempt: int = 1,
        stable_reference: str | None = None,
    ) -> Payment:
        """Charge the default payment method off-session; the outcome arrives as an event.

        ``stable_reference`` names what is paid when ``reference_id`` is not stable across
        a rolled-back transaction (a renewal's invoice is made again with another ID:
        billing passes the subscription and period). The idempotency key is built from
        it, and the charge's parameters leave out the unstable ID, so the retry is the
        same request to the provider and cannot charge twice.
        """
        (result,) = await self.charge_many(
            session,
            env,
            [
                OffSessionCharge(
                    organization_id=organization_id,
                    amount_minor=amount_minor,
                    currency=currency,
                    purpose=purpose,
                    reference_id=reference_id,
                    description=description,
                    attempt=attempt,
                    stable_reference=stable_reference,
                )
            ],
        )
        if isinstance(result, PaymentMethodRequired):
            raise result
        return result

    async def charge_many(
        self, session: AsyncSession, env: PaymentEnv, charges: list[OffSessionCharge]
    ) -> list[Payment | PaymentMethodRequired]:
        """:meth:`charge` each of ``charges``; an organization without a card gets its
        :class:`PaymentMethodRequired` in the answer, at the charge's place.

        Every payment row is written (its idempotency key taken) by one flush before
        the provider is asked for any of them: a billing sweep's chunk charges a hundred
        renewals with one write instead of one each.
        """
        provider = webhook_intake.provider(session, env)
        results: list[Payment | PaymentMethodRequired] = []
        started: list[tuple[Payment, OffSessionCharge, PaymentMethod, str]] = []
        for charge in charges:
            try:
                payment, method, customer_ref = await self._new_payment(
                    session, env, provider, charge
                )
            except PaymentMethodRequired as required:
                results.append(required)
                continue
            results.append(payment)
            started.append((payment, charge, method, customer_ref))
        # Written (flushed) before the provider is called: the keys are taken.
        await session.flush()
        # The sandbox's events of all the charges are stored together, after them.
        async with webhook_intake.holding(session, env, provider_name=provider.name):
            for payment, charge, method, customer_ref in started:
                await self._send_charge(
                    session, env, provider, payment, charge, method, customer_ref
                )
        return results

    async def _new_payment(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        provider: PaymentProvider,
        charge: OffSessionCharge,
    ) -> tuple[Payment, PaymentMethod, str]:
        """The pending payment of ``charge`` (added, not flushed), its card and customer."""
        organization_id = charge.organization_id
        prepared = PREPARED_CHARGES.get(session)
        if prepared is not None and organization_id in prepared.cards:
            found = prepared.cards.pop(organization_id)
        else:
            found = await repository.get_default_method_and_customer(
                session, organization_id=organization_id, provider=provider.name
            )
        if found is None:
            raise PaymentMethodRequired(
                "add a card first: POST /api/v1/billing/payment-methods",
                add_payment_method_url="/api/v1/billing/payment-methods",
            )
        method, customer_ref = found
        if customer_ref is None:
            customer_ref = await customer_service.ensure_customer(
                session, env, organization_id=organization_id
            )
        # The key names what is paid and the how-manieth payment of it this is, so a
        # retry after a rolled-back transaction sends the same key again and the
        # provider answers the intent it already made instead of charging twice.
        scope = _scope(charge.purpose, charge.stable_reference or charge.reference_id)
        if prepared is not None and scope in prepared.payments_in_scope:
            # Read ahead; used once: the payment made here counts from now on.
            sequence = prepared.payments_in_scope.pop(scope)
        else:
            sequence = await repository.count_payments_in_scope(session, scope=scope)
        payment = Payment(
            id=new_id("pay"),
            organization_id=organization_id,
            provider=method.provider,
            purpose=charge.purpose,
            reference_id=charge.reference_id,
            attempt=charge.attempt,
            idempotency_key=f"{scope}:attempt:{sequence + 1}",
            idempotency_scope=scope,
            amount_minor=charge.amount_minor,
            currency=charge.currency,
            status="pending",
            refunded_minor=0,
            payment_method_id=method.id,
            created_at=env.clock.now(),
        )
        session.add(payment)
        return payment, method, customer_ref

    async def _send_charge(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        provider: PaymentProvider,
        payment: Payment,
        charge: OffSessionCharge,
        method: PaymentMethod,
        customer_ref: str,
    ) -> None:
        assert payment.idempotency_key is not None
        try:
            started = await provider.charge_off_session(
                ChargeRequest(
                    amount_minor=charge.amount_minor,
                    currency=charge.currency,
                    customer_ref=customer_ref,
                    payment_method_ref=method.provider_ref,
                    description=charge.description,
                    idempotency_key=payment.idempotency_key,
                    metadata=provider_metadata(
                        payment,
                        with_payment_id=False,
                        with_reference=charge.stable_reference is None,
                    ),
                )
            )
        except CardDeclined as declined:
            # Stripe answers a declined off-session charge with a card error; the
            # failure is certain, so it is applied now (the event will change nothing).
            intent_ref = declined.extra.get("payment_intent")
            await self.mark_failed(
                session,
                env,
                payment,
                intent_ref=intent_ref if isinstance(intent_ref, str) else None,
                failure_code=str(declined.extra.get("decline_code") or declined.code),
                failure_message=declined.detail,
            )
            return
        if payment.provider_ref is None:
            # Written by the transaction's next flush.
            payment.provider_ref = started.provider_ref

    async def get_payment(
        self, session: AsyncSession, payment_id: str, *, for_update: bool = False
    ) -> Payment | None:
        return await repository.get_payment(session, payment_id, for_update=for_update)

    async def list_payments_for(
        self, session: AsyncSession, *, purpose: str, reference_id: str
    ) -> list[Payment]:
        return await repository.list_payments_for(
            session, purpose=purpose, reference_id=reference_id
        )

    # -- applying provider events (the webhook handlers call these) ----------

    async def find_payment(
        self, session: AsyncSession, *, provider: str, obj: dict[str, Any], intent_ref: str | None
    ) -> Payment | None:
        metadata = obj.get("metadata")
        read = READ_PAYMENTS.get(session) or {}
        payment_id = metadata.get("tollway_payment_id") if isinstance(metadata, dict) else None
        if isinstance(payment_id, str):
            payment = read.get(payment_id) or await repository.get_payment(
                session, payment_id, for_update=True
            )
            if payment is not None and payment.provider == provider:
                return payment
        key = metadata.get("tollway_idempotency_key") if isinstance(metadata, dict) else None
        if isinstance(key, str):
            # The payment row of a rolled-back first try is gone; its retry has the key.
            payment = read.get(key) or await repository.get_payment_by_key(session, key)
            if payment is not None and payment.provider == provider:
                return payment
        if intent_ref:
            return await repository.get_payment_by_provider_ref(
                session, provider=provider, provider_ref=intent_ref
            )
        return None

    async def mark_succeeded(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment, *, intent_ref: str | None
    ) -> None:
        if intent_ref and payment.provider_ref is None:
            payment.provider_ref = intent_ref
        if _STATUS_RANK[payment.status] >= _STATUS_RANK["succeeded"]:
            return
        payment.status = "succeeded"
        payment.succeeded_at = env.clock.now()
        payment.failure_code = None
        await publish_payment_event(session, env, "payment.succeeded", payment)
        listener = purpose_listener(payment.purpose)
        if listener is not None:
            await listener.payment_succeeded(session, env, payment)

    async def succeed_if_amount_matches(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        event: ProviderEvent,
        intent_ref: str | None,
        amount: object,
        currency: object,
    ) -> None:
        """Credit the payment only when the provider's amount and currency are ours."""
        if _STATUS_RANK[payment.status] >= _STATUS_RANK["succeeded"]:
            if intent_ref and payment.provider_ref is None:
                payment.provider_ref = intent_ref
            return
        if (
            isinstance(amount, int)
            and not isinstance(amount, bool)
            and amount == payment.amount_minor
            and isinstance(currency, str)
            and currency.lower() == payment.currency.lower()
        ):
            await self.mark_succeeded(session, env, payment, intent_ref=intent_ref)
            return
        await self.mark_flagged(
            session,
            env,
            payment,
            intent_ref=intent_ref,
            reason=(
                f"event {event.id} ({event.type}) reports {amount!r} {currency!r}, "
                f"the payment is {payment.amount_minor} {payment.currency}"
            ),
        )

    async def mark_flagged(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        intent_ref: str | None,
        reason: str,
    ) -> None:
        if intent_ref and payment.provider_ref is None:
            payment.provider_ref = intent_ref
        if payment.status == "flagged":
            return
        log.error("payment.amount_mismatch", payment=payment.id, reason=reason)
        payment.status = "flagged"
        payment.failure_code = "amount_mismatch"
        payment.failure_message = reason[:300]
        await session.flush()
        audit_service.record(
            session,
            action="payment.flagged",
            target=payment.id,
            organization_id=payment.organization_id,
            details={"reason": reason[:300]},
        )
        await publish_payment_event(session, env, "payment.flagged", payment, reason=reason[:300])

    async def mark_failed(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        intent_ref: str | None,
        failure_code: str | None,
        failure_message: str | None,
    ) -> None:
        if intent_ref and payment.provider_ref is None:
            payment.provider_ref = intent_ref
        if _STATUS_RANK[payment.status] >= _STATUS_RANK["failed"]:
            return
        payment.status = "failed"
        payment.failed_at = env.clock.now()
        payment.failure_code = (failure_code or "failed")[:60]
        payment.failure_message = (failure_message or "")[:300] or None
        await session.flush()
        await publish_payment_event(
            session, env, "payment.failed", payment, failure_code=payment.failure_code
        )
        listener = purpose_listener(payment.purpose)
        if listener is not None:
            await listener.payment_failed(session, env, payment)


charge_service = ChargeService()
