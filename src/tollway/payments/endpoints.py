"""Payment methods, the incoming provider webhooks and the sandbox's hosted checkout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Body, Form, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import Response

from tollway.auth.dependencies import AdminPrincipal
from tollway.errors import TollwayError
from tollway.kit.money import Money
from tollway.kit.pagination import Page
from tollway.kit.routing import ClockDep, PageParamsDep, SessionDep, api_router
from tollway.payments.auth import BillingReader, BillingWriter
from tollway.payments.dependencies import PaymentEnvDep
from tollway.payments.providers.protocol import CardInput
from tollway.payments.providers.sandbox import CHECKOUT_PATH
from tollway.payments.providers.signature import SIGNATURE_HEADER
from tollway.payments.schemas import (
    DisputeOut,
    DisputeSettleIn,
    PaymentMethodIn,
    PaymentMethodListOut,
    PaymentMethodOut,
    PortalSessionOut,
    SetupSessionOut,
    WebhookEventOut,
    WebhookReceiptOut,
)
from tollway.payments.service.checkout import checkout_service
from tollway.payments.service.customers import customer_service
from tollway.payments.service.disputes import dispute_service
from tollway.payments.service.methods import SetupStarted, payment_method_service
from tollway.payments.webhooks.intake import webhook_intake
from tollway.payments.webhooks.queue import webhook_queue

router = api_router(prefix="/api/v1", tags=["payments"])

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


@router.get("/billing/payment-methods")
async def list_payment_methods(
    principal: BillingReader, session: SessionDep, env: PaymentEnvDep
) -> PaymentMethodListOut:
    """The organization's saved payment methods, newest first; the default one pays."""
    methods = await payment_method_service.list_methods(
        session, env, organization_id=principal.organization_id
    )
    return PaymentMethodListOut(items=[PaymentMethodOut.model_validate(m) for m in methods])


@router.post(
    "/billing/payment-methods",
    status_code=201,
    responses={200: {"model": SetupSessionOut, "description": "stripe: the card set-up page"}},
)
async def add_payment_method(
    principal: BillingWriter,
    session: SessionDep,
    env: PaymentEnvDep,
    response: Response,
    body: Annotated[PaymentMethodIn | None, Body()] = None,
) -> PaymentMethodOut | SetupSessionOut:
    """Save a card and make it the default.

    **sandbox** (201): send the card; Stripe's test numbers work: `4242424242424242`
    succeeds, `4000000000000002` is declined (402 `card_declined`), `4000000000000341`
    is saved but every charge fails. Invalid fields: 422 `invalid_card`.

    **stripe** (200): send no body; the answer's `setup_url` is Stripe Checkout in
    `setup` mode, where the customer enters the card. The card appears in the list
    (and becomes the default) when Stripe's `setup_intent.succeeded` event arrives.
    Card numbers sent to Tollway are refused (422 `card_numbers_not_accepted`).
    """
    card = (
        CardInput(
            number=body.card_number, exp_month=body.exp_month, exp_year=body.exp_year, cvc=body.cvc
        )
        if body is not None
        else None
    )
    result = await payment_method_service.add_payment_method(
        session, env, organization_id=principal.organization_id, card=card
    )
    if isinstance(result, SetupStarted):
        response.status_code = 200
        return SetupSessionOut(setup_url=result.url)
    return PaymentMethodOut.model_validate(result)


@router.post("/billing/portal-session")
async def open_customer_portal(
    principal: BillingWriter, session: SessionDep, env: PaymentEnvDep
) -> PortalSessionOut:
    """A Stripe Customer Portal session (cards, receipts) for the organization: open `url`.

    The sandbox has no portal (404 `not_offered_by_provider`).
    """
    url = await customer_service.portal_url(session, env, organization_id=principal.organization_id)
    return PortalSessionOut(url=url)


@router.delete("/billing/payment-methods/{method_id}", status_code=204)
async def remove_payment_method(
    method_id: str,
    principal: BillingWriter,
    session: SessionDep,
    env: PaymentEnvDep,
) -> Response:
    """Remove a saved payment method; the newest remaining one becomes the default."""
    await payment_method_service.remove_method(
        session,
        env,
        organization_id=principal.organization_id,
        method_id=method_id,
    )
    return Response(status_code=204)


@router.post("/webhooks/sandbox")
async def receive_sandbox_event(
    request: Request, session: SessionDep, env: PaymentEnvDep
) -> WebhookReceiptOut:
    """Events of the sandbox provider, signed like Stripe's (`Stripe-Signature`).

    The signature is checked on the raw body (400 `webhook_signature_invalid`,
    `webhook_signature_missing`, `webhook_timestamp_out_of_tolerance`); the event is
    stored and answered at once, and processed by a background sweep. A duplicate
    delivery is answered 200 and changes nothing. 404 `provider_not_configured` when
    Tollway runs on Stripe.
    """
    row_id, duplicate = await webhook_intake.receive(
        session,
        env,
        provider_name="sandbox",
        raw_body=await request.body(),
        signature_header=request.headers.get(SIGNATURE_HEADER),
    )
    return WebhookReceiptOut(received=True, duplicate=duplicate, id=row_id)


@router.post("/webhooks/stripe")
async def receive_stripe_event(
    request: Request, session: SessionDep, env: PaymentEnvDep
) -> WebhookReceiptOut:
    """Stripe's events (the endpoint to register in the Stripe dashboard, docs/stripe.md).

    `Stripe-Signature` is checked on the raw body against every configured secret
    (`TOLLWAY_STRIPE_WEBHOOK_SECRET`, comma-separated during a rotation), with 300 s
    tolerance: 400 `webhook_signature_invalid`, `webhook_signature_missing`,
    `webhook_timestamp_out_of_tolerance`. The event is stored and answered at once,
    and processed by a background sweep; a redelivery is answered 200 and changes
    nothing. 404 `provider_not_configured` when Tollway does not run on Stripe.
    """
    row_id, duplicate = await webhook_intake.receive(
        session,
        env,
        provider_name="stripe",
        raw_body=await request.body(),
        signature_header=request.headers.get(SIGNATURE_HEADER),
    )
    return WebhookReceiptOut(received=True, duplicate=duplicate, id=row_id)


