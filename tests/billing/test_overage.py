"""Overage: use above a soft quota, billed in arrears on the renewal invoice.

The shipped catalog's Pro plan: 149.00 a month, a 14-day trial, 100,000 API calls
included (soft quota), then 1.00 per started block of 1,000 calls. Germany's VAT (19 %)
is inclusive.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
from fastapi import FastAPI

from tests.fixtures.billing import BillingAccount, add_card, advance
from tollway.billing import ports
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.plans.catalog import Catalog, Overage, PlanFeature, PlanPrice, catalog_digest
from tollway.plans.service.catalog import catalog_service

DAY = 86_400


async def subscribe_to_pro(client: httpx.AsyncClient, account: BillingAccount) -> None:
    ports.use_catalog(None)  # the installed plans domain, not the test stand-in
    await add_card(client, account, "4242424242424242")
    started = await client.put(
        "/api/v1/billing/subscription", json={"plan": "pro"}, headers=account.headers
    )
    assert started.json()["status"] == "trialing", started.text
    await advance(client, account, 14 * DAY)  # the trial ends: the first period is paid


async def use_api(client: httpx.AsyncClient, account: BillingAccount, calls: int) -> None:
    response = await client.post(
        "/api/v1/billing/usage",
        json={"meter": "api_calls", "quantity": calls, "idempotency_key": f"calls-{calls}"},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text


async def latest_invoice(client: httpx.AsyncClient, account: BillingAccount) -> dict[str, Any]:
    page = await client.get("/api/v1/billing/invoices", headers=account.headers)
    newest = max(page.json()["items"], key=lambda item: item["number"])
    detail = await client.get(f"/api/v1/billing/invoices/{newest['id']}", headers=account.headers)
    body: dict[str, Any] = detail.json()
    return body


def repriced_catalog() -> Catalog:
    """The shipped catalog with Pro at 199.00 and API overage at 2.00 per 1,000."""
    original = catalog_service.catalog
    pro = original.plans["pro"]
    api = dataclasses.replace(
        pro.features["api"], overage=Overage(unit_amount_minor=200, per_units=1000)
    )
    features: dict[str, PlanFeature] = {**pro.features, "api": api}
    repriced_pro = dataclasses.replace(
        pro,
        price=PlanPrice(amount_minor=19900, currency="usd", interval="month"),
        features=features,
    )
    document = {**original.document, "plans": {**original.document["plans"]}}
    document["plans"]["pro"] = {
        **document["plans"]["pro"],
        "price": {"amount": 19900, "currency": "usd", "interval": "month"},
    }
    return dataclasses.replace(
        original,
        plans={**original.plans, "pro": repriced_pro},
        document=document,
        digest=catalog_digest(document),
    )


class TestOverage:
    async def test_a_pro_organization_over_its_quota_pays_for_the_extra_calls_next_invoice(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        await subscribe_to_pro(client, account)
        await use_api(client, account, 100_000)
        await use_api(client, account, 2_500)
        await advance(client, account, 31 * DAY)
        invoice = await latest_invoice(client, account)
        lines = [(line["kind"], line["quantity"], line["amount"]) for line in invoice["lines"]]
        # 102,500 calls: 2,500 over the 100,000 included = 3 started blocks of 1,000 at 1.00.
        assert lines == [("base", 1, 14900), ("overage", 3, 300)]
        # 152.00 including 19 % VAT: 15200 x 19 / 119 = 2426.9 -> 2427.
        assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (15200, 2427, 15200)
        assert invoice["status"] == "paid"

    async def test_use_within_the_quota_adds_no_overage_line(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        await subscribe_to_pro(client, account)
        await use_api(client, account, 100_000)
        await advance(client, account, 31 * DAY)
        invoice = await latest_invoice(client, account)
        assert [line["kind"] for line in invoice["lines"]] == ["base"]

    async def test_a_new_catalog_does_not_reprice_an_existing_subscription(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        database: Database,
        clock: ManualClock,
        account: BillingAccount,
    ) -> None:
        await subscribe_to_pro(client, account)
        catalog = repriced_catalog()
        async with database.transaction() as session:
            version = await catalog_service.store(session, catalog, source="test", now=clock.now())
        catalog_service.use(catalog, version=version, now=clock.now())
        await use_api(client, account, 101_001)
        await advance(client, account, 31 * DAY)
        invoice = await latest_invoice(client, account)
        lines = [(line["kind"], line["quantity"], line["amount"]) for line in invoice["lines"]]
        # The price and the overage price the subscription started with: 149.00, and
        # 1,001 calls over = 2 started blocks at 1.00 (not 199.00 and 2.00).
        assert lines == [("base", 1, 14900), ("overage", 2, 200)]
