"""Stripe's events at /api/v1/webhooks/stripe: signatures, repeats, any order, amounts,
disputes, cards saved and removed on Stripe's side."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import httpx
import pytest
import stripe as stripe_sdk
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.fixtures.billing import BillingAccount, MemoryCredits, StaticCatalog
from tests.fixtures.fake_stripe import FakeStripe, fixture
from tests.fixtures.payment_harness import (
    STRIPE_URL,
    STRIPE_WEBHOOK_SECRET,
    StripeHarness,
    signed,
    stripe_settings,
    sweep,
)
from tollway.billing.models import PackOrder
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.outbox import OutboxEvent
from tollway.payments.models import Payment, PaymentCustomer, PaymentDispute, WebhookEvent
from tollway.payments.providers.signature import sign

METHODS = "/api/v1/billing/payment-methods"
PURCHASE = "/api/v1/credits/packs/pack_1000/purchase"


async def only_payment(database: Database) -> Payment:
    async with database.transaction(write=False) as session:
        return (await session.execute(select(Payment))).scalar_one()


async def count(database: Database, model: Any, *where: Any) -> int:
    async with database.transaction(write=False) as session:
        statement = select(func.count()).select_from(model).where(*where)
        return int((await session.execute(statement)).scalar_one())


async def paid_pack(
    client: httpx.AsyncClient, account: BillingAccount, stripe: StripeHarness
) -> dict[str, Any]:
    """A pack bought with a saved card; returns the purchase and leaves Stripe's events queued."""
    await stripe.save_card(account)
    response = await client.post(PURCHASE, headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestSignatures:
    async def test_tollways_signature_recipe_is_stripes(
        self,
        client: httpx.AsyncClient,
        clock: ManualClock,
        account: BillingAccount,
        stripe: StripeHarness,
    ) -> None:
        body = json.dumps(fixture("event", id="evt_recipe")).encode()
        now = int(clock.now().timestamp())
        ours = sign([STRIPE_WEBHOOK_SECRET], now, body)
        assert stripe_sdk.WebhookSignature.verify_header(
            body.decode(), ours, STRIPE_WEBHOOK_SECRET, tolerance=None
        )
        theirs = stripe_sdk.WebhookSignature._compute_signature(
            f"{now}.{body.decode()}", STRIPE_WEBHOOK_SECRET
        )
        response = await client.post(
            STRIPE_URL,
            content=body,
            headers={
                "Stripe-Signature": f"t={now},v1={theirs}",
                "Content-Type": "application/json; charset=utf-8",  # as Stripe sends it
            },
        )
        assert response.status_code == 200, response.text

    async def test_during_a_rotation_events_signed_with_either_secret_are_accepted(
        self,
        app_factory: Callable[..., FastAPI],
        fake_stripe: FakeStripe,
        clock: ManualClock,
    ) -> None:
        rotating = app_factory(**stripe_settings(fake_stripe, secrets="whsec_old_1, whsec_new_2"))
        async with LifespanManager(rotating):
            transport = httpx.ASGITransport(app=rotating)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                for index, secrets in enumerate(
                    (["whsec_old_1"], ["whsec_new_2"], ["whsec_other", "whsec_new_2"])
                ):
                    body = json.dumps(fixture("event", id=f"evt_rot{index}")).encode()
                    response = await http.post(
                        STRIPE_URL, content=body, headers=signed(body, clock, secrets=secrets)
                    )
                    assert response.status_code == 200, response.text
                body = json.dumps(fixture("event", id="evt_rot_bad")).encode()
                refused = await http.post(
                    STRIPE_URL, content=body, headers=signed(body, clock, secrets=["whsec_x"])
                )
                assert refused.json()["code"] == "webhook_signature_invalid"

    async def test_a_replayed_delivery_older_than_five_minutes_is_refused(
        self, client: httpx.AsyncClient, clock: ManualClock, database: Database
    ) -> None:
        body = json.dumps(fixture("event", id="evt_old")).encode()
        header = signed(body, clock)
        clock.advance(301)
        response = await client.post(STRIPE_URL, content=body, headers=header)
        assert response.json()["code"] == "webhook_timestamp_out_of_tolerance"
        assert await count(database, WebhookEvent) == 0

    async def test_the_stripe_endpoint_is_not_served_when_tollway_runs_on_the_sandbox(
        self, app_factory: Callable[..., FastAPI], clock: ManualClock
    ) -> None:
        sandbox = app_factory()
        async with LifespanManager(sandbox):
            transport = httpx.ASGITransport(app=sandbox)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                body = json.dumps(fixture("event", id="evt_sbx")).encode()
                response = await http.post(STRIPE_URL, content=body, headers=signed(body, clock))
        assert (response.status_code, response.json()["code"]) == (404, "provider_not_configured")


class TestRepeatsAndOrder:
    async def test_every_event_delivered_twice_has_one_effect(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        ledger: MemoryCredits,
    ) -> None:
        await paid_pack(client, account, stripe)
        events = stripe.fake.take_events()
        first = await stripe.deliver(events)
        second = await stripe.deliver(events)
        assert [r.json()["duplicate"] for r in first] == [False] * len(events)
        assert [r.json()["duplicate"] for r in second] == [True] * len(events)
        await sweep(stripe.app)
        assert ledger.granted(account.organization_id).count((1000, "purchase")) == 1
        assert (
            await count(database, OutboxEvent, OutboxEvent.event_type == "payment.succeeded") == 1
        )

    async def test_checkout_refund_and_success_events_in_reverse_order_end_in_the_same_state(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        ledger: MemoryCredits,
    ) -> None:
        purchase = (await client.post(PURCHASE, headers=account.headers)).json()
        stripe.fake.complete_checkout(purchase["checkout_url"].rsplit("/", 1)[-1])
        completed, succeeded = stripe.fake.take_events()
        intent = succeeded["data"]["object"]
        refunded = fixture(
            "charge",
            id=intent["latest_charge"],
            amount=intent["amount"],
            amount_refunded=400,
            currency="usd",
            payment_intent=intent["id"],
            metadata=intent["metadata"],
            refunded=False,
        )
        refund_event = stripe.fake.emit("charge.refunded", refunded)
        stripe.fake.take_events()
        for event in (refund_event, succeeded, completed):
            await stripe.deliver([event])
            await sweep(stripe.app)
        payment = await only_payment(database)
        assert (payment.status, payment.refunded_minor) == ("succeeded", 400)
        assert payment.provider_ref == intent["id"]
        assert await count(database, PackOrder, PackOrder.status == "paid") == 1
        assert ledger.granted(account.organization_id).count((1000, "purchase")) == 1

    async def test_a_failure_arriving_after_the_success_does_not_undo_it(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
    ) -> None:
        await paid_pack(client, account, stripe)
        [succeeded] = stripe.fake.take_events()
        failed = stripe.fake.emit(
            "payment_intent.payment_failed",
            {**succeeded["data"]["object"], "status": "requires_payment_method"},
        )
        stripe.fake.take_events()
        await stripe.deliver([succeeded, failed])
        await sweep(stripe.app)
        assert (await only_payment(database)).status == "succeeded"


class TestAmountCheck:
    @pytest.mark.parametrize(
        ("change", "reported"),
        [({"amount_received": 119}, "119 'usd'"), ({"currency": "eur"}, "1190 'eur'")],
    )
    async def test_a_success_that_does_not_match_our_order_is_flagged_and_not_credited(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        ledger: MemoryCredits,
        change: dict[str, Any],
        reported: str,
    ) -> None:
        await paid_pack(client, account, stripe)
        [succeeded] = stripe.fake.take_events()
        succeeded["data"]["object"].update(change)
        await stripe.deliver([succeeded])
        await sweep(stripe.app)
        payment = await only_payment(database)
        assert (payment.status, payment.failure_code) == ("flagged", "amount_mismatch")
        assert reported in (payment.failure_message or "")
        assert (1000, "purchase") not in ledger.granted(account.organization_id)
        assert await count(database, PackOrder, PackOrder.status == "paid") == 0
        assert await count(database, OutboxEvent, OutboxEvent.event_type == "payment.flagged") == 1

    async def test_a_checkout_paid_with_another_total_is_flagged(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        ledger: MemoryCredits,
    ) -> None:
        purchase = (await client.post(PURCHASE, headers=account.headers)).json()
        stripe.fake.complete_checkout(purchase["checkout_url"].rsplit("/", 1)[-1])
        completed, _succeeded = stripe.fake.take_events()
        completed["data"]["object"]["amount_total"] = 1
        await stripe.deliver([completed])
        await sweep(stripe.app)
        assert (await only_payment(database)).status == "flagged"
        assert ledger.granted(account.organization_id) == []


class DisputeSetup:
    async def subscribed_with_a_paid_pack(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        stripe: StripeHarness,
        catalog: StaticCatalog,
    ) -> str:
        await paid_pack(client, account, stripe)
        await stripe.settle()
        response = await client.put(
            "/api/v1/billing/subscription", json={"plan": "pro"}, headers=account.headers
        )
        assert response.status_code == 200, response.text
        await stripe.settle()
        assert catalog.assignments[account.organization_id].license_state == "active"
        intents = [o for o in stripe.fake.objects.values() if o.get("object") == "payment_intent"]
        return str(intents[0]["id"])

    async def license_state(self, client: httpx.AsyncClient, account: BillingAccount) -> str:
        response = await client.get("/api/v1/billing/subscription", headers=account.headers)
        return str(response.json()["license_state"])


class TestDisputes(DisputeSetup):
    async def test_a_dispute_freezes_paid_access_and_winning_it_restores_it(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        catalog: StaticCatalog,
    ) -> None:
        intent_id = await self.subscribed_with_a_paid_pack(client, account, stripe, catalog)
        dispute = stripe.fake.dispute(intent_id)
        stripe.fake.emit("charge.dispute.created", dispute)
        await stripe.settle()
        assert catalog.assignments[account.organization_id].license_state == "restricted"
        assert await self.license_state(client, account) == "restricted"
        features = await catalog.features(cast(AsyncSession, None), account.organization_id)
        assert features["ai.generate"] is False
        stripe.fake.emit("charge.dispute.closed", {**dispute, "status": "won"})
        await stripe.settle()
        assert catalog.assignments[account.organization_id].license_state == "active"
        assert await self.license_state(client, account) == "active"
        async with database.transaction(write=False) as session:
            stored = (await session.execute(select(PaymentDispute))).scalar_one()
        assert (stored.status, stored.amount_minor, stored.reason) == ("won", 1190, "fraudulent")

    async def test_a_lost_dispute_keeps_paid_access_frozen(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        stripe: StripeHarness,
        catalog: StaticCatalog,
    ) -> None:
        intent_id = await self.subscribed_with_a_paid_pack(client, account, stripe, catalog)
        dispute = stripe.fake.dispute(intent_id)
        stripe.fake.emit("charge.dispute.created", dispute)
        stripe.fake.emit("charge.dispute.closed", {**dispute, "status": "lost"})
        await stripe.settle()
        assert catalog.assignments[account.organization_id].license_state == "restricted"

    async def test_a_won_closure_arriving_before_the_dispute_never_freezes_access(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        stripe: StripeHarness,
        catalog: StaticCatalog,
    ) -> None:
        intent_id = await self.subscribed_with_a_paid_pack(client, account, stripe, catalog)
        dispute = stripe.fake.dispute(intent_id)
        closed = stripe.fake.emit("charge.dispute.closed", {**dispute, "status": "won"})
        created = stripe.fake.emit("charge.dispute.created", dispute)
        stripe.fake.take_events()
        for event in (closed, created, created):
            await stripe.deliver([event])
            await sweep(stripe.app)
        assert catalog.assignments[account.organization_id].license_state == "active"

    async def test_a_renewal_paid_during_a_dispute_does_not_lift_the_freeze(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        stripe: StripeHarness,
        catalog: StaticCatalog,
        ledger: MemoryCredits,
    ) -> None:
        intent_id = await self.subscribed_with_a_paid_pack(client, account, stripe, catalog)
        stripe.fake.emit("charge.dispute.created", stripe.fake.dispute(intent_id))
        await stripe.settle()
        second = await client.post(PURCHASE, headers=account.headers)
        assert second.status_code == 200
        await stripe.settle()
        assert ledger.granted(account.organization_id).count((1000, "purchase")) == 2
        assert catalog.assignments[account.organization_id].license_state == "restricted"


class TestSettlingDisputes(DisputeSetup):
    """An operator lifts the freeze of a lost dispute the customer paid back."""

    DISPUTES = "/api/v1/admin/disputes"

    async def lost_dispute(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        stripe: StripeHarness,
        catalog: StaticCatalog,
    ) -> dict[str, Any]:
        intent_id = await self.subscribed_with_a_paid_pack(client, account, stripe, catalog)
        dispute = stripe.fake.dispute(intent_id)
        stripe.fake.emit("charge.dispute.created", dispute)
        stripe.fake.emit("charge.dispute.closed", {**dispute, "status": "lost"})
        await stripe.settle()
        listed = await client.get(
            self.DISPUTES,
            params={"status": "lost", "organization_id": account.organization_id},
            headers=account.admin_headers,
        )
        assert listed.status_code == 200, listed.text
        [lost] = listed.json()["items"]
        return cast(dict[str, Any], lost)

    async def settle(
        self, client: httpx.AsyncClient, account: BillingAccount, dispute_id: str, note: str
    ) -> httpx.Response:
        return await client.post(
            f"{self.DISPUTES}/{dispute_id}/settle",
            json={"note": note},
            headers=account.admin_headers,
        )

    async def test_settling_a_lost_dispute_restores_paid_access_and_is_recorded(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        catalog: StaticCatalog,
    ) -> None:
        lost = await self.lost_dispute(client, account, stripe, catalog)
        assert await self.license_state(client, account) == "restricted"
        settled = await self.settle(
            client, account, lost["id"], "paid back by bank transfer, ticket 4711"
        )
        assert settled.status_code == 200, settled.text
        assert settled.json()["status"] == "settled"
        assert catalog.assignments[account.organization_id].license_state == "active"
        assert await self.license_state(client, account) == "active"
        async with database.transaction(write=False) as session:
            [event] = (
                await session.execute(
                    select(OutboxEvent).where(OutboxEvent.event_type == "dispute.settled")
                )
            ).scalars()
        assert event.payload["access_frozen"] is False
        assert event.payload["note"] == "paid back by bank transfer, ticket 4711"
        again = await self.settle(client, account, lost["id"], "twice")
        assert (again.status_code, again.json()["code"]) == (409, "dispute_not_lost")

    async def test_an_open_dispute_still_freezes_access_after_a_lost_one_is_settled(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        stripe: StripeHarness,
        catalog: StaticCatalog,
    ) -> None:
        lost = await self.lost_dispute(client, account, stripe, catalog)
        intents = [o for o in stripe.fake.objects.values() if o.get("object") == "payment_intent"]
        stripe.fake.emit("charge.dispute.created", stripe.fake.dispute(str(intents[-1]["id"])))
        await stripe.settle()
        settled = await self.settle(client, account, lost["id"], "repaid")
        assert settled.status_code == 200, settled.text
        assert catalog.assignments[account.organization_id].license_state == "restricted"
        listed = await client.get(
            self.DISPUTES,
            params={"organization_id": account.organization_id},
            headers=account.admin_headers,
        )
        statuses = sorted(item["status"] for item in listed.json()["items"])
        assert statuses == ["needs_response", "settled"]
        opened = next(i for i in listed.json()["items"] if i["status"] == "needs_response")
        refused = await self.settle(client, account, opened["id"], "too early")
        assert (refused.status_code, refused.json()["code"]) == (409, "dispute_not_lost")

    async def test_only_platform_admins_settle_and_unknown_disputes_are_not_found(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        url = f"{self.DISPUTES}/dsp_01JD8X3N5Q8W6Y2ZB4C7D9E0F1/settle"
        customer = await client.post(url, json={"note": "mine"}, headers=account.headers)
        assert customer.status_code == 403
        listing = await client.get(self.DISPUTES, headers=account.headers)
        assert listing.status_code == 403
        missing = await client.post(url, json={"note": "x"}, headers=account.admin_headers)
        assert (missing.status_code, missing.json()["code"]) == (404, "dispute_not_found")
        empty = await client.post(url, json={"note": ""}, headers=account.admin_headers)
        assert empty.status_code == 422


class TestCardsOnStripesSide:
    def setup_events(
        self, stripe: StripeHarness, setup_url: str
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        stripe.fake.complete_setup(setup_url.rsplit("/", 1)[-1])
        attached, succeeded, completed = stripe.fake.take_events()
        return attached, succeeded, completed

    async def test_a_saved_card_arrives_whole_whatever_the_order_of_its_events(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        stripe: StripeHarness,
    ) -> None:
        setup_url = (await client.post(METHODS, headers=account.headers)).json()["setup_url"]
        attached, succeeded, completed = self.setup_events(stripe, setup_url)
        await stripe.deliver([completed, succeeded])
        await sweep(stripe.app)
        [early] = (await client.get(METHODS, headers=account.headers)).json()["items"]
        assert early["is_default"] is True
        await stripe.deliver([attached, succeeded])
        await sweep(stripe.app)
        items = (await client.get(METHODS, headers=account.headers)).json()["items"]
        assert [
            (m["id"], m["brand"], m["last4"], m["exp_year"], m["is_default"]) for m in items
        ] == [(early["id"], "visa", "4242", 2030, True)]

    async def test_a_card_removed_in_the_portal_before_its_attached_event_is_never_listed(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        stripe: StripeHarness,
    ) -> None:
        setup_url = (await client.post(METHODS, headers=account.headers)).json()["setup_url"]
        attached, succeeded, _completed = self.setup_events(stripe, setup_url)
        method = attached["data"]["object"]
        detached = stripe.fake.emit("payment_method.detached", {**method, "customer": None})
        stripe.fake.take_events()
        for event in (detached, attached, succeeded):
            await stripe.deliver([event])
            await sweep(stripe.app)
        assert (await client.get(METHODS, headers=account.headers)).json()["items"] == []

    async def test_a_deleted_customer_loses_its_cards_and_the_next_card_makes_a_new_one(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
    ) -> None:
        await stripe.save_card(account)
        [customer] = [o for o in stripe.fake.objects.values() if o.get("object") == "customer"]
        stripe.fake.emit("customer.deleted", {**customer, "deleted": True})
        await stripe.settle()
        assert (await client.get(METHODS, headers=account.headers)).json()["items"] == []
        assert await count(database, PaymentCustomer) == 0
        await stripe.save_card(account)
        assert len(stripe.fake.calls("POST", "/v1/customers")) == 2
        assert len((await client.get(METHODS, headers=account.headers)).json()["items"]) == 1


class TestOtherOutcomes:
    async def test_an_off_session_charge_that_needs_authentication_fails_the_attempt(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
    ) -> None:
        await paid_pack(client, account, stripe)
        [succeeded] = stripe.fake.take_events()
        stripe.fake.emit(
            "payment_intent.requires_action",
            {**succeeded["data"]["object"], "status": "requires_action"},
        )
        await stripe.settle()
        payment = await only_payment(database)
        assert (payment.status, payment.failure_code) == ("failed", "authentication_required")
        assert await count(database, PackOrder, PackOrder.status == "failed") == 1

    async def test_an_expired_checkout_fails_the_order(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
    ) -> None:
        purchase = (await client.post(PURCHASE, headers=account.headers)).json()
        session_id = purchase["checkout_url"].rsplit("/", 1)[-1]
        stripe.fake.emit(
            "checkout.session.expired", {**stripe.fake.objects[session_id], "status": "expired"}
        )
        await stripe.settle()
        payment = await only_payment(database)
        assert (payment.status, payment.failure_code) == ("failed", "checkout_expired")
        assert await count(database, PackOrder, PackOrder.status == "failed") == 1

    @pytest.mark.parametrize("succeeds", [True, False])
    async def test_a_delayed_checkout_payment_settles_when_its_outcome_arrives(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
        ledger: MemoryCredits,
        succeeds: bool,
    ) -> None:
        purchase = (await client.post(PURCHASE, headers=account.headers)).json()
        session_id = purchase["checkout_url"].rsplit("/", 1)[-1]
        stripe.fake.complete_checkout(session_id, paid=False)
        await stripe.settle()
        assert (await only_payment(database)).status == "pending"
        outcome = "succeeded" if succeeds else "failed"
        stripe.fake.emit(
            f"checkout.session.async_payment_{outcome}",
            {**stripe.fake.objects[session_id], "payment_status": "paid" if succeeds else "unpaid"},
        )
        await stripe.settle()
        assert (await only_payment(database)).status == outcome
        granted = (1000, "purchase") in ledger.granted(account.organization_id)
        assert granted is succeeds


class TestUnmatchedMoney:
    async def test_money_taken_for_a_payment_tollway_does_not_have_is_reported(
        self,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        stripe: StripeHarness,
    ) -> None:
        intent = fixture(
            "payment_intent",
            id="pi_orphan_1",
            amount=1190,
            amount_received=1190,
            currency="usd",
            status="succeeded",
            metadata={
                "organization_id": account.organization_id,
                "purpose": "invoice",
                "tollway_idempotency_key": "invoice:inv_gone:attempt:1",
            },
        )
        stripe.fake.emit("payment_intent.succeeded", intent)
        stranger = fixture("payment_intent", id="pi_not_ours", metadata={"order": "42"})
        stripe.fake.emit("payment_intent.succeeded", stranger)
        await stripe.settle()
        async with database.transaction(write=False) as session:
            rows = (
                await session.execute(
                    select(OutboxEvent).where(OutboxEvent.event_type == "payment.unmatched")
                )
            ).scalars()
            [reported] = list(rows)
        assert reported.payload["provider_ref"] == "pi_orphan_1"
        assert reported.payload["amount"] == 1190
        assert reported.organization_id == account.organization_id


class TestOnlyStripesEvents:
    async def test_the_sandbox_endpoint_is_closed_when_tollway_runs_on_stripe(
        self, client: httpx.AsyncClient, clock: ManualClock, database: Database
    ) -> None:
        body = json.dumps(fixture("event", id="evt_sandbox_on_stripe")).encode()
        response = await client.post(
            "/api/v1/webhooks/sandbox",
            content=body,
            headers=signed(body, clock, secrets=["test-webhook-secret-0123456789abcdef"]),
        )
        assert (response.status_code, response.json()["code"]) == (404, "provider_not_configured")
        assert await count(database, WebhookEvent) == 0