@router.get("/payments/checkout/done", response_class=HTMLResponse)
async def checkout_done() -> HTMLResponse:
    """Where the provider's hosted pages return the customer to."""
    return HTMLResponse(
        "<!doctype html><title>Tollway</title><p>Thank you. You can close this page; "
        "Tollway records the result as soon as the payment provider confirms it.</p>"
    )


@router.get("/admin/webhook-events")
async def list_webhook_events(
    _admin: AdminPrincipal,
    session: SessionDep,
    params: PageParamsDep,
    status: Annotated[str | None, Query(pattern="^(pending|processed|ignored|parked)$")] = None,
) -> Page[WebhookEventOut]:
    """Incoming provider events; `?status=parked` lists those that failed too often."""
    page = await webhook_queue.list_events(session, params=params, status=status)
    return Page(
        items=[WebhookEventOut.model_validate(row) for row in page.items],
        next_cursor=page.next_cursor,
    )


@router.post("/admin/webhook-events/{event_row_id}/retry")
async def retry_webhook_event(
    event_row_id: str, _admin: AdminPrincipal, session: SessionDep, clock: ClockDep
) -> WebhookEventOut:
    """Put a parked event back in the queue for another round of attempts."""
    row = await webhook_queue.requeue(session, row_id=event_row_id, now=clock.now())
    return WebhookEventOut.model_validate(row)


@router.get("/admin/disputes")
async def list_disputes(
    _admin: AdminPrincipal,
    session: SessionDep,
    params: PageParamsDep,
    status: Annotated[str | None, Query(max_length=30)] = None,
    organization_id: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[DisputeOut]:
    """Chargebacks of every organization; `?status=lost` lists those freezing access for good."""
    page = await dispute_service.list_disputes(
        session, params=params, status=status, organization_id=organization_id
    )
    return Page(
        items=[DisputeOut.model_validate(row) for row in page.items],
        next_cursor=page.next_cursor,
    )


@router.post("/admin/disputes/{dispute_id}/settle")
async def settle_dispute(
    dispute_id: str,
    body: DisputeSettleIn,
    _admin: AdminPrincipal,
    session: SessionDep,
    env: PaymentEnvDep,
) -> DisputeOut:
    """Lift the freeze of a lost dispute the customer has paid back another way.

    The dispute becomes `settled`; the organization's paid access comes back unless
    another dispute still freezes it (audit `dispute.settled` with the note, outbox event
    `dispute.settled`). Only a `lost` dispute can be settled: 409 `dispute_not_lost`."""
    dispute = await dispute_service.settle_dispute(
        session, env, dispute_id=dispute_id, note=body.note
    )
    return DisputeOut.model_validate(dispute)


def _render_checkout(
    *, ref: str, description: str, amount: Money, status: str, year: int, error: str | None
) -> str:
    return _templates.get_template("checkout.html").render(
        description=description,
        amount=amount.format(),
        status=status,
        pay_url=f"{CHECKOUT_PATH}{ref}/pay",
        default_year=year + 3,
        error=error,
    )


@router.get(CHECKOUT_PATH.removeprefix("/api/v1") + "{session_ref}", response_class=HTMLResponse)
async def sandbox_checkout_page(
    session_ref: str, session: SessionDep, clock: ClockDep
) -> HTMLResponse:
    """The sandbox's hosted checkout page for a one-off purchase."""
    checkout = await checkout_service.get_sandbox_checkout(session, session_ref=session_ref)
    html = _render_checkout(
        ref=session_ref,
        description=checkout.description,
        amount=Money(checkout.amount_minor, checkout.currency),
        status=checkout.status,
        year=clock.now().year,
        error=None,
    )
    return HTMLResponse(html)


@router.post(
    CHECKOUT_PATH.removeprefix("/api/v1") + "{session_ref}/pay", response_class=HTMLResponse
)
async def sandbox_checkout_pay(
    session_ref: str,
    session: SessionDep,
    env: PaymentEnvDep,
    card_number: Annotated[str, Form(max_length=30)],
    exp_month: Annotated[int, Form()],
    exp_year: Annotated[int, Form()],
    cvc: Annotated[str, Form(max_length=4)],
) -> HTMLResponse:
    """The pay button: the sandbox charges the card and sends the signed outcome events."""
    card = CardInput(number=card_number, exp_month=exp_month, exp_year=exp_year, cvc=cvc)
    try:
        checkout = await checkout_service.pay_sandbox_checkout(
            session, env, session_ref=session_ref, card=card
        )
    except TollwayError as error:
        if error.status not in (402, 422):
            raise
        checkout = await checkout_service.get_sandbox_checkout(session, session_ref=session_ref)
        html = _render_checkout(
            ref=session_ref,
            description=checkout.description,
            amount=Money(checkout.amount_minor, checkout.currency),
            status=checkout.status,
            year=env.clock.now().year,
            error=error.detail,
        )
        return HTMLResponse(html, status_code=error.status)
    html = _render_checkout(
        ref=session_ref,
        description=checkout.description,
        amount=Money(checkout.amount_minor, checkout.currency),
        status=checkout.status,
        year=env.clock.now().year,
        error=None,
    )
    return HTMLResponse(html)
