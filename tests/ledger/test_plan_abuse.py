"""The reservation endpoint's abuse battery follows the organization's plan and overrides."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.fixtures.identity import Account, make_platform_admin, register
from tests.ledger.test_endpoints import RESERVATIONS, funded, problem
from tollway.plans.catalog import DEFAULT_CATALOG_PATH

STRICT_FREE_ABUSE = """
[plans.free.abuse]
requests_per_minute = 30
min_interval_seconds = 0
max_credits_per_request = 2
max_output_units = 100
fraud_credits_per_hour = 500
max_failures = 5
failure_window_seconds = 900
block_seconds = 900
"""


@pytest.fixture
async def strict_app(app_factory: Callable[..., FastAPI], tmp_path: Path) -> AsyncIterator[FastAPI]:
    """An app whose catalog gives the free plan its own abuse limits."""
    shipped = DEFAULT_CATALOG_PATH.read_text(encoding="utf-8")
    start = shipped.index("[plans.free.abuse]")
    end = shipped.index("[plans.pro]")
    path = tmp_path / "catalog.toml"
    path.write_text(shipped[:start] + STRICT_FREE_ABUSE.lstrip() + "\n" + shipped[end:])
    application = app_factory(catalog_path=path)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def strict_client(strict_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=strict_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def set_overrides(
    client: httpx.AsyncClient, admin: Account, organization_id: str, document: dict[str, Any]
) -> httpx.Response:
    return await client.put(
        f"/api/v1/admin/organizations/{organization_id}/overrides",
        json=document,
        headers=admin.headers,
    )


class TestTheReservationEndpointFollowsThePlan:
    async def test_the_plans_catalog_limits_decide_what_a_reservation_may_take(
        self, strict_app: FastAPI, strict_client: httpx.AsyncClient
    ) -> None:
        admin = await make_platform_admin(strict_app, await register(strict_client))
        account = await register(strict_client)
        await funded(strict_client, admin, account, 50)
        problem(
            await strict_client.post(RESERVATIONS, json={"amount": 3}, headers=account.headers),
            422,
            "request_too_large",
        )
        # The plan sets no minimum gap: two reservations in the same instant both pass.
        for _ in range(2):
            held = await strict_client.post(
                RESERVATIONS, json={"amount": 2}, headers=account.headers
            )
            assert held.status_code == 201, held.text
        body = problem(
            await strict_client.post(
                f"{RESERVATIONS}/{held.json()['id']}/commit",
                json={"output_units": 101},
                headers=account.headers,
            ),
            422,
            "output_too_large",
        )
        assert body["limit"] == 100

    async def test_an_organizations_override_raises_its_limits(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        admin = await make_platform_admin(app, await register(client))
        account = await register(client)
        await funded(client, admin, account, 100)
        problem(
            await client.post(RESERVATIONS, json={"amount": 40}, headers=account.headers),
            422,
            "request_too_large",
        )
        response = await set_overrides(
            client,
            admin,
            account.organization_id,
            {"abuse": {"max_credits_per_request": 50, "min_interval_seconds": 0}},
        )
        assert response.status_code == 200, response.text
        assert response.json()["overrides"]["abuse"] == {
            "max_credits_per_request": 50,
            "min_interval_seconds": 0,
        }
        for _ in range(2):
            held = await client.post(RESERVATIONS, json={"amount": 40}, headers=account.headers)
            assert held.status_code == 201, held.text
        # What the override leaves alone keeps the plan's value (2,000 output units).
        body = problem(
            await client.post(
                f"{RESERVATIONS}/{held.json()['id']}/commit",
                json={"output_units": 2001},
                headers=account.headers,
            ),
            422,
            "output_too_large",
        )
        assert body["limit"] == 2000

    @pytest.mark.parametrize(
        "abuse", [{"max_credits": 5}, {"max_credits_per_request": -1}, {"block_seconds": "x"}]
    )
    async def test_an_override_with_an_unknown_or_bad_abuse_limit_is_refused(
        self, app: FastAPI, client: httpx.AsyncClient, abuse: dict[str, Any]
    ) -> None:
        admin = await make_platform_admin(app, await register(client))
        account = await register(client)
        response = await set_overrides(client, admin, account.organization_id, {"abuse": abuse})
        assert response.status_code == 422, response.text
