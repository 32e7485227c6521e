from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr

from tests.fixtures.billing import BillingAccount, add_card
from tollway.billing.service import billing_service
from tollway.kit.clock import ManualClock, SystemClock
from tollway.kit.sweeps import SweepContext
from tollway.testclock.service import clock_service


class TestClockAdvance:
    async def test_advancing_moves_business_time_and_is_stored(
        self, app: FastAPI, client: httpx.AsyncClient, clock: ManualClock, account: BillingAccount
    ) -> None:
        start = clock.now()
        response = await client.post(
            "/api/v1/admin/clock/advance", json={"seconds": 3600}, headers=account.admin_headers
        )
        assert response.status_code == 200
        assert clock.now() == start + timedelta(hours=1)
        assert response.json()["offset_seconds"] == 3600
        assert await clock_service.load_offset(app.state.database) == 3600 * 1_000_000

    async def test_a_renewal_that_keeps_failing_does_not_stall_the_clock(
        self,
        client: httpx.AsyncClient,
        clock: ManualClock,
        account: BillingAccount,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        await add_card(client, account, "4242424242424242")
        subscribed = await client.put(
            "/api/v1/billing/subscription", json={"plan": "pro"}, headers=account.headers
        )
        assert subscribed.status_code == 200, subscribed.text

        async def broken_renewal(*_args: Any, **_kwargs: Any) -> bool:
            raise RuntimeError("a renewal bug")

        monkeypatch.setattr(billing_service, "renew", broken_renewal)
        start = clock.now()
        response = await asyncio.wait_for(
            client.post(
                "/api/v1/admin/clock/advance",
                json={"seconds": 40 * 86_400},
                headers=account.admin_headers,
            ),
            timeout=30,
        )
        assert response.status_code == 200
        assert clock.now() == start + timedelta(days=40)

    async def test_only_admins_may_move_the_clock_and_never_backwards(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        url = "/api/v1/admin/clock/advance"
        assert (
            await client.post(url, json={"seconds": 1}, headers=account.headers)
        ).status_code == 403
        backwards = await client.post(url, json={"seconds": -1}, headers=account.admin_headers)
        assert (backwards.status_code, backwards.json()["code"]) == (422, "validation_error")

    async def test_outside_the_sandbox_the_clock_is_not_found(
        self, app_factory: Callable[..., FastAPI], account: BillingAccount
    ) -> None:
        stripe_app = app_factory(
            payment_provider="stripe",
            stripe_api_key=SecretStr("sk_test_clock"),
            stripe_webhook_secret=SecretStr("whsec_clock"),
        )
        async with LifespanManager(stripe_app):
            transport = httpx.ASGITransport(app=stripe_app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                response = await http.post(
                    "/api/v1/admin/clock/advance",
                    json={"seconds": 60},
                    headers=account.admin_headers,
                )
        assert (response.status_code, response.json()["code"]) == (404, "not_found")

    async def test_a_wall_clock_process_follows_the_stored_offset(
        self, app: FastAPI, account: BillingAccount
    ) -> None:
        context = SweepContext(
            database=app.state.database, clock=SystemClock(), settings=app.state.settings
        )
        await clock_service.advance(context, seconds=86_400)
        another_process = SystemClock()
        await clock_service.restore(app.state.database, another_process)
        # Target = wall now + 1 day, so the offset is one day less the time the run took.
        assert timedelta(days=1) - timedelta(seconds=5) < another_process.offset
        assert another_process.offset <= timedelta(days=1)
