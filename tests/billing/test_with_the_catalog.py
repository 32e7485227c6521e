"""Billing against the real catalog (plans domain) and entitlements, through HTTP.

The shipped catalog: Pro is 149.00 USD a month with a 14-day trial; Germany's VAT is
19 % *inclusive*; ``ai.generate`` degrades at once, ``sync`` after grace.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.fixtures.billing import BillingAccount, MemoryCredits, add_card, advance
from tollway.billing import ports

DAY = 86_400


async def entitlements(client: httpx.AsyncClient, account: BillingAccount) -> dict[str, Any]:
    response = await client.get("/api/v1/entitlements", headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestWithTheShippedCatalog:
    async def test_trial_invoice_with_inclusive_vat_then_grace_degrades_ai_only(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: BillingAccount,
        ledger: MemoryCredits,
    ) -> None:
        ports.use_catalog(None)  # the installed plans domain, not the test stand-in
        await add_card(client, account, "4242424242424242")
        started = await client.put(
            "/api/v1/billing/subscription", json={"plan": "pro"}, headers=account.headers
        )
        assert started.json()["status"] == "trialing"
        view = await entitlements(client, account)
        assert (view["plan"], view["license_state"]) == ("pro", "active")

        # After the trial: 149.00 including 19 % VAT: net 14900 / 1.19 = 12521.01 -> 12521,
        # VAT 2379, total 14900.
        await advance(client, account, 14 * DAY)
        [invoice] = (await client.get("/api/v1/billing/invoices", headers=account.headers)).json()[
            "items"
        ]
        assert (invoice["subtotal"], invoice["tax"], invoice["total"], invoice["status"]) == (
            14900,
            2379,
            14900,
            "paid",
        )

        await add_card(client, account, "4000000000000341")
        await advance(client, account, 31 * DAY)
        view = await entitlements(client, account)
        assert view["license_state"] == "grace"
        assert view["features"]["ai.generate"]["enabled"] is False
        assert view["features"]["sync"]["enabled"] is True


class TestReadingTheSubscription:
    async def test_reading_it_keeps_the_plan_an_operator_assigned(
        self, app: FastAPI, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        ports.use_catalog(None)
        assigned = await client.put(
            f"/api/v1/admin/organizations/{account.organization_id}/plan",
            json={"plan": "pro"},
            headers=account.admin_headers,
        )
        assert assigned.status_code == 200, assigned.text
        for _ in range(2):
            read = await client.get("/api/v1/billing/subscription", headers=account.headers)
            assert read.status_code == 200, read.text
            assert (read.json()["plan"], read.json()["license_state"]) == ("pro", "active")
        assert (await entitlements(client, account))["plan"] == "pro"

    async def test_a_first_read_writes_nothing_and_answers_the_free_plan(
        self, app: FastAPI, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        ports.use_catalog(None)
        read = await client.get("/api/v1/billing/subscription", headers=account.headers)
        assert read.status_code == 200, read.text
        body = read.json()
        assert (body["id"], body["plan"], body["status"]) == (None, "free", "active")
        assert body["current_period_start"] <= body["current_period_end"]
        again = await client.get("/api/v1/billing/subscription", headers=account.headers)
        assert again.json() == body


FAILING_CARD = "4000000000000341"  # attaches, every charge fails


async def credits(client: httpx.AsyncClient, account: BillingAccount) -> dict[str, Any]:
    response = await client.get("/api/v1/credits/balance", headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def transfers(client: httpx.AsyncClient, account: BillingAccount) -> list[str]:
    """The kinds of the transfers that moved the wallet, newest first."""
    response = await client.get("/api/v1/credits/ledger?limit=100", headers=account.headers)
    assert response.status_code == 200, response.text
    return [entry["kind"] for entry in response.json()["items"] if entry["account"] == "wallet"]


class TestTrialCredits:
    async def start_trial(self, client: httpx.AsyncClient, account: BillingAccount) -> None:
        ports.use_catalog(None)
        ports.use_credits(None)  # the real ledger
        assert (await add_card(client, account, FAILING_CARD)).status_code == 201
        started = await client.put(
            "/api/v1/billing/subscription", json={"plan": "pro"}, headers=account.headers
        )
        assert started.json()["status"] == "trialing", started.text
        assert (await credits(client, account))["available"] == 200

    async def test_an_upgrade_in_the_trial_grants_the_difference_and_a_cancel_takes_it_back(
        self, app: FastAPI, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        await self.start_trial(client, account)
        upgraded = await client.put(
            "/api/v1/billing/subscription", json={"plan": "enterprise"}, headers=account.headers
        )
        assert upgraded.json()["status"] == "trialing", upgraded.text
        assert (await credits(client, account))["available"] == 2000
        held = await client.post(
            "/api/v1/credits/reservations", json={"amount": 5}, headers=account.headers
        )
        committed = await client.post(
            f"/api/v1/credits/reservations/{held.json()['id']}/commit", headers=account.headers
        )
        assert committed.status_code == 200, committed.text

        ended = await client.delete(
            "/api/v1/billing/subscription?at_period_end=false", headers=account.headers
        )
        assert ended.status_code == 200, ended.text
        after = await credits(client, account)
        assert (after["balance"], after["available"]) == (0, 0)
        # Both lots (Pro's 200, the upgrade's 1,800) reversed, what was spent stays spent.
        assert (await transfers(client, account))[:2] == ["reverse", "reverse"]

    async def test_a_trial_that_never_converts_keeps_nothing(
        self, app: FastAPI, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        await self.start_trial(client, account)
        await advance(client, account, 14 * DAY + 60)
        sub = (await client.get("/api/v1/billing/subscription", headers=account.headers)).json()
        assert sub["status"] == "past_due"
        after = await credits(client, account)
        assert (after["balance"], after["available"]) == (0, 0)
        assert await transfers(client, account) == ["reverse", "grant"]  # newest first
