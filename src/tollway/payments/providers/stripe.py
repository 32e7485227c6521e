"""The ``stripe`` provider: the official ``stripe`` SDK behind the ``PaymentProvider`` protocol.

- One :class:`stripe.StripeClient` per API key and event loop, with the API version
  pinned (:data:`STRIPE_API_VERSION`), ``max_network_retries`` set
  (``TOLLWAY_STRIPE_MAX_NETWORK_RETRIES``) and the async ``httpx`` transport.
- Every POST carries an ``Idempotency-Key`` derived from Tollway IDs, so the SDK's
  retries, and a retry of ours after a rolled-back transaction, never charge twice.
- Tollway IDs travel in ``metadata`` (``tollway_payment_id``, ``organization_id``,
  ``purpose``, ``reference_id``); the webhook handlers find the payment from them.
- Card numbers never reach Tollway: cards are saved through Checkout in ``setup``
  mode and arrive as ``setup_intent.succeeded`` / ``payment_method.attached`` events.
- Stripe errors become problem+json: a card error is 402 ``card_declined`` (with its
  ``decline_code``), a connection failure, rate limit or 5xx after the retries is
  503 ``provider_unavailable``, anything else Stripe refuses is 502 ``payment_failed``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import stripe
import structlog
from stripe.params import CustomerCreateParams
from stripe.params.checkout import SessionCreateParams

from tollway.config import Settings
from tollway.kit.clock import Clock
from tollway.payments.errors import (
    CardDeclined,
    NotOfferedByProvider,
    PaymentFailed,
    ProviderUnavailable,
)
from tollway.payments.providers import signature
from tollway.payments.providers.protocol import (
    AttachedMethod,
    CardInput,
    ChargeRequest,
    ChargeStarted,
    CheckoutRequest,
    CheckoutStarted,
    ProviderEvent,
    RefundRequest,
    RefundStarted,
    SetupRequest,
)
from tollway.payments.providers.sandbox import parse_stripe_shaped_event

log = structlog.get_logger("tollway.payments.stripe")

#: The Stripe API version every request (and the webhook endpoint) uses. It is the
#: version the pinned SDK (``stripe`` 16.1) was generated for; changing it is a
#: deliberate upgrade (docs/stripe.md, "API version").
STRIPE_API_VERSION = "2026-10-28.endive"

#: Stripe error codes that mean "already detached" when detaching a payment method.
_ALREADY_DETACHED = frozenset({"resource_missing", "payment_method_unexpected_state"})

T = TypeVar("T")

_Clients = dict[tuple[str, str, int, float], tuple[stripe.StripeClient, stripe.HTTPXClient]]
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Clients] = (
    weakref.WeakKeyDictionary()
)


def stripe_client(settings: Settings) -> stripe.StripeClient:
    """The client for ``settings`` on the running event loop (its connections belong to it)."""
    key = settings.stripe_api_key.get_secret_value() if settings.stripe_api_key else ""
    api_base = settings.stripe_api_base or stripe.DEFAULT_API_BASE
    cache_key = (
        key,
        api_base,
        settings.stripe_max_network_retries,
        settings.stripe_timeout_seconds,
    )
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    cached = per_loop.get(cache_key)
    if cached is None:
        transport = stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds)
        client = stripe.StripeClient(
            key,
            stripe_version=STRIPE_API_VERSION,
            max_network_retries=settings.stripe_max_network_retries,
            base_addresses={"api": api_base},
            http_client=transport,
        )
        cached = per_loop[cache_key] = (client, transport)
    return cached[0]


async def close_clients() -> None:
    """Close the connections of this event loop's clients (at application shutdown)."""
    per_loop = _clients.pop(asyncio.get_running_loop(), {})
    for _client, transport in per_loop.values():
        close: Callable[[], Awaitable[None]] = transport.close_async  # the SDK's is untyped
        await close()


def _error_body(error: stripe.StripeError) -> dict[str, Any]:
    body = error.json_body if isinstance(error.json_body, dict) else {}
    inner = body.get("error")
    return inner if isinstance(inner, dict) else {}


async def _call(awaitable: Awaitable[T], *, action: str) -> T:
    """Await one SDK call (the SDK retries it); translate Stripe's errors into ours."""
    try:
        return await awaitable
    except stripe.CardError as error:
        body = _error_body(error)
        intent = body.get("payment_intent")
        intent_ref = intent.get("id") if isinstance(intent, dict) else None
        raise CardDeclined(
            str(body.get("message") or "the card was declined"),
            decline_code=str(body.get("decline_code") or body.get("code") or "card_declined"),
            payment_intent=intent_ref,
        ) from error
    except (stripe.APIConnectionError, stripe.RateLimitError) as error:
        log.warning("stripe.unavailable", action=action, error=type(error).__name__)
        raise ProviderUnavailable(
            f"Stripe could not be reached to {action}; try again shortly"
        ) from error
    except stripe.StripeError as error:
        status = error.http_status or 0
        body = _error_body(error)
        if status >= 500 or status == 409:
            log.warning("stripe.unavailable", action=action, status=status)
            raise ProviderUnavailable(f"Stripe failed to {action}; try again shortly") from error
        log.error(
            "stripe.refused",
            action=action,
            status=status,
            type=body.get("type"),
            code=body.get("code"),
            request_id=error.request_id,
        )
        raise PaymentFailed(
            f"Stripe refused to {action}: {body.get('message') or error.user_message or status}",
            provider_code=str(body.get("code") or body.get("type") or "unknown"),
        ) from error


