from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from tests.fixtures.billing import (
    BillingAccount,
    MemoryCredits,
    StaticCatalog,
    add_card,
    advance,
)
from tollway.billing.ports import DunningPolicy
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.outbox import OutboxEvent

DAY = 86_400


async def put_plan(client: httpx.AsyncClient, account: BillingAccount, plan: str) -> httpx.Response:
    return await client.put(
        "/api/v1/billing/subscription", json={"plan": plan}, headers=account.headers
    )


async def subscription(client: httpx.AsyncClient, account: BillingAccount) -> dict[str, Any]:
    body: dict[str, Any] = (
        await client.get("/api/v1/billing/subscription", headers=account.headers)
    ).json()
    return body


async def invoices(client: httpx.AsyncClient, account: BillingAccount) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (
        await client.get("/api/v1/billing/invoices", headers=account.headers)
    ).json()["items"]
    return sorted(items, key=lambda item: item["number"])


async def event_types(database: Database, organization_id: str) -> list[str]:
    async with database.transaction(write=False) as session:
        rows = await session.execute(
            select(OutboxEvent.event_type)
            .where(OutboxEvent.organization_id == organization_id)
            .order_by(OutboxEvent.seq)
        )
        return list(rows.scalars())


class TestTrialCredits:
    async def test_a_plan_without_trial_credits_grants_none_in_its_trial_nor_on_upgrade(
        self, client: httpx.AsyncClient, account: BillingAccount, ledger: MemoryCredits
    ) -> None:
        await add_card(client, account, "4242424242424242")
        assert (await put_plan(client, account, "lite")).json()["status"] == "trialing"
        assert ledger.granted(account.organization_id)[-1] == (100, "allotment")  # Free's
        # Pro allows trial credits: the upgrade grants its tokens, Lite's were none.
        assert (await put_plan(client, account, "pro")).json()["status"] == "trialing"
        assert ledger.granted(account.organization_id)[-1] == (1000, "allotment")


