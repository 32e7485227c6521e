"""Against Stripe's real test mode: skipped unless STRIPE_TEST_SECRET_KEY is set.

Not run in CI (it needs the network and a Stripe account). Run it before upgrading the
SDK or STRIPE_API_VERSION:

    STRIPE_TEST_SECRET_KEY=sk_test_... pytest tests/payments/stripe/test_stripe_testmode.py

It creates a customer, cards from Stripe's test payment methods, two charges, a refund
and two Checkout Sessions in the account's test mode; nothing is charged for real.
"""

from __future__ import annotations

import os
import uuid

import pytest
from pydantic import SecretStr

from tollway.config import Settings
from tollway.kit.clock import SystemClock
from tollway.payments.errors import CardDeclined
from tollway.payments.providers.protocol import (
    ChargeRequest,
    CheckoutRequest,
    RefundRequest,
    SetupRequest,
)
from tollway.payments.providers.stripe import StripeProvider, close_clients, stripe_client

KEY = os.environ.get("STRIPE_TEST_SECRET_KEY", "")

pytestmark = pytest.mark.skipif(
    not KEY.startswith("sk_test_"), reason="set STRIPE_TEST_SECRET_KEY=sk_test_... to run"
)


async def test_the_provider_works_against_stripe_test_mode() -> None:
    settings = Settings(
        payment_provider="stripe",
        stripe_api_key=SecretStr(KEY),
        stripe_webhook_secret=SecretStr("whsec_unused"),
    )
    provider = StripeProvider.from_settings(settings, SystemClock())
    client = stripe_client(settings)
    run = uuid.uuid4().hex[:12]
    try:
        customer = await provider.create_customer(
            organization_id=f"org_testmode_{run}", email=None, name="Tollway test mode"
        )
        card = await client.v1.payment_methods.attach_async("pm_card_visa", {"customer": customer})
        request = ChargeRequest(
            amount_minor=1190,
            currency="usd",
            customer_ref=customer,
            payment_method_ref=str(card.id),
            description="Tollway test-mode charge",
            idempotency_key=f"invoice:inv_testmode_{run}:attempt:1",
            metadata={"tollway_payment_id": f"pay_{run}"},
        )
        first = await provider.charge_off_session(request)
        again = await provider.charge_off_session(request)
        assert first.status == "succeeded"
        assert again.provider_ref == first.provider_ref  # the idempotency key at work
        refund = await provider.refund(
            RefundRequest(
                payment_ref=first.provider_ref,
                amount_minor=300,
                idempotency_key=f"refund:pay_{run}:300",
            )
        )
        assert refund.status in ("succeeded", "pending")
        failing = await client.v1.payment_methods.attach_async(
            "pm_card_chargeCustomerFail", {"customer": customer}
        )
        with pytest.raises(CardDeclined) as declined:
            await provider.charge_off_session(
                ChargeRequest(
                    amount_minor=500,
                    currency="usd",
                    customer_ref=customer,
                    payment_method_ref=str(failing.id),
                    description="Tollway test-mode decline",
                    idempotency_key=f"invoice:inv_testmode_{run}:attempt:2",
                )
            )
        assert str(declined.value.extra["payment_intent"]).startswith("pi_")
        checkout = await provider.create_checkout(
            CheckoutRequest(
                amount_minor=1000,
                currency="usd",
                description="1000 tokens",
                customer_ref=customer,
                success_url="https://example.com/done",
                cancel_url="https://example.com/done",
                idempotency_key=f"checkout:pay_{run}",
                metadata={"tollway_payment_id": f"pay_{run}"},
            )
        )
        assert checkout.url.startswith("https://checkout.stripe.com/")
        setup = await provider.create_setup_session(
            SetupRequest(
                customer_ref=customer,
                success_url="https://example.com/done",
                cancel_url="https://example.com/done",
                idempotency_key=f"setup:{run}",
            )
        )
        assert setup.url.startswith("https://checkout.stripe.com/")
        await client.v1.customers.delete_async(customer)
    finally:
        await close_clients()
