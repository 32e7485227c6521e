"""What Tollway sends to Stripe, and how it answers when Stripe fails."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.fixtures.billing import BillingAccount, MemoryCredits
from tests.fixtures.fake_stripe import FakeStripe
from tests.fixtures.payment_harness import STRIPE_API_KEY, StripeHarness, sweep
from tollway.billing.models import Invoice, PackOrder
from tollway.billing.service.renewals import renewal_service
from tollway.billing.tasks import run_until_quiet
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.sweeps import SweepContext
from tollway.payments.env import PaymentEnv
from tollway.payments.models import Payment
from tollway.payments.providers.stripe import STRIPE_API_VERSION
from tollway.payments.service.charges import charge_service

METHODS = "/api/v1/billing/payment-methods"
PURCHASE = "/api/v1/credits/packs/pack_1000/purchase"
INTENTS = "/v1/payment_intents"


async def count(database: Database, model: Any) -> int:
    async with database.transaction(write=False) as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def only_payment(database: Database) -> Payment:
    async with database.transaction(write=False) as session:
        return (await session.execute(select(Payment))).scalar_one()


def card_error(decline_code: str) -> dict[str, Any]:
    return {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": decline_code,
        "message": "Your card has insufficient funds.",
        "payment_intent": {"id": "pi_declined_1", "object": "payment_intent"},
    }


class TestOffSessionCharge:
    async def test_a_charge_sends_integer_minor_units_currency_card_and_tollway_ids(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        fake_stripe: FakeStripe,
    ) -> None:
        await stripe.save_card(account)
        purchase = (await client.post(PURCHASE, headers=account.headers)).json()
        [call] = fake_stripe.calls("POST", INTENTS)
        payment = await only_payment(database)
        customer_ref = fake_stripe.calls("POST", "/v1/checkout/sessions")[0].params["customer"]
        assert call.form["amount"] == "1190"  # 1000 + 19 % VAT, in cents
        assert call.form["currency"] == "usd"
        assert call.form["customer"] == customer_ref
        assert call.form["payment_method"].startswith("pm_fake")
        assert (call.form["off_session"], call.form["confirm"]) == ("true", "true")
        assert call.params["metadata"] == {
            "organization_id": account.organization_id,
            "purpose": "invoice",
            "reference_id": purchase["invoice_id"],
            "tollway_idempotency_key": f"invoice:{purchase['invoice_id']}:attempt:1",
        }
        assert call.idempotency_key == f"invoice:{purchase['invoice_id']}:attempt:1"
        assert payment.idempotency_key == call.idempotency_key

    async def test_every_call_names_the_pinned_api_version_and_the_secret_key(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        stripe: StripeHarness,
        fake_stripe: FakeStripe,
    ) -> None:
        await stripe.save_card(account)
        await client.post(PURCHASE, headers=account.headers)
        assert fake_stripe.requests
        assert {r.stripe_version for r in fake_stripe.requests} == {STRIPE_API_VERSION}
        assert {r.authorization for r in fake_stripe.requests} == {f"Bearer {STRIPE_API_KEY}"}

    @pytest.mark.parametrize("status", [500, 503, 409])
    async def test_a_failed_call_is_retried_with_the_same_key_and_charges_once(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        fake_stripe: FakeStripe,
        ledger: MemoryCredits,
        status: int,
    ) -> None:
        await stripe.save_card(account)
        fake_stripe.fail_next(
            "POST", INTENTS, status, {"type": "api_error", "message": "Something went wrong."}
        )
        response = await client.post(PURCHASE, headers=account.headers)
        assert response.status_code == 200, response.text
        calls = fake_stripe.calls("POST", INTENTS)
        assert len(calls) == 2
        assert calls[0].idempotency_key == calls[1].idempotency_key
        assert calls[0].form == calls[1].form
        await stripe.settle()
        assert (await only_payment(database)).status == "succeeded"
        assert ledger.granted(account.organization_id).count((1000, "purchase")) == 1

    async def test_a_dropped_connection_is_retried_with_the_same_key(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        fake_stripe: FakeStripe,
    ) -> None:
        await stripe.save_card(account)
        fake_stripe.drop_next("POST", INTENTS)
        response = await client.post(PURCHASE, headers=account.headers)
        assert response.status_code == 200, response.text
        keys = {call.idempotency_key for call in fake_stripe.calls("POST", INTENTS)}
        assert len(fake_stripe.calls("POST", INTENTS)) == 2
        assert len(keys) == 1

    async def test_stripe_unreachable_after_the_retries_answers_503_and_writes_nothing(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        fake_stripe: FakeStripe,
    ) -> None:
        await stripe.save_card(account)
        fake_stripe.drop_next("POST", INTENTS, times=3)  # the first call and two retries
        response = await client.post(PURCHASE, headers=account.headers)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "provider_unavailable"
        assert response.headers["retry-after"] == "30"
        assert len(fake_stripe.calls("POST", INTENTS)) == 3
        assert (await count(database, PackOrder), await count(database, Payment)) == (0, 0)
        assert await count(database, Invoice) == 0

    async def test_a_card_error_fails_the_payment_at_once_with_its_decline_code(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        fake_stripe: FakeStripe,
        ledger: MemoryCredits,
    ) -> None:
        await stripe.save_card(account)
        fake_stripe.fail_next("POST", INTENTS, 402, card_error("insufficient_funds"))
        response = await client.post(PURCHASE, headers=account.headers)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "failed"
        assert len(fake_stripe.calls("POST", INTENTS)) == 1  # a card error is not retried
        payment = await only_payment(database)
        assert (payment.status, payment.failure_code) == ("failed", "insufficient_funds")
        assert payment.provider_ref == "pi_declined_1"
        assert (1000, "purchase") not in ledger.granted(account.organization_id)

    async def test_an_idempotency_error_answers_502_payment_failed_and_writes_nothing(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        fake_stripe: FakeStripe,
    ) -> None:
        await stripe.save_card(account)
        fake_stripe.fail_next(
            "POST",
            INTENTS,
            400,
            {
                "type": "idempotency_error",
                "message": "Keys for idempotent requests can only "
                "be used with the same parameters they were first used with.",
            },
        )
        response = await client.post(PURCHASE, headers=account.headers)
        assert response.status_code == 502
        assert response.json()["code"] == "payment_failed"
        assert response.json()["provider_code"] == "idempotency_error"
        assert await count(database, Payment) == 0

    async def test_an_authentication_failure_at_stripe_is_a_502_not_a_crash(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        fake_stripe: FakeStripe,
    ) -> None:
        fake_stripe.fail_next(
            "POST",
            "/v1/customers",
            401,
            {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_***"},
        )
        response = await client.post(METHODS, headers=account.headers)
        assert response.status_code == 502
        assert response.json()["code"] == "payment_failed"


class TestCheckout:
    async def test_a_pack_checkout_sends_the_amount_in_minor_units_and_tollway_ids(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        fake_stripe: FakeStripe,
    ) -> None:
        purchase = (await client.post(PURCHASE, headers=account.headers)).json()
        [call] = fake_stripe.calls("POST", "/v1/checkout/sessions")
        payment = await only_payment(database)
        assert call.params["mode"] == "payment"
        [item] = call.params["line_items"]
        assert item["quantity"] == "1"
        assert item["price_data"]["unit_amount"] == "1190"
        assert item["price_data"]["currency"] == "usd"
        assert call.params["metadata"]["tollway_payment_id"] == payment.id
        assert (
            call.params["payment_intent_data"]["metadata"]["reference_id"]
            == (purchase["invoice_id"])
        )
        assert call.params["client_reference_id"] == payment.id
        assert call.idempotency_key == f"checkout:{payment.id}"
        assert purchase["checkout_url"].startswith("https://checkout.stripe.com/c/pay/cs_test_")


class TestSavingCards:
    async def test_saving_a_card_answers_a_checkout_page_in_setup_mode(
        self, client: httpx.AsyncClient, account: BillingAccount, fake_stripe: FakeStripe
    ) -> None:
        response = await client.post(METHODS, headers=account.headers)
        assert response.status_code == 200
        assert response.json()["setup_url"].startswith("https://checkout.stripe.com/c/pay/")
        [customer] = fake_stripe.calls("POST", "/v1/customers")
        assert customer.params["metadata"] == {"organization_id": account.organization_id}
        assert customer.idempotency_key == f"customer:{account.organization_id}"
        [call] = fake_stripe.calls("POST", "/v1/checkout/sessions")
        assert call.params["mode"] == "setup"
        assert call.params["allowed_payment_method_types"] == ["card"]
        assert call.params["customer"].startswith("cus_fake")
        assert call.params["setup_intent_data"]["metadata"]["organization_id"] == (
            account.organization_id
        )
        assert call.idempotency_key is not None
        assert (await client.get(METHODS, headers=account.headers)).json()["items"] == []

    async def test_card_numbers_sent_to_tollway_are_refused_and_never_reach_stripe(
        self, client: httpx.AsyncClient, account: BillingAccount, fake_stripe: FakeStripe
    ) -> None:
        body = {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "1"}
        response = await client.post(METHODS, json={**body, "cvc": "123"}, headers=account.headers)
        assert response.status_code == 422
        assert response.json()["code"] == "card_numbers_not_accepted"
        assert fake_stripe.requests == []

    async def test_removing_a_card_detaches_it_at_stripe_and_the_echo_changes_nothing(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        stripe: StripeHarness,
        fake_stripe: FakeStripe,
    ) -> None:
        await stripe.save_card(account)
        await stripe.save_card(account)
        first, second = (await client.get(METHODS, headers=account.headers)).json()["items"]
        removed = await client.delete(f"{METHODS}/{first['id']}", headers=account.headers)
        assert removed.status_code == 204
        [detach] = [r for r in fake_stripe.requests if r.path.endswith("/detach")]
        assert detach.method == "POST"
        await stripe.settle()  # Stripe's payment_method.detached for the same card
        items = (await client.get(METHODS, headers=account.headers)).json()["items"]
        assert [(m["id"], m["is_default"]) for m in items] == [(second["id"], True)]

    async def test_the_customer_portal_answers_stripes_url_for_the_organizations_customer(
        self, client: httpx.AsyncClient, account: BillingAccount, fake_stripe: FakeStripe
    ) -> None:
        response = await client.post("/api/v1/billing/portal-session", headers=account.headers)
        assert response.status_code == 200, response.text
        assert response.json()["url"].startswith("https://billing.stripe.com/p/session/")
        assert len(fake_stripe.calls("POST", "/v1/customers")) == 1
        [call] = fake_stripe.calls("POST", "/v1/billing_portal/sessions")
        assert fake_stripe.objects[call.params["customer"]]["metadata"] == {
            "organization_id": account.organization_id
        }
        assert call.params["return_url"].endswith("/api/v1/payments/checkout/done")


class TestRefunds:
    async def test_a_refund_sends_the_intent_the_amount_and_a_key_per_cumulative_amount(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        fake_stripe: FakeStripe,
    ) -> None:
        await stripe.save_card(account)
        purchase = (await client.post(PURCHASE, headers=account.headers)).json()
        await stripe.settle()
        url = f"/api/v1/admin/invoices/{purchase['invoice_id']}/refund"
        for amount in (300, 200):
            response = await client.post(
                url, json={"amount": amount, "reason": "goodwill"}, headers=account.admin_headers
            )
            assert response.status_code == 201, response.text
        payment = await only_payment(database)
        first, second = fake_stripe.calls("POST", "/v1/refunds")
        assert (first.form["amount"], second.form["amount"]) == ("300", "200")
        assert first.form["payment_intent"] == payment.provider_ref
        assert (first.idempotency_key, second.idempotency_key) == (
            f"refund:{payment.id}:300",
            f"refund:{payment.id}:500",
        )
        await stripe.settle()
        assert (await only_payment(database)).refunded_minor == 500


class TestRolledBackTransaction:
    async def test_a_charge_retried_after_a_rollback_gets_the_same_intent_and_its_event_lands(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        fake_stripe: FakeStripe,
    ) -> None:
        await stripe.save_card(account)
        env = PaymentEnv(app.state.settings, clock)

        async def charge() -> Payment:
            async with database.transaction() as session:
                return await charge_service.charge(
                    session,
                    env,
                    organization_id=account.organization_id,
                    amount_minor=2900,
                    currency="usd",
                    purpose="test_order",
                    reference_id="ord_rolled_back",
                    description="an order",
                )

        class Crash(Exception):
            pass

        with pytest.raises(Crash):
            async with database.transaction() as session:
                await charge_service.charge(
                    session,
                    env,
                    organization_id=account.organization_id,
                    amount_minor=2900,
                    currency="usd",
                    purpose="test_order",
                    reference_id="ord_rolled_back",
                    description="an order",
                )
                raise Crash  # Tollway fails after Stripe answered: the row is gone
        assert await count(database, Payment) == 0
        payment = await charge()
        first, second = fake_stripe.calls("POST", INTENTS)
        assert (
            first.idempotency_key
            == second.idempotency_key
            == ("test_order:ord_rolled_back:attempt:1")
        )
        intents = [o for o in fake_stripe.objects.values() if o.get("object") == "payment_intent"]
        assert [i["id"] for i in intents] == [payment.provider_ref]
        # Stripe's event names the key (the same for both tries), which finds the payment.
        [event] = fake_stripe.take_events()
        assert event["data"]["object"]["metadata"]["tollway_idempotency_key"] == (
            payment.idempotency_key
        )
        await stripe.deliver([event])
        await sweep(app)
        assert (await only_payment(database)).status == "succeeded"


class TestRolledBackRenewal:
    async def test_a_renewal_rolled_back_after_stripe_charged_is_redone_without_a_second_charge(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        fake_stripe: FakeStripe,
    ) -> None:
        await stripe.save_card(account)
        subscribed = await client.put(
            "/api/v1/billing/subscription", json={"plan": "pro"}, headers=account.headers
        )
        assert subscribed.status_code == 200, subscribed.text
        clock.advance(days=15)
        env = PaymentEnv(app.state.settings, clock)

        class Crash(Exception):
            pass

        with pytest.raises(Crash):
            async with database.transaction() as session:
                renewed = await renewal_service.renew(
                    session, env, subscription_id=subscribed.json()["id"]
                )
                assert renewed
                raise Crash  # the chunk fails after Stripe charged: invoice and payment gone
        assert await count(database, Invoice) == 0
        context = SweepContext(database=database, clock=clock, settings=app.state.settings)
        await run_until_quiet(context)
        await stripe.settle()
        first, second = fake_stripe.calls("POST", INTENTS)
        assert first.idempotency_key == second.idempotency_key
        assert first.form == second.form
        intents = [o for o in fake_stripe.objects.values() if o.get("object") == "payment_intent"]
        assert len(intents) == 1
        await account.log_in_again(client)
        invoices = (await client.get("/api/v1/billing/invoices", headers=account.headers)).json()
        assert [i["status"] for i in invoices["items"]] == ["paid"]
        assert (await only_payment(database)).provider_ref == intents[0]["id"]
