"""Subscription, invoices, refunds and token-pack purchases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from starlette.responses import Response

from tollway.accounts.service.organizations import organization_service
from tollway.accounts.service.records import BillingProfile
from tollway.auth.dependencies import AdminPrincipal, SpendingPrincipal
from tollway.billing.auth import BillingManager, BillingReader, BillingWriter
from tollway.billing.pdf import render_invoice_pdf
from tollway.billing.schemas import (
    BillingProfileIn,
    BillingProfileOut,
    CreditNoteOut,
    InvoiceDetailOut,
    InvoiceLineOut,
    InvoiceSummaryOut,
    PackPurchaseOut,
    RefundIn,
    SubscriptionChangeIn,
    SubscriptionOut,
)
from tollway.billing.service.invoices import InvoiceView, invoice_service
from tollway.billing.service.lifecycle import lifecycle_service
from tollway.billing.service.packs import pack_service
from tollway.billing.service.subscriptions import subscription_service
from tollway.kit.pagination import Page
from tollway.kit.routing import PageParamsDep, SessionDep, api_router
from tollway.payments.dependencies import PaymentEnvDep

router = api_router(prefix="/api/v1", tags=["billing"])


def _detail(view: InvoiceView) -> InvoiceDetailOut:
    summary = InvoiceSummaryOut.of(view.invoice)
    return InvoiceDetailOut(
        **summary.model_dump(),
        tax_rate_bp=view.invoice.tax_rate_bp,
        tax_inclusive=view.invoice.tax_inclusive,
        tax_country=view.invoice.tax_country,
        lines=[InvoiceLineOut.of(line) for line in view.lines],
        credit_notes=[CreditNoteOut.of(note) for note in view.credit_notes],
    )


def _profile(profile: BillingProfile) -> BillingProfileOut:
    return BillingProfileOut(
        name=profile.name,
        country=profile.country,
        address_lines=profile.address_lines,
        tax_id=profile.tax_id,
    )


@router.get("/billing/profile")
async def get_billing_profile(principal: BillingManager, session: SessionDep) -> BillingProfileOut:
    """Who the organization's invoices are made out to: billing name, ISO country,
    address lines and tax id (owners, admins and the billing role only; 403
    `insufficient_role` for members and API keys)."""
    return _profile(await organization_service.billing_profile(session, principal.organization_id))


@router.put("/billing/profile")
async def put_billing_profile(
    body: BillingProfileIn, principal: BillingManager, session: SessionDep
) -> BillingProfileOut:
    """Replace the billing profile (owners, admins and the billing role only). `country`
    is an ISO 3166-1 alpha-2 code in any case (`de` is stored as `DE`), 422
    `invalid_country` otherwise; it selects the catalog's tax rate. Invoices issued from
    now on print the name (the organization's name when unset), address lines and tax
    id; issued invoices keep theirs."""
    profile = await organization_service.set_billing_profile(
        session,
        principal.organization_id,
        name=body.name,
        country=body.country,
        address_lines=body.address_lines,
        tax_id=body.tax_id,
        actor=principal.actor,
    )
    return _profile(profile)


@router.get("/billing/subscription")
async def get_subscription(
    principal: BillingReader, session: SessionDep, env: PaymentEnvDep
) -> SubscriptionOut:
    """The organization's subscription and license state (every organization starts on Free)."""
    sub = await lifecycle_service.current(session, env, organization_id=principal.organization_id)
    return SubscriptionOut.of(sub)


@router.put("/billing/subscription")
async def change_subscription(
    body: SubscriptionChangeIn,
    principal: BillingWriter,
    _spender: SpendingPrincipal,
    session: SessionDep,
    env: PaymentEnvDep,
) -> SubscriptionOut:
    """Change plan: an upgrade takes effect now with a proration invoice (credit for the
    unused time of the old plan, charge for the rest of the period on the new one); a
    downgrade waits for the period end. It may charge the saved card: scope
    `billing:write` and the right to spend (role `owner` or `billing`, or a key with
    `billing:purchase`). A paid plan needs a default payment method
    (402 `payment_method_required`); an unknown plan is 422 `unknown_plan`, the current
    plan 409 `plan_unchanged`."""
    sub = await subscription_service.change_plan(
        session,
        env,
        organization_id=principal.organization_id,
        plan_id=body.plan,
    )
    return SubscriptionOut.of(sub)


@router.delete("/billing/subscription")
async def cancel_subscription(
    principal: BillingWriter,
    session: SessionDep,
    env: PaymentEnvDep,
    at_period_end: Annotated[bool, Query(description="false cancels now")] = True,
) -> SubscriptionOut:
    """Cancel at the period end (default) or now; the organization then returns to Free."""
    sub = await subscription_service.cancel(
        session,
        env,
        organization_id=principal.organization_id,
        at_period_end=at_period_end,
    )
    return SubscriptionOut.of(sub)


@router.get("/billing/invoices")
async def list_invoices(
    principal: BillingReader,
    session: SessionDep,
    params: PageParamsDep,
) -> Page[InvoiceSummaryOut]:
    """The organization's invoices, newest first."""
    page = await invoice_service.list_invoices(
        session, organization_id=principal.organization_id, params=params
    )
    return Page(
        items=[InvoiceSummaryOut.of(inv) for inv in page.items], next_cursor=page.next_cursor
    )


@router.get("/billing/invoices/{invoice_id}")
async def get_invoice(
    invoice_id: str, principal: BillingReader, session: SessionDep
) -> InvoiceDetailOut:
    """One invoice with its lines and credit notes."""
    view = await invoice_service.get_invoice(
        session, invoice_id=invoice_id, organization_id=principal.organization_id
    )
    return _detail(view)


@router.get(
    "/billing/invoices/{invoice_id}/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}}},
)
async def get_invoice_pdf(
    invoice_id: str, principal: BillingReader, session: SessionDep
) -> Response:
    """The invoice as a PDF: seller, buyer, lines, tax and total."""
    view = await invoice_service.get_invoice(
        session, invoice_id=invoice_id, organization_id=principal.organization_id
    )
    return Response(
        render_invoice_pdf(view.invoice, view.lines, view.credit_notes),
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{view.invoice.number}.pdf"'},
    )


@router.post("/admin/invoices/{invoice_id}/refund", status_code=201)
async def refund_invoice(
    invoice_id: str,
    body: RefundIn,
    _admin: AdminPrincipal,
    session: SessionDep,
    env: PaymentEnvDep,
) -> CreditNoteOut:
    """Refund part or all of a paid invoice (`amount` in minor units; omitted: all that
    is left): issues a credit note. For a token pack the credits are taken back in
    proportion to the amount refunded, rounded down on the running total (floor(tokens x
    refunded so far / paid) less earlier refunds' shares), never more than are unspent;
    the refund completing the invoice's refund takes back all still unspent
    (`credits_reversed`). Above the paid rest: 422 `refund_exceeds_paid`."""
    note = await invoice_service.refund(
        session,
        env,
        invoice_id=invoice_id,
        amount_minor=body.amount,
        reason=body.reason,
    )
    return CreditNoteOut.of(note)


@router.post("/credits/packs/{pack_id}/purchase")
async def purchase_pack(
    pack_id: str,
    principal: SpendingPrincipal,
    session: SessionDep,
    env: PaymentEnvDep,
) -> PackPurchaseOut:
    """Buy a token pack: with a default payment method the charge runs at once and the
    credits land when it succeeds; otherwise the answer carries a `checkout_url`. Needs
    the role `owner` or `billing`, or a key with the scope `billing:purchase` (not in a
    key's default scopes)."""
    order = await pack_service.purchase(
        session,
        env,
        organization_id=principal.organization_id,
        pack_id=pack_id,
    )
    return PackPurchaseOut(
        order_id=order.id,
        status=order.status,
        invoice_id=order.invoice_id,
        checkout_url=order.checkout_url,
    )
