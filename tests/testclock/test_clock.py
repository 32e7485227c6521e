from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select

from tests.conftest import START
from tests.fixtures.apps import client_from
from tests.fixtures.billing import (
    BillingAccount,
    MemoryCredits,
    StaticCatalog,
    add_card,
    create_organization,
)
from tollway.app import create_app
from tollway.audit.models import AuditEntry
from tollway.billing.service.renewals import renewal_service
from tollway.config import Settings
from tollway.db import Database
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

    async def test_a_move_sent_with_an_idempotency_key_does_not_hang_the_writer(
        self, client: httpx.AsyncClient, clock: ManualClock, account: BillingAccount
    ) -> None:
        start = clock.now()
        headers = {**account.admin_headers, "Idempotency-Key": "advance-1"}
        # Bounded so a writer deadlock fails the test instead of hanging the suite.
        response = await asyncio.wait_for(
            client.post("/api/v1/admin/clock/advance", json={"seconds": 60}, headers=headers),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert clock.now() == start + timedelta(seconds=60)
        headers["Idempotency-Key"] = "reset-1"
        reset = await asyncio.wait_for(
            client.post("/api/v1/admin/clock/reset", headers=headers), timeout=30
        )
        assert reset.status_code == 200, reset.text

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

        monkeypatch.setattr(renewal_service, "renew", broken_renewal)
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


@pytest.fixture
def wall() -> ManualClock:
    """The wall clock of security time, moved separately from the business clock."""
    return ManualClock(START)


@pytest.fixture
async def two_clocks(
    settings: Settings, clock: ManualClock, wall: ManualClock
) -> AsyncIterator[FastAPI]:
    """An app whose business clock (``clock``) and wall clock (``wall``) move apart."""
    application = create_app(settings, clock=clock, wall_clock=wall)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def http(two_clocks: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_from(two_clocks) as client:
        yield client


class TestSecurityTime:
    """Token expiry, sessions and license tokens run on the wall clock, billing on the
    business clock: moving the test clock logs nobody out."""

    async def test_moving_the_business_clock_logs_nobody_out(
        self,
        two_clocks: FastAPI,
        http: httpx.AsyncClient,
        clock: ManualClock,
        wall: ManualClock,
        catalog: StaticCatalog,
        ledger: MemoryCredits,
    ) -> None:
        account = await create_organization(http, two_clocks)
        opened = await http.post(
            "/api/v1/auth/session",
            json={"email": account.user.email, "password": account.user.password},
        )
        assert opened.status_code == 200, opened.text
        moved = await http.post(
            "/api/v1/admin/clock/advance",
            json={"seconds": 40 * 86_400},
            headers=account.admin_headers,
        )
        assert moved.status_code == 200, moved.text
        assert clock.now() == START + timedelta(days=40)
        me = await http.get("/api/v1/auth/me", headers=account.headers)
        assert me.status_code == 200, me.text
        from_cookie = await http.get("/api/v1/auth/me")
        assert from_cookie.status_code == 200, from_cookie.text
        refreshed = await http.post(
            "/api/v1/auth/refresh", json={"refresh_token": account.user.refresh_token}
        )
        assert refreshed.status_code == 200, refreshed.text
        license_token = await http.post("/api/v1/license/token", headers=account.headers)
        assert license_token.status_code == 200, license_token.text
        claims = jwt.decode(
            license_token.json()["token"], options={"verify_signature": False, "verify_exp": False}
        )
        assert claims["iat"] == int(wall.now().timestamp())
        assert claims["exp"] == int((wall.now() + timedelta(days=7)).timestamp())

    async def test_tokens_expire_by_the_wall_clock(
        self,
        two_clocks: FastAPI,
        http: httpx.AsyncClient,
        wall: ManualClock,
        catalog: StaticCatalog,
        ledger: MemoryCredits,
    ) -> None:
        account = await create_organization(http, two_clocks)
        wall.advance(minutes=16)
        expired = await http.get("/api/v1/auth/me", headers=account.headers)
        assert (expired.status_code, expired.json()["code"]) == (401, "token_expired")

    async def test_a_reset_puts_business_time_back_on_the_wall_and_every_move_is_audited(
        self,
        two_clocks: FastAPI,
        http: httpx.AsyncClient,
        clock: ManualClock,
        wall: ManualClock,
        catalog: StaticCatalog,
        ledger: MemoryCredits,
    ) -> None:
        account = await create_organization(http, two_clocks)
        advanced = await http.post(
            "/api/v1/admin/clock/advance", json={"seconds": 86_400}, headers=account.admin_headers
        )
        assert advanced.status_code == 200, advanced.text
        refused = await http.post("/api/v1/admin/clock/reset", headers=account.headers)
        assert refused.status_code == 403
        reset = await http.post("/api/v1/admin/clock/reset", headers=account.admin_headers)
        assert reset.status_code == 200, reset.text
        assert reset.json()["offset_seconds"] == 0
        assert clock.now() == wall.now()
        assert await clock_service.load_offset(two_clocks.state.database) == 0
        database: Database = two_clocks.state.database
        async with database.transaction(write=False) as session:
            moves = list(
                (
                    await session.execute(
                        select(AuditEntry)
                        .where(AuditEntry.action.like("testclock.%"))
                        .order_by(AuditEntry.seq)
                    )
                ).scalars()
            )
        actor = f"user:{account.admin.user_id}"
        assert [(m.action, m.actor) for m in moves] == [
            ("testclock.advanced", actor),
            ("testclock.reset", actor),
        ]
        assert moves[0].details["seconds"] == 86_400
        assert moves[1].details["offset_seconds_before"] == 86_400
