"""Invoices: their lines (base fee, overage), building, taxing and numbering them,
reading them, and refunds (credit notes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.models import Organization
from tollway.accounts.service.organizations import organization_service
from tollway.audit.service import audit_service
from tollway.billing import repository
from tollway.billing.adapters import catalog, credits
from tollway.billing.arithmetic import tax_exclusive, tax_inclusive
from tollway.billing.errors import InvoiceNotFound
from tollway.billing.models import CreditNote, Invoice, InvoiceLine, Subscription
from tollway.billing.ports import PlanTerms
from tollway.billing.service.base import INVOICE_PURPOSE, publish_invoice
from tollway.billing.service.collection import collection_service
from tollway.errors import Conflict
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams, PageResult
from tollway.kit.session_state import SessionKey
from tollway.payments.env import PaymentEnv
from tollway.payments.errors import RefundExceedsPaid
from tollway.payments.service.charges import charge_service
from tollway.payments.service.refunds import refund_service

#: The buyers of a chunk's invoices, read ahead by :meth:`InvoiceService.prepare_buyers`.
_BUYERS: SessionKey[dict[str, Organization]] = SessionKey("tollway.billing.organizations")


@dataclass(frozen=True, slots=True)
class LineSpec:
    kind: str
    description: str
    amount_minor: int
    quantity: int = 1
    unit_amount_minor: int | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class InvoiceView:
    invoice: Invoice
    lines: list[InvoiceLine]
    credit_notes: list[CreditNote]


def refunded_credit_share(
    tokens: int, *, paid_minor: int, refunded_before_minor: int, refunded_after_minor: int
) -> int:
    """The credits a partial refund takes back: its share of the pack's ``tokens``.

    Rounded down on the running total: floor(tokens x refunded so far / paid) less the
    same figure before this refund. Each refund therefore takes only its own share, and
    the shares of successive refunds add up to floor(tokens x total refunded / paid):
    500 tokens paid 2,900, refunded 1,000 then 1,000 again: 172, then 344 - 172 = 172.
    (Credits, not money: rounded down, never half up, so that refunds never take back
    a credit more than their share; the API documents this rule.)
    """
    if paid_minor <= 0:
        return 0
    return (tokens * refunded_after_minor) // paid_minor - (
        tokens * refunded_before_minor
    ) // paid_minor


class InvoiceService:
    def base_line(self, plan: PlanTerms, start: datetime, end: datetime) -> LineSpec:
        return LineSpec(
            kind="base",
            description=f"{plan.name} plan ({start:%Y-%m-%d} - {end:%Y-%m-%d})",
            amount_minor=plan.amount_minor,
            unit_amount_minor=plan.amount_minor,
            period_start=start,
            period_end=end,
            reference=plan.id,
        )

    async def overage_lines(
        self,
        session: AsyncSession,
        sub: Subscription,
        plan: PlanTerms,
        start: datetime,
        end: datetime,
    ) -> list[LineSpec]:
        """The period's usage above each meter's included amount, in whole blocks."""
        lines: list[LineSpec] = []
        for price in plan.meter_prices:
            used = await catalog().usage(
                session, sub.organization_id, price.meter, period_start=start, period_end=end
            )
            over = max(0, used - price.included)
            if over == 0 or price.unit_amount_minor == 0:
                continue
            # Whole blocks of per_units, rounded up: 1,001 calls at 1,000 per block is 2
            # blocks (a count of blocks, not money: the amount is exact, blocks x price).
            blocks = -(-over // max(1, price.per_units))
            lines.append(
                LineSpec(
                    kind="overage",
                    description=f"{price.meter}: {over} over the {price.included} included",
                    amount_minor=blocks * price.unit_amount_minor,
                    quantity=blocks,
                    unit_amount_minor=price.unit_amount_minor,
                    period_start=start,
                    period_end=end,
                    reference=price.meter,
                )
            )
        return lines

    async def prepare_buyers(self, session: AsyncSession, organization_ids: list[str]) -> None:
        """Read the buyers (name, address, tax country) of the invoices this transaction
        will issue to these organizations in one query (a renewal chunk's)."""
        held = _BUYERS.setdefault(session, dict)
        held.update(await organization_service.get_organizations(session, organization_ids))

    async def issue(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        sub: Subscription | None,
        organization_id: str,
        currency: str,
        reason: str,
        period: tuple[datetime, datetime] | None,
        lines: list[LineSpec],
    ) -> Invoice:
        """Build, tax and finalize an invoice (draft -> open, numbered); paid at once if 0."""
        now = env.clock.now()
        organization = (_BUYERS.get(session) or {}).get(
            organization_id
        ) or await organization_service.get_organization(session, organization_id)
        country = organization.billing_country.upper() if organization.billing_country else None
        rate = await catalog().tax_rate(session, country)
        subtotal = sum(line.amount_minor for line in lines)
        rate_bp = rate.rate_bp if rate else 0
        inclusive = bool(rate and rate.inclusive)
        if subtotal <= 0 or rate_bp == 0:
            tax = 0
        elif inclusive:
            tax = tax_inclusive(subtotal, rate_bp)
        else:
            tax = tax_exclusive(subtotal, rate_bp)
        total = subtotal if inclusive else subtotal + tax
        settings = env.settings
        # The draft is built and finalized (numbered, open) in this one transaction, so
        # no other transaction ever sees it as a draft; the number is taken last-moment
        # from the locked per-year counter.
        number = await repository.next_number(session, series=f"TW-{now.year}")
        invoice = Invoice(
            id=new_id("inv"),
            number=f"TW-{now.year}-{number:06d}",
            issued_at=now,
            organization_id=organization_id,
            subscription_id=sub.id if sub else None,
            status="open",
            billing_reason=reason,
            currency=currency,
            subtotal_minor=subtotal,
            tax_minor=tax,
            total_minor=max(0, total),
            # Set here, not by the column defaults: the row is read before it is flushed.
            amount_paid_minor=0,
            amount_refunded_minor=0,
            tax_rate_bp=rate_bp,
            tax_inclusive=inclusive,
            tax_country=country,
            period_start=period[0] if period else None,
            period_end=period[1] if period else None,
            parties={
                "seller": {
                    "name": settings.seller_name,
                    "address": settings.seller_address,
                    "tax_id": settings.seller_tax_id,
                },
                "buyer": {
                    "organization_id": organization_id,
                    "name": organization.billing_name or organization.name,
                    "address_lines": list(organization.billing_address or []),
                    "tax_id": organization.billing_tax_id,
                    "email": organization.billing_email,
                    "country": country,
                },
                "tax_name": rate.name if rate else None,
            },
            created_at=now,
        )
        # Written with its lines and the charge's payment by one flush (the charge's).
        await repository.add(session, invoice, flush=False)
        for position, spec in enumerate(lines, start=1):
            session.add(
                InvoiceLine(
                    id=new_id("il"),
                    invoice_id=invoice.id,
                    position=position,
                    kind=spec.kind,
                    description=spec.description[:300],
                    quantity=spec.quantity,
                    unit_amount_minor=spec.unit_amount_minor
                    if spec.unit_amount_minor is not None
                    else spec.amount_minor,
                    amount_minor=spec.amount_minor,
                    period_start=spec.period_start,
                    period_end=spec.period_end,
                    reference=spec.reference,
                )
            )
        await publish_invoice(session, env, invoice, "invoice.finalized")
        if invoice.total_minor == 0:
            await collection_service.invoice_paid(session, env, invoice, 0)
        return invoice

    async def list_invoices(
        self, session: AsyncSession, *, organization_id: str, params: PageParams
    ) -> PageResult[Invoice]:
        return await repository.list_invoices(
            session, organization_id=organization_id, params=params
        )

    async def get_invoice(
        self, session: AsyncSession, *, invoice_id: str, organization_id: str | None
    ) -> InvoiceView:
        invoice = await repository.get_invoice(session, invoice_id, organization_id=organization_id)
        if invoice is None or invoice.status == "draft":
            raise InvoiceNotFound("no such invoice")
        return InvoiceView(
            invoice=invoice,
            lines=await repository.list_lines(session, invoice_id=invoice.id),
            credit_notes=await repository.list_credit_notes(session, invoice_id=invoice.id),
        )

    async def refund(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        invoice_id: str,
        amount_minor: int | None,
        reason: str,
    ) -> CreditNote:
        """Refund part or all of a paid invoice: a credit note, the provider's refund, and
        for a token pack its credits taken back in proportion to the amount refunded
        (:func:`refunded_credit_share`), never more than the pack has unspent; the refund
        that completes the invoice's refund takes back all that is unspent."""
        invoice = await repository.get_invoice(session, invoice_id, for_update=True)
        if invoice is None or invoice.status == "draft":
            raise InvoiceNotFound("no such invoice")
        if invoice.status != "paid":
            raise Conflict("only a paid invoice can be refunded", code="invoice_not_paid")
        refundable = invoice.amount_paid_minor - invoice.amount_refunded_minor
        amount = refundable if amount_minor is None else amount_minor
        if amount <= 0 or amount > refundable:
            raise RefundExceedsPaid(
                f"at most {refundable} {invoice.currency} can still be refunded",
                refundable=refundable,
            )
        now = env.clock.now()
        refund_ref: str | None = None
        remaining = amount
        for payment in await charge_service.list_payments_for(
            session, purpose=INVOICE_PURPOSE, reference_id=invoice.id
        ):
            available = payment.amount_minor - payment.refunded_minor
            if payment.status != "succeeded" or available <= 0 or remaining == 0:
                continue
            part = min(available, remaining)
            # Payments counts the refund at once (``refunded_minor``), so that a second
            # refund before the event arrives cannot exceed the payment; the event then
            # records nothing new.
            refund_ref = await refund_service.refund(
                session, env, payment=payment, amount_minor=part
            )
            remaining -= part
        refunded_before = invoice.amount_refunded_minor
        invoice.amount_refunded_minor += amount
        reversed_credits = 0
        order = await repository.get_pack_order_by_invoice(session, invoice_id=invoice.id)
        fully_refunded = invoice.amount_refunded_minor >= invoice.amount_paid_minor
        if order is not None and order.granted_at is not None:
            reference = f"pack:{order.id}"
            if fully_refunded:
                # The refund that completes the invoice's refund takes back everything of
                # the pack still unspent (and what is held from it, when the hold ends).
                reversed_credits = await credits().reverse_unspent(
                    session, order.organization_id, reference=reference, now=now
                )
                order.status = "refunded"
            else:
                share = refunded_credit_share(
                    order.tokens,
                    paid_minor=invoice.amount_paid_minor,
                    refunded_before_minor=refunded_before,
                    refunded_after_minor=invoice.amount_refunded_minor,
                )
                if share > 0:
                    reversed_credits = await credits().reverse_unspent(
                        session,
                        order.organization_id,
                        reference=reference,
                        now=now,
                        amount=share,
                    )
        number = await repository.next_number(session, series=f"CN-{now.year}")
        note = CreditNote(
            id=new_id("cn"),
            number=f"CN-{now.year}-{number:06d}",
            invoice_id=invoice.id,
            organization_id=invoice.organization_id,
            amount_minor=amount,
            currency=invoice.currency,
            reason=reason[:300],
            refund_ref=refund_ref,
            credits_reversed=reversed_credits,
            issued_at=now,
            created_at=now,
        )
        await repository.add(session, note)
        audit_service.record(
            session,
            action="invoice.refunded",
            target=invoice.id,
            organization_id=invoice.organization_id,
            details={
                "amount": amount,
                "credit_note": note.number,
                "credits_reversed": reversed_credits,
            },
        )
        await outbox.publish(
            session,
            "credit_note.issued",
            {
                "id": note.id,
                "number": note.number,
                "invoice_id": invoice.id,
                "amount": amount,
                "currency": invoice.currency,
                "credits_reversed": reversed_credits,
            },
            organization_id=invoice.organization_id,
            occurred_at=now,
        )
        return note


invoice_service = InvoiceService()
