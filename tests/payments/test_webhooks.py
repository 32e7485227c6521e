"""The incoming webhook pipeline: signatures, storage, duplicates, order, retries."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.fixtures.billing import BillingAccount, MemoryCredits, add_card, advance
from tollway.billing.models import Invoice, PackOrder
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.outbox import OutboxEvent
from tollway.kit.sweeps import SweepContext
from tollway.payments.models import Payment, WebhookEvent
from tollway.payments.providers.signature import sign
from tollway.payments.tasks import process_webhook_events
from tollway.payments.webhooks.queue import MAX_ATTEMPTS, backoff_seconds, handles

SECRET = "test-webhook-secret-0123456789abcdef"
URL = "/api/v1/webhooks/sandbox"


def event(event_type: str, obj: dict[str, Any], *, event_id: str, created: int) -> bytes:
    body = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": created,
        "data": {"object": obj},
    }
    return json.dumps(body).encode()


def headers_for(
    body: bytes, clock: ManualClock, *, secrets: list[str] | None = None, at: int | None = None
) -> dict[str, str]:
    timestamp = at if at is not None else int(clock.now().timestamp())
    return {
        "Stripe-Signature": sign(secrets or [SECRET], timestamp, body),
        "Content-Type": "application/json",
    }


async def sweep(app: FastAPI) -> int:
    context = SweepContext(
        database=app.state.database, clock=app.state.clock, settings=app.state.settings
    )
    return await process_webhook_events(context)


async def count(database: Database, model: Any, *conditions: Any) -> int:
    async with database.transaction(write=False) as session:
        statement = select(func.count()).select_from(model).where(*conditions)
        return int((await session.execute(statement)).scalar_one())


async def pending_pack_payment(
    client: httpx.AsyncClient, database: Database, account: BillingAccount
) -> tuple[Payment, str]:
    """A token-pack purchase through checkout: a pending payment and its order id."""
    response = await client.post(
        "/api/v1/credits/packs/pack_1000/purchase", headers=account.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["checkout_url"]
    async with database.transaction(write=False) as session:
        invoice_id = response.json()["invoice_id"]
        payment = (
            await session.execute(select(Payment).where(Payment.reference_id == invoice_id))
        ).scalar_one()
    return payment, response.json()["order_id"]


def intent(payment: Payment, *, status: str) -> dict[str, Any]:
    return {
        "id": f"pi_test_{payment.id}",
        "object": "payment_intent",
        "amount": payment.amount_minor,
        "currency": payment.currency,
        "status": status,
        "metadata": {"tollway_payment_id": payment.id},
        "last_payment_error": None if status == "succeeded" else {"code": "card_declined"},
    }


class TestSignature:
    async def test_a_valid_signature_is_stored_and_answered_at_once(
        self,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        account: BillingAccount,
    ) -> None:
        body = event("customer.created", {"id": "cus_1"}, event_id="evt_valid", created=1)
        response = await client.post(URL, content=body, headers=headers_for(body, clock))
        assert response.status_code == 200
        assert response.json()["duplicate"] is False
        assert await count(database, WebhookEvent, WebhookEvent.status == "pending") == 1

    async def test_a_tampered_body_is_refused(
        self,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        account: BillingAccount,
    ) -> None:
        body = event("payment_intent.succeeded", {"id": "pi_1"}, event_id="evt_t", created=1)
        headers = headers_for(body, clock)
        tampered = body.replace(b"pi_1", b"pi_2")
        response = await client.post(URL, content=tampered, headers=headers)
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "webhook_signature_invalid"
        assert await count(database, WebhookEvent) == 0

    async def test_a_signature_older_than_five_minutes_is_refused(
        self, client: httpx.AsyncClient, clock: ManualClock, account: BillingAccount
    ) -> None:
        body = event("customer.created", {"id": "cus_1"}, event_id="evt_stale", created=1)
        stale = int(clock.now().timestamp()) - 301
        response = await client.post(URL, content=body, headers=headers_for(body, clock, at=stale))
        assert response.status_code == 400
        assert response.json()["code"] == "webhook_timestamp_out_of_tolerance"
        fresh = int(clock.now().timestamp()) - 299
        response = await client.post(URL, content=body, headers=headers_for(body, clock, at=fresh))
        assert response.status_code == 200

    async def test_a_missing_header_is_refused(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        body = event("customer.created", {"id": "cus_1"}, event_id="evt_nohdr", created=1)
        response = await client.post(
            URL, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["code"] == "webhook_signature_missing"

    async def test_two_v1_values_during_a_rotation_are_accepted_when_one_matches(
        self, client: httpx.AsyncClient, clock: ManualClock, account: BillingAccount
    ) -> None:
        body = event("customer.created", {"id": "cus_1"}, event_id="evt_rot", created=1)
        rotated = headers_for(body, clock, secrets=["the-old-secret", SECRET])
        assert rotated["Stripe-Signature"].count("v1=") == 2
        response = await client.post(URL, content=body, headers=rotated)
        assert response.status_code == 200
        only_old = headers_for(body, clock, secrets=["the-old-secret"])
        response = await client.post(URL, content=body, headers=only_old)
        assert response.status_code == 400

    async def test_a_body_that_is_not_an_event_is_refused(
        self, client: httpx.AsyncClient, clock: ManualClock, account: BillingAccount
    ) -> None:
        body = b'{"hello": "world"}'
        response = await client.post(URL, content=body, headers=headers_for(body, clock))
        assert response.status_code == 400
        assert response.json()["code"] == "webhook_payload_invalid"


class TestDelivery:
    async def test_a_duplicate_delivery_has_one_effect(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        account: BillingAccount,
        ledger: MemoryCredits,
    ) -> None:
        payment, _order_id = await pending_pack_payment(client, database, account)
        body = event(
            "payment_intent.succeeded",
            intent(payment, status="succeeded"),
            event_id="evt_dup",
            created=10,
        )
        first = await client.post(URL, content=body, headers=headers_for(body, clock))
        second = await client.post(URL, content=body, headers=headers_for(body, clock))
        assert first.status_code == second.status_code == 200
        assert second.json() == {**first.json(), "duplicate": True}
        await sweep(app)
        assert await sweep(app) == 0
        assert await count(database, WebhookEvent) == 1
        assert ledger.granted(account.organization_id) == [
            (100, "allotment"),
            (1000, "purchase"),
        ] or (ledger.granted(account.organization_id) == [(1000, "purchase")])
        assert (
            await count(database, OutboxEvent, OutboxEvent.event_type == "payment.succeeded") == 1
        )
        assert await count(database, PackOrder, PackOrder.status == "paid") == 1

    async def test_concurrent_duplicate_deliveries_have_one_effect(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        account: BillingAccount,
        ledger: MemoryCredits,
    ) -> None:
        payment, _ = await pending_pack_payment(client, database, account)
        body = event(
            "payment_intent.succeeded",
            intent(payment, status="succeeded"),
            event_id="evt_conc",
            created=10,
        )
        answers = await asyncio.gather(
            *(client.post(URL, content=body, headers=headers_for(body, clock)) for _ in range(4))
        )
        assert [answer.status_code for answer in answers] == [200] * 4
        assert sorted(answer.json()["duplicate"] for answer in answers) == [False, True, True, True]
        await asyncio.gather(sweep(app), sweep(app))
        assert await count(database, WebhookEvent) == 1
        purchases = [g for g in ledger.grants if g.source == "purchase"]
        assert len(purchases) == 1
        assert (
            await count(database, OutboxEvent, OutboxEvent.event_type == "payment.succeeded") == 1
        )

    async def test_events_in_reverse_order_end_in_the_right_state(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        account: BillingAccount,
        ledger: MemoryCredits,
    ) -> None:
        payment, order_id = await pending_pack_payment(client, database, account)
        pi = intent(payment, status="succeeded")
        refunded = {
            "id": "ch_1",
            "object": "charge",
            "payment_intent": pi["id"],
            "amount": payment.amount_minor,
            "currency": payment.currency,
            "amount_refunded": 300,
            "metadata": {"tollway_payment_id": payment.id},
        }
        completed = {
            "id": "cs_unknown",
            "object": "checkout.session",
            "payment_intent": pi["id"],
            "metadata": {"tollway_payment_id": payment.id},
        }
        in_order = [
            event("checkout.session.completed", completed, event_id="evt_r1", created=1),
            event("payment_intent.succeeded", pi, event_id="evt_r2", created=2),
            event("charge.refunded", refunded, event_id="evt_r3", created=3),
        ]
        for body in reversed(in_order):
            response = await client.post(URL, content=body, headers=headers_for(body, clock))
            assert response.status_code == 200
            await sweep(app)
        async with database.transaction(write=False) as session:
            stored = await session.get(Payment, payment.id)
            invoice = await session.get(Invoice, payment.reference_id)
            order = await session.get(PackOrder, order_id)
        assert stored is not None
        assert invoice is not None
        assert order is not None
        assert (stored.status, stored.refunded_minor, stored.provider_ref) == (
            "succeeded",
            300,
            pi["id"],
        )
        assert invoice.status == "paid"
        assert order.status == "paid"
        assert len([g for g in ledger.grants if g.source == "purchase"]) == 1

    async def test_a_failure_reported_after_the_success_does_not_undo_it(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        account: BillingAccount,
    ) -> None:
        payment, order_id = await pending_pack_payment(client, database, account)
        succeeded = event(
            "payment_intent.succeeded",
            intent(payment, status="succeeded"),
            event_id="evt_s",
            created=2,
        )
        failed = event(
            "payment_intent.payment_failed",
            intent(payment, status="requires_payment_method"),
            event_id="evt_f",
            created=1,
        )
        for body in (succeeded, failed):
            await client.post(URL, content=body, headers=headers_for(body, clock))
            await sweep(app)
        async with database.transaction(write=False) as session:
            stored = await session.get(Payment, payment.id)
            order = await session.get(PackOrder, order_id)
        assert stored is not None
        assert order is not None
        assert stored.status == "succeeded"
        assert order.status == "paid"

    async def test_an_unknown_type_is_answered_and_ignored(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        account: BillingAccount,
    ) -> None:
        body = event("customer.tax_id.created", {"id": "txi_1"}, event_id="evt_unknown", created=1)
        response = await client.post(URL, content=body, headers=headers_for(body, clock))
        assert response.status_code == 200
        assert await sweep(app) == 1
        assert await count(database, WebhookEvent, WebhookEvent.status == "ignored") == 1


class TestRetries:
    async def test_a_failing_handler_backs_off_then_is_parked_and_listed_for_admins(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        account: BillingAccount,
    ) -> None:
        calls: list[str] = []

        @handles("test.explodes")
        async def explode(*args: Any) -> None:
            calls.append("called")
            raise RuntimeError("the handler is broken")

        body = event("test.explodes", {"id": "x"}, event_id="evt_boom", created=1)
        await client.post(URL, content=body, headers=headers_for(body, clock))
        for attempt in range(1, MAX_ATTEMPTS + 1):
            await sweep(app)
            assert len(calls) == attempt
            await sweep(app)  # not due again before the backoff has passed
            assert len(calls) == attempt
            clock.advance(seconds=backoff_seconds(attempt))
        await sweep(app)
        assert len(calls) == MAX_ATTEMPTS
        await account.log_in_again(client)
        response = await client.get(
            "/api/v1/admin/webhook-events?status=parked", headers=account.admin_headers
        )
        assert response.status_code == 200
        [parked] = response.json()["items"]
        assert parked["event_id"] == "evt_boom"
        assert parked["attempts"] == MAX_ATTEMPTS
        assert "the handler is broken" in parked["last_error"]
        assert (
            await client.get("/api/v1/admin/webhook-events", headers=account.headers)
        ).status_code == 403
        retried = await client.post(
            f"/api/v1/admin/webhook-events/{parked['id']}/retry", headers=account.admin_headers
        )
        assert retried.json()["status"] == "pending"


class TestSandboxCheckout:
    async def test_the_hosted_page_pays_and_the_credits_land_through_the_webhook_path(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        ledger: MemoryCredits,
    ) -> None:
        response = await client.post(
            "/api/v1/credits/packs/pack_1000/purchase", headers=account.headers
        )
        url = response.json()["checkout_url"]
        assert response.json()["status"] == "pending"
        page = await client.get(url)
        assert page.status_code == 200
        assert "11.90 USD" in page.text  # 10.00 + 19 % VAT (DE)
        declined = await client.post(
            url + "/pay",
            data={
                "card_number": "4000000000000002",
                "exp_month": "12",
                "exp_year": "2030",
                "cvc": "123",
            },
        )
        assert declined.status_code == 402
        assert "declined" in declined.text
        paid = await client.post(
            url + "/pay",
            data={
                "card_number": "4242424242424242",
                "exp_month": "12",
                "exp_year": "2030",
                "cvc": "123",
            },
        )
        assert paid.status_code == 200
        assert not [g for g in ledger.grants if g.source == "purchase"]
        await advance(client, account, 0)
        assert [g.amount for g in ledger.grants if g.source == "purchase"] == [1000]
        assert await count(database, WebhookEvent, WebhookEvent.status == "processed") == 2

    async def test_with_a_default_card_the_pack_is_charged_at_once(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: BillingAccount,
        ledger: MemoryCredits,
    ) -> None:
        assert (await add_card(client, account, "4242424242424242")).status_code == 201
        response = await client.post(
            "/api/v1/credits/packs/pack_1000/purchase", headers=account.headers
        )
        assert response.json()["checkout_url"] is None
        await advance(client, account, 0)
        assert [g.amount for g in ledger.grants if g.source == "purchase"] == [1000]
        unknown = await client.post("/api/v1/credits/packs/nope/purchase", headers=account.headers)
        assert unknown.status_code == 404
        assert unknown.json()["code"] == "token_pack_not_found"
