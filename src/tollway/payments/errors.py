"""The payments domain's errors (problem+json ``code`` values, docs/errors.md)."""

from __future__ import annotations

from typing import Any

from tollway.errors import (
    BadRequest,
    NotFound,
    PaymentRequired,
    ServiceUnavailable,
    TollwayError,
    Unprocessable,
)


class PaymentMethodRequired(PaymentRequired):
    code = "payment_method_required"
    title = "Payment method required"


class ProviderNotConfigured(NotFound):
    code = "provider_not_configured"
    title = "Payment provider not configured"


class CardNumbersNotAccepted(Unprocessable):
    code = "card_numbers_not_accepted"
    title = "Card numbers are not accepted"


class RefundExceedsPaid(Unprocessable):
    """A refund above what is paid and not yet refunded, or not above zero (with
    ``refundable``): a payment's, an invoice's or a marketplace order's."""

    code = "refund_exceeds_paid"
    title = "Refund above the paid amount"


class CardDeclined(PaymentRequired):
    """The card was refused (``decline_code`` says why, as Stripe names it)."""

    code = "card_declined"
    title = "Card declined"


class PaymentFailed(TollwayError):
    """The provider refused the request for another reason than the card (502)."""

    status = 502
    code = "payment_failed"
    title = "Payment failed"


class ProviderUnavailable(ServiceUnavailable):
    """The provider could not be reached or failed, after the SDK's retries (503)."""

    code = "provider_unavailable"
    title = "Payment provider unavailable"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, headers={"Retry-After": "30"}, **extra)


class NotOfferedByProvider(NotFound):
    """The configured provider has no such feature (the sandbox has no customer portal)."""

    code = "not_offered_by_provider"
    title = "Not offered by the payment provider"


class InvalidCard(Unprocessable):
    code = "invalid_card"
    title = "Invalid card"


class InvalidWebhookPayload(TollwayError):
    status = 400
    code = "webhook_payload_invalid"
    title = "Invalid webhook payload"


class WebhookSignatureError(BadRequest):
    code = "webhook_signature_invalid"
    title = "Invalid webhook signature"