class StripeProvider:
    """A :class:`~tollway.payments.providers.protocol.PaymentProvider` backed by Stripe."""

    name = "stripe"
    accepts_card_numbers = False

    def __init__(
        self, *, client: stripe.StripeClient, webhook_secrets: list[str], clock: Clock
    ) -> None:
        self._client = client
        self._webhook_secrets = webhook_secrets
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> StripeProvider:
        return cls(
            client=stripe_client(settings),
            webhook_secrets=settings.stripe_webhook_secrets,
            clock=clock,
        )

    async def create_customer(self, *, organization_id: str, email: str | None, name: str) -> str:
        params: CustomerCreateParams = {
            "name": name[:256],
            "metadata": {"organization_id": organization_id},
        }
        if email:
            params["email"] = email
        customer = await _call(
            self._client.v1.customers.create_async(
                params, {"idempotency_key": f"customer:{organization_id}"}
            ),
            action="create the customer",
        )
        return str(customer.id)

    async def attach_card(self, *, customer_ref: str, card: CardInput) -> AttachedMethod:
        raise NotOfferedByProvider(
            "with Stripe, cards are saved on Stripe's page: POST without a body for a setup_url"
        )

    async def create_setup_session(self, request: SetupRequest) -> CheckoutStarted:
        params: SessionCreateParams = {
            "mode": "setup",
            "customer": request.customer_ref,
            "allowed_payment_method_types": ["card"],
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "metadata": request.metadata,
            "setup_intent_data": {"metadata": request.metadata},
        }
        checkout = await _call(
            self._client.v1.checkout.sessions.create_async(
                params, {"idempotency_key": request.idempotency_key}
            ),
            action="open a card set-up page",
        )
        return CheckoutStarted(provider_ref=str(checkout.id), url=str(checkout.url))

    async def create_portal_session(self, *, customer_ref: str, return_url: str) -> str:
        portal = await _call(
            self._client.v1.billing_portal.sessions.create_async(
                {"customer": customer_ref, "return_url": return_url}
            ),
            action="open the customer portal",
        )
        return str(portal.url)

    async def detach_payment_method(self, *, payment_method_ref: str) -> None:
        try:
            await self._client.v1.payment_methods.detach_async(payment_method_ref)
        except stripe.InvalidRequestError as error:
            if error.code in _ALREADY_DETACHED:
                return
            await _call(_reraise(error), action="remove the card")
        except stripe.StripeError as error:
            await _call(_reraise(error), action="remove the card")

    async def charge_off_session(self, request: ChargeRequest) -> ChargeStarted:
        intent = await _call(
            self._client.v1.payment_intents.create_async(
                {
                    "amount": request.amount_minor,
                    "currency": request.currency.lower(),
                    "customer": request.customer_ref,
                    "payment_method": request.payment_method_ref,
                    "off_session": True,
                    "confirm": True,
                    "description": request.description[:1000],
                    "metadata": request.metadata,
                },
                {"idempotency_key": request.idempotency_key},
            ),
            action="charge the card",
        )
        return ChargeStarted(provider_ref=str(intent.id), status=str(intent.status))

    async def create_checkout(self, request: CheckoutRequest) -> CheckoutStarted:
        checkout = await _call(
            self._client.v1.checkout.sessions.create_async(
                {
                    "mode": "payment",
                    "customer": request.customer_ref,
                    "client_reference_id": request.metadata.get("tollway_payment_id", ""),
                    "line_items": [
                        {
                            "quantity": 1,
                            "price_data": {
                                "currency": request.currency.lower(),
                                "unit_amount": request.amount_minor,
                                "product_data": {"name": request.description[:250]},
                            },
                        }
                    ],
                    "success_url": request.success_url,
                    "cancel_url": request.cancel_url,
                    "metadata": request.metadata,
                    "payment_intent_data": {
                        "description": request.description[:1000],
                        "metadata": request.metadata,
                    },
                },
                {"idempotency_key": request.idempotency_key},
            ),
            action="open a checkout page",
        )
        return CheckoutStarted(provider_ref=str(checkout.id), url=str(checkout.url))

    async def refund(self, request: RefundRequest) -> RefundStarted:
        refund = await _call(
            self._client.v1.refunds.create_async(
                {
                    "payment_intent": request.payment_ref,
                    "amount": request.amount_minor,
                    "metadata": request.metadata,
                },
                {"idempotency_key": request.idempotency_key},
            ),
            action="refund the payment",
        )
        return RefundStarted(provider_ref=str(refund.id), status=str(refund.status))

    def parse_event(self, *, raw_body: bytes, signature_header: str | None) -> ProviderEvent:
        """``stripe.Webhook.construct_event`` on Tollway's clock: several secrets during a
        rotation, several ``v1`` values in the header, 300 s tolerance."""
        signature.verify(
            secret=self._webhook_secrets,
            raw_body=raw_body,
            header=signature_header,
            now=self._clock.now(),
        )
        return parse_stripe_shaped_event(raw_body)


async def _reraise(error: stripe.StripeError) -> None:
    raise error
