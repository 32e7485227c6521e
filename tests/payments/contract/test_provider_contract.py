"""What every payment provider must do for Tollway, run on the sandbox and on Stripe.

The same steps and the same expectations for both providers: a test that passes on
one and fails on the other is a drift between them.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from tests.fixtures.billing import BillingAccount, MemoryCredits
from tests.fixtures.payment_harness import ProviderHarness
from tollway.billing.models import Invoice, PackOrder
from tollway.billing.tasks import run_until_quiet
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.sweeps import SweepContext
from tollway.payments.models import Payment, PaymentCustomer
from tollway.payments.providers.signature import sign

METHODS = "/api/v1/billing/payment-methods"
PURCHASE = "/api/v1/credits/packs/pack_1000/purchase"


async def payments_of(database: Database, invoice_id: str) -> list[Payment]:
    async with database.transaction(write=False) as session:
        rows = await session.execute(
            select(Payment).where(Payment.reference_id == invoice_id).order_by(Payment.id)
        )
        return list(rows.scalars())


async def order_and_invoice(database: Database, body: dict[str, Any]) -> tuple[PackOrder, Invoice]:
    async with database.transaction(write=False) as session:
        order = await session.get(PackOrder, body["order_id"])
        invoice = await session.get(Invoice, body["invoice_id"])
    assert order is not None
    assert invoice is not None
    return order, invoice


class TestSavedCards:
    async def test_a_saved_card_is_listed_as_the_default_with_its_brand_and_last_four(
        self, client: httpx.AsyncClient, account: BillingAccount, provider: ProviderHarness
    ) -> None:
        await provider.save_card(account)
        items = (await client.get(METHODS, headers=account.headers)).json()["items"]
        assert [(m["brand"], m["last4"], m["is_default"]) for m in items] == [
            ("visa", "4242", True)
        ]

    async def test_a_removed_card_is_no_longer_listed(
        self, client: httpx.AsyncClient, account: BillingAccount, provider: ProviderHarness
    ) -> None:
        await provider.save_card(account)
        card = (await client.get(METHODS, headers=account.headers)).json()["items"][0]
        removed = await client.delete(f"{METHODS}/{card['id']}", headers=account.headers)
        assert removed.status_code == 204
        await provider.settle()
        assert (await client.get(METHODS, headers=account.headers)).json()["items"] == []

    async def test_the_organization_gets_one_customer_at_the_provider(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        provider: ProviderHarness,
    ) -> None:
        await provider.save_card(account)
        await provider.save_card(account)
        async with database.transaction(write=False) as session:
            customers = list(
                (
                    await session.execute(
                        select(PaymentCustomer).where(
                            PaymentCustomer.organization_id == account.organization_id
                        )
                    )
                ).scalars()
            )
        assert [c.provider for c in customers] == [provider.name]


class TestOffSessionCharges:
    async def test_a_pack_bought_with_the_saved_card_is_paid_and_its_tokens_granted_once(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        provider: ProviderHarness,
        ledger: MemoryCredits,
    ) -> None:
        await provider.save_card(account)
        response = await client.post(PURCHASE, headers=account.headers)
        assert response.status_code == 200, response.text
        await provider.settle()
        await provider.settle()
        order, invoice = await order_and_invoice(database, response.json())
        assert (order.status, invoice.status) == ("paid", "paid")
        assert ledger.granted(account.organization_id).count((1000, "purchase")) == 1
        [payment] = await payments_of(database, invoice.id)
        assert payment.status == "succeeded"
        assert payment.provider == provider.name
        assert payment.provider_ref is not None
        assert payment.idempotency_key == f"invoice:{invoice.id}:attempt:1"

    async def test_a_card_whose_charges_fail_leaves_the_pack_unpaid_and_ungranted(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        provider: ProviderHarness,
        ledger: MemoryCredits,
    ) -> None:
        await provider.save_card(account, fails_charges=True)
        response = await client.post(PURCHASE, headers=account.headers)
        assert response.status_code == 200, response.text
        await provider.settle()
        order, invoice = await order_and_invoice(database, response.json())
        assert (order.status, invoice.status) == ("failed", "open")
        [payment] = await payments_of(database, invoice.id)
        assert (payment.status, payment.failure_code) == ("failed", "generic_decline")
        assert (1000, "purchase") not in ledger.granted(account.organization_id)


class TestCheckout:
    async def test_a_pack_bought_on_the_checkout_page_is_granted_once_the_page_is_paid(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        provider: ProviderHarness,
        ledger: MemoryCredits,
    ) -> None:
        response = await client.post(PURCHASE, headers=account.headers)
        body = response.json()
        assert body["checkout_url"]
        order, _invoice = await order_and_invoice(database, body)
        assert order.status == "pending"
        await provider.pay_checkout(account, body["checkout_url"])
        order, invoice = await order_and_invoice(database, body)
        assert (order.status, invoice.status) == ("paid", "paid")
        assert ledger.granted(account.organization_id).count((1000, "purchase")) == 1
        [payment] = await payments_of(database, invoice.id)
        assert payment.status == "succeeded"
        assert payment.provider_ref is not None


class TestRefunds:
    async def test_a_refund_reaches_the_provider_and_its_event_records_the_amount(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        provider: ProviderHarness,
    ) -> None:
        await provider.save_card(account)
        purchase = (await client.post(PURCHASE, headers=account.headers)).json()
        await provider.settle()
        refund = await client.post(
            f"/api/v1/admin/invoices/{purchase['invoice_id']}/refund",
            json={"amount": 300, "reason": "goodwill"},
            headers=account.admin_headers,
        )
        assert refund.status_code == 201, refund.text
        await provider.settle()
        [payment] = await payments_of(database, purchase["invoice_id"])
        assert (payment.status, payment.refunded_minor) == ("succeeded", 300)


class TestWebhookEndpoint:
    async def test_an_event_signed_with_another_secret_is_refused_and_nothing_is_stored(
        self,
        client: httpx.AsyncClient,
        clock: ManualClock,
        account: BillingAccount,
        provider: ProviderHarness,
        app: FastAPI,
    ) -> None:
        body = json.dumps(
            {"id": "evt_x", "type": "customer.created", "created": 1, "data": {"object": {}}}
        ).encode()
        header = sign(["not-the-secret"], int(clock.now().timestamp()), body)
        response = await client.post(
            f"/api/v1/webhooks/{provider.name}",
            content=body,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json()["code"] == "webhook_signature_invalid"


class TestRenewals:
    async def renew_after_the_trial(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        account: BillingAccount,
        provider: ProviderHarness,
    ) -> dict[str, Any]:
        response = await client.put(
            "/api/v1/billing/subscription", json={"plan": "pro"}, headers=account.headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "trialing"
        clock.advance(days=15)
        context = SweepContext(
            database=app.state.database, clock=clock, settings=app.state.settings
        )
        await run_until_quiet(context)
        await provider.settle()
        await run_until_quiet(context)
        await account.log_in_again(client)
        subscription: dict[str, Any] = (
            await client.get("/api/v1/billing/subscription", headers=account.headers)
        ).json()
        return subscription

    async def test_the_first_invoice_after_the_trial_is_collected_off_session(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        account: BillingAccount,
        provider: ProviderHarness,
    ) -> None:
        await provider.save_card(account)
        subscription = await self.renew_after_the_trial(app, client, clock, account, provider)
        assert (subscription["status"], subscription["license_state"]) == ("active", "active")
        invoices = (await client.get("/api/v1/billing/invoices", headers=account.headers)).json()
        assert [i["status"] for i in invoices["items"]] == ["paid"]

    async def test_a_failing_card_makes_the_subscription_past_due_with_grace(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        account: BillingAccount,
        provider: ProviderHarness,
    ) -> None:
        await provider.save_card(account, fails_charges=True)
        subscription = await self.renew_after_the_trial(app, client, clock, account, provider)
        assert (subscription["status"], subscription["license_state"]) == ("past_due", "grace")
