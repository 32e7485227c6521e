"""Collection and dunning: charging invoices off-session, and what a payment's outcome
does to the invoice, its subscription (past due, retries, back to active) and a token
pack's order. The outcome arrives from payments (:data:`invoice_payments`)."""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.billing import repository
from tollway.billing.adapters import catalog, credits
from tollway.billing.arithmetic import period_bounds
from tollway.billing.models import RETRY_DUE, Invoice, Subscription
from tollway.billing.service.allotments import allotment_service
from tollway.billing.service.base import (
    INVOICE_PURPOSE,
    OWING_STATUSES,
    publish_invoice,
    set_status,
    stable_reference,
    subscription_plan,
    touch,
)
from tollway.billing.service.license import license_state_service
from tollway.billing.service.lifecycle import lifecycle_service
from tollway.billing.service.orders import pack_order_service
from tollway.payments.env import PaymentEnv
from tollway.payments.errors import PaymentMethodRequired
from tollway.payments.models import Payment
from tollway.payments.service.charges import OffSessionCharge, charge_service

log = structlog.get_logger("tollway.billing")

#: An invoice to charge and the dunning attempt the charge is.
InvoiceAttempt = tuple[Invoice, int]


class CollectionService:
    async def collect(
        self, session: AsyncSession, env: PaymentEnv, invoice: Invoice, *, attempt: int
    ) -> None:
        """Charge the invoice's amount due off-session; the outcome arrives as an event."""
        await self.charge(session, env, [(invoice, attempt)])

    async def collect_open(
        self, session: AsyncSession, env: PaymentEnv, sub: Subscription, *, attempt: int
    ) -> None:
        for invoice in await repository.list_open_invoices(session, subscription_id=sub.id):
            await self.collect(session, env, invoice, attempt=attempt)

    async def charge(
        self, session: AsyncSession, env: PaymentEnv, invoices: list[InvoiceAttempt]
    ) -> None:
        """Charge these invoices together (one call of payments for all of them)."""
        charges: list[OffSessionCharge] = []
        for invoice, attempt in invoices:
            stable: str | None = None
            description = f"Invoice {invoice.number}"
            if invoice.subscription_id is not None and invoice.period_start is not None:
                # A renewal rolled back after the provider answered is made again with a
                # new invoice ID and maybe another number: the charge is named by what
                # does not change (subscription, period, reason) so its retry cannot
                # charge twice.
                stable = stable_reference(
                    invoice.subscription_id, invoice.period_start, invoice.billing_reason
                )
                description = f"Subscription, period from {invoice.period_start:%Y-%m-%d}"
            charges.append(
                OffSessionCharge(
                    organization_id=invoice.organization_id,
                    amount_minor=invoice.total_minor - invoice.amount_paid_minor,
                    currency=invoice.currency,
                    purpose=INVOICE_PURPOSE,
                    reference_id=invoice.id,
                    description=description,
                    attempt=attempt,
                    stable_reference=stable,
                )
            )
        results = await charge_service.charge_many(session, env, charges)
        for (invoice, attempt), result in zip(invoices, results, strict=True):
            if isinstance(result, PaymentMethodRequired):
                # No card to charge: the attempt fails at once, like a declined card.
                await self.attempt_failed(session, env, invoice, attempt=attempt)

    async def attempt_failed(
        self, session: AsyncSession, env: PaymentEnv, invoice: Invoice, *, attempt: int
    ) -> None:
        """Collection attempt ``attempt`` of an open invoice failed: a token pack's order
        fails; a subscription goes past due (grace), is retried on the catalog's
        schedule, and after the last retry is unpaid or canceled."""
        if invoice.status != "open":
            return
        order = await pack_order_service.for_invoice(session, invoice)
        if order is not None:
            await pack_order_service.fail(session, env, order)
            return
        if invoice.subscription_id is None:
            return
        sub = await repository.get_subscription(session, invoice.subscription_id, for_update=True)
        if sub is None or not sub.is_current or sub.status == "canceled":
            return
        if sub.status == "incomplete":
            return  # a first invoice: nothing was granted, the organization stays on Free
        now = env.clock.now()
        policy = await catalog().dunning_policy(session)
        if sub.past_due_since is None:
            sub.past_due_since = now
            sub.grace_ends_at = now + timedelta(days=policy.grace_days)
            await set_status(session, env, sub, "past_due")
            await license_state_service.set_state(session, env, sub, "grace")
        sub.failed_attempts = max(sub.failed_attempts, attempt)
        if sub.failed_attempts <= len(policy.retry_days):
            days = sum(policy.retry_days[: sub.failed_attempts])
            sub.next_retry_at = sub.past_due_since + timedelta(days=days)
            touch(env, sub)
            return
        sub.next_retry_at = None
        touch(env, sub)
        if policy.final_status == "canceled":
            await lifecycle_service.end(
                session, env, sub, at=now, void_open=False, uncollectible=True
            )
            return
        await set_status(session, env, sub, "unpaid")
        if sub.license_state != "restricted":
            await license_state_service.set_state(session, env, sub, "restricted")

    async def invoice_paid(
        self, session: AsyncSession, env: PaymentEnv, invoice: Invoice, payment_minor: int
    ) -> None:
        """``payment_minor`` paid the invoice (0: its total is zero): a token pack's
        credits land; a subscription with nothing left open is active again and gets
        its period's allotment."""
        now = env.clock.now()
        if invoice.status not in ("open", "uncollectible"):
            return
        invoice.status = "paid"
        invoice.paid_at = now
        invoice.amount_paid_minor = min(
            invoice.total_minor, invoice.amount_paid_minor + payment_minor
        )
        audit_service.record(
            session,
            action="invoice.paid",
            target=invoice.id,
            organization_id=invoice.organization_id,
            details={"total": invoice.total_minor},
        )
        await publish_invoice(session, env, invoice, "invoice.paid")
        order = await pack_order_service.for_invoice(session, invoice)
        if order is not None:
            await pack_order_service.fulfil(session, env, order)
            return
        if invoice.subscription_id is None:
            return
        sub = await repository.get_subscription(session, invoice.subscription_id, for_update=True)
        if sub is None or not sub.is_current:
            return
        if await repository.list_open_invoices(session, subscription_id=sub.id):
            return
        if sub.status in OWING_STATUSES:
            if sub.status == "unpaid" and sub.current_period_end <= now:
                # Renewals stopped while unpaid: start a fresh period from today.
                plan = await subscription_plan(session, sub)
                sub.billing_anchor, sub.period_index = now, 0
                sub.current_period_start, sub.current_period_end = period_bounds(
                    now, 0, plan.interval
                )
            sub.past_due_since = None
            sub.failed_attempts = 0
            sub.next_retry_at = None
            sub.grace_ends_at = None
            await set_status(session, env, sub, "active")
            if sub.license_state != "active":
                await license_state_service.set_state(session, env, sub, "active")
            else:
                await license_state_service.sync(session, sub)
        plan = await subscription_plan(session, sub)
        await allotment_service.grant_period(session, env, sub, plan)

    async def retry(self, session: AsyncSession, env: PaymentEnv, *, subscription_id: str) -> bool:
        """The next dunning attempt of one past-due subscription (row claimed by the caller)."""
        sub = await session.get(Subscription, subscription_id)
        if sub is None or not RETRY_DUE.is_due(sub, env.clock.now()):
            return False
        sub.next_retry_at = None  # set again when this attempt fails
        touch(env, sub)
        await self.collect_open(session, env, sub, attempt=sub.failed_attempts + 1)
        return True

    async def retry_after_new_card(
        self, session: AsyncSession, env: PaymentEnv, organization_id: str
    ) -> None:
        """A new default card pays what is open right away (Stripe retries on a new card)."""
        sub = await repository.get_current_subscription(
            session, organization_id=organization_id, for_update=True
        )
        if sub is None or sub.status not in OWING_STATUSES:
            return
        await self.collect_open(session, env, sub, attempt=sub.failed_attempts + 1)