class TestPlanChanges:
    async def test_a_second_paid_plan_after_a_trial_is_invoiced_at_once_without_a_new_trial(
        self, client: httpx.AsyncClient, account: BillingAccount, ledger: MemoryCredits
    ) -> None:
        await add_card(client, account, "4242424242424242")
        assert (await put_plan(client, account, "pro")).json()["status"] == "trialing"
        canceled = await client.delete(
            "/api/v1/billing/subscription?at_period_end=false", headers=account.headers
        )
        assert (canceled.json()["plan"], canceled.json()["status"]) == ("free", "active")
        restarted = await put_plan(client, account, "pro")
        assert restarted.json()["status"] == "incomplete"
        await advance(client, account, 0)
        sub = await subscription(client, account)
        assert (sub["plan"], sub["status"], sub["trial_end"]) == ("pro", "active", None)
        [invoice] = await invoices(client, account)
        assert (invoice["billing_reason"], invoice["total"], invoice["status"]) == (
            "subscription_create",
            3451,
            "paid",
        )

    async def test_a_downgrade_waits_for_the_period_end(
        self, client: httpx.AsyncClient, account: BillingAccount, catalog: StaticCatalog
    ) -> None:
        await add_card(client, account, "4242424242424242")
        await put_plan(client, account, "business")
        await advance(client, account, 14 * DAY)  # trial over, first invoice paid
        down = await put_plan(client, account, "pro")
        assert (down.json()["plan"], down.json()["pending_plan"]) == ("business", "pro")
        assert catalog.assignments[account.organization_id].plan_id == "business"
        again = await put_plan(client, account, "pro")
        assert again.status_code == 200  # choosing the pending plan again is harmless
        await advance(client, account, 31 * DAY)
        sub = await subscription(client, account)
        assert (sub["plan"], sub["pending_plan"]) == ("pro", None)
        latest = (await invoices(client, account))[-1]
        assert latest["total"] == 3451
        assert catalog.assignments[account.organization_id].plan_id == "pro"

    async def test_choosing_the_current_plan_again_takes_back_a_scheduled_cancel(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        await add_card(client, account, "4242424242424242")
        await put_plan(client, account, "pro")
        await client.delete("/api/v1/billing/subscription", headers=account.headers)
        assert (await subscription(client, account))["cancel_at_period_end"] is True
        resumed = await put_plan(client, account, "pro")
        assert resumed.json()["cancel_at_period_end"] is False
        again = await put_plan(client, account, "pro")
        assert (again.status_code, again.json()["code"]) == (409, "plan_unchanged")

    async def test_the_free_plan_has_nothing_to_cancel(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        response = await client.delete("/api/v1/billing/subscription", headers=account.headers)
        assert (response.status_code, response.json()["code"]) == (
            409,
            "subscription_not_cancelable",
        )

    async def test_a_missing_plan_field_is_a_validation_error(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        response = await client.put(
            "/api/v1/billing/subscription", json={}, headers=account.headers
        )
        assert (response.status_code, response.json()["code"]) == (422, "validation_error")


class TestDunningPolicy:
    async def test_after_the_last_retry_the_catalog_can_cancel_and_mark_uncollectible(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        catalog: StaticCatalog,
        ledger: MemoryCredits,
        database: Database,
    ) -> None:
        catalog.dunning = DunningPolicy(retry_days=(1, 1), grace_days=1, final_status="canceled")
        await add_card(client, account, "4000000000000341")
        await put_plan(client, account, "pro")
        await advance(client, account, 14 * DAY)  # trial ends, the first charge fails
        assert (await subscription(client, account))["status"] == "past_due"
        await advance(client, account, 2 * DAY)  # two retries, both fail
        sub = await subscription(client, account)
        assert (sub["plan"], sub["status"]) == ("free", "active")
        [invoice] = await invoices(client, account)
        assert invoice["status"] == "uncollectible"
        types = await event_types(database, account.organization_id)
        for expected in (
            "subscription.past_due",
            "license.state_changed",
            "payment.failed",
            "invoice.marked_uncollectible",
            "subscription.canceled",
        ):
            assert expected in types

    async def test_unpaid_keeps_the_plan_restricted_until_paid(
        self, client: httpx.AsyncClient, account: BillingAccount, catalog: StaticCatalog
    ) -> None:
        catalog.dunning = DunningPolicy(retry_days=(1,), grace_days=1, final_status="unpaid")
        await add_card(client, account, "4000000000000341")
        await put_plan(client, account, "pro")
        await advance(client, account, 16 * DAY)
        sub = await subscription(client, account)
        assert (sub["plan"], sub["status"], sub["license_state"]) == ("pro", "unpaid", "restricted")
        refused = await put_plan(client, account, "business")
        assert (refused.status_code, refused.json()["code"]) == (409, "subscription_past_due")
        await add_card(client, account, "4242424242424242")
        await advance(client, account, 0)
        sub = await subscription(client, account)
        assert (sub["status"], sub["license_state"]) == ("active", "active")

    async def test_running_the_sweeps_again_changes_nothing(
        self, app: FastAPI, client: httpx.AsyncClient, account: BillingAccount, clock: ManualClock
    ) -> None:
        await add_card(client, account, "4000000000000341")
        await put_plan(client, account, "pro")
        await advance(client, account, 14 * DAY)
        before = await subscription(client, account)
        assert (await advance(client, account, 0))["handled"] == 0
        assert await subscription(client, account) == before


class TestIncomplete:
    async def test_an_unpaid_first_invoice_expires_after_23_hours_and_free_stays(
        self, client: httpx.AsyncClient, account: BillingAccount, catalog: StaticCatalog
    ) -> None:
        await add_card(client, account, "4242424242424242")
        await put_plan(client, account, "pro")  # uses up the trial
        await client.delete(
            "/api/v1/billing/subscription?at_period_end=false", headers=account.headers
        )
        await add_card(client, account, "4000000000000341")
        assert (await put_plan(client, account, "pro")).json()["status"] == "incomplete"
        await advance(client, account, 0)
        sub = await subscription(client, account)
        assert (sub["plan"], sub["status"]) == ("pro", "incomplete")
        assert catalog.assignments[account.organization_id].plan_id == "free"
        await advance(client, account, 23 * 3600)
        sub = await subscription(client, account)
        assert (sub["plan"], sub["status"]) == ("free", "active")
        [invoice] = await invoices(client, account)
        assert invoice["status"] == "void"
