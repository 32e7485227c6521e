from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.fixtures.billing import BillingAccount, add_card, advance, create_organization
from tollway.billing.models import Invoice
from tollway.billing.tasks import renew_subscriptions
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.sweeps import SweepContext

DAY = 86_400


class TestConcurrentBilling:
    async def test_concurrent_purchases_get_distinct_gapless_numbers(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        await add_card(client, account, "4242424242424242")
        answers = await asyncio.gather(
            *(
                client.post("/api/v1/credits/packs/pack_1000/purchase", headers=account.headers)
                for _ in range(6)
            )
        )
        assert {answer.status_code for answer in answers} == {200}
        listed = (await client.get("/api/v1/billing/invoices", headers=account.headers)).json()
        numbers = sorted(item["number"] for item in listed["items"])
        assert numbers == [f"TW-2026-{n:06d}" for n in range(1, 7)]

    @pytest.mark.postgres_only
    async def test_two_workers_renew_each_subscription_once(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        account: BillingAccount,
    ) -> None:
        accounts = [account] + [await create_organization(client, app) for _ in range(4)]
        for each in accounts:
            await add_card(client, each, "4242424242424242")
            await client.put(
                "/api/v1/billing/subscription", json={"plan": "pro"}, headers=each.headers
            )
        clock.advance(seconds=14 * DAY)
        context = SweepContext(database=database, clock=clock, settings=app.state.settings)
        handled = await asyncio.gather(renew_subscriptions(context), renew_subscriptions(context))
        assert sum(handled) == 5
        async with database.transaction(write=False) as session:
            count = (await session.execute(select(func.count()).select_from(Invoice))).scalar_one()
        assert count == 5
        await account.log_in_again(client)  # the clock moved past the tokens' expiry
        await advance(client, account, 0)
        listed = (await client.get("/api/v1/billing/invoices", headers=account.headers)).json()
        assert [item["status"] for item in listed["items"]] == ["paid"]