class InvoicePayments:
    """Told by payments when a charge for an invoice succeeded or failed."""

    async def read_ahead(
        self, session: AsyncSession, env: PaymentEnv, payments: list[Payment]
    ) -> None:
        """Lock and read what the events of these payments will need (their invoices,
        subscriptions, the organizations' ledger accounts and allotments) in a few
        queries instead of several per event: a chunk of the events a billing run made."""
        held = await repository.read_ahead(
            session, invoice_ids=[payment.reference_id for payment in payments]
        )
        periods = sorted(
            {(sub.organization_id, sub.current_period_start) for sub in held.subscriptions.values()}
        )
        await credits().prepare_allotments(session, periods)

    async def payment_succeeded(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None:
        invoice = await self._invoice(session, payment)
        if invoice is not None:
            await collection_service.invoice_paid(session, env, invoice, payment.amount_minor)

    async def payment_failed(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None:
        invoice = await self._invoice(session, payment)
        if invoice is not None:
            await collection_service.attempt_failed(session, env, invoice, attempt=payment.attempt)

    async def payment_refunded(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        refunded_minor_before: int,
    ) -> None:
        """Nothing: an invoice refund is made by
        :meth:`~tollway.billing.service.invoices.InvoiceService.refund`, which issues
        the credit note and takes token-pack credits back itself (it is also what asked
        payments for the refund, so handling it here would count it twice). A refund
        made in the provider's dashboard is recorded on the payment only, as before
        this hook existed: no credit note, credits stay."""

    async def _invoice(self, session: AsyncSession, payment: Payment) -> Invoice | None:
        invoice = await repository.get_invoice(session, payment.reference_id, for_update=True)
        if invoice is None:
            log.warning("billing.payment_for_unknown_invoice", payment=payment.id)
        return invoice


collection_service = CollectionService()
#: Entered in payments' listeners by :mod:`tollway.wiring`.
invoice_payments = InvoicePayments()
