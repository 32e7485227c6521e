from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.entitlements import key_headers, override, put_on_plan
from tests.fixtures.identity import Account, create_api_key, register


@pytest.fixture
async def account(client: httpx.AsyncClient) -> Account:
    return await register(client)


@pytest.fixture
async def headers(client: httpx.AsyncClient, account: Account) -> dict[str, str]:
    return key_headers(await create_api_key(client, account))


async def api_calls(client: httpx.AsyncClient, account: Account) -> int:
    response = await client.get("/api/v1/billing/usage", headers=account.headers)
    return next(m["used"] for m in response.json()["meters"] if m["meter"] == "api_calls")


class TestOwnApiMetering:
    async def test_calls_with_an_api_key_are_metered_and_token_calls_are_not(
        self, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        for _ in range(3):
            assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 200
        await client.get("/api/v1/auth/me", headers=account.headers)
        await client.post("/api/v1/authorize", json={"feature": "sync"}, headers=headers)
        assert await api_calls(client, account) == 3

    async def test_over_the_quota_is_402_quota_exceeded(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        await override(app, account.organization_id, {"features": {"api": {"quota": 2}}})
        statuses = [(await client.get("/api/v1/auth/me", headers=headers)) for _ in range(3)]
        assert [r.status_code for r in statuses] == [200, 200, 402]
        assert statuses[2].json()["code"] == "quota_exceeded"
        assert statuses[2].headers["content-type"] == "application/problem+json"

    async def test_over_the_tier_rate_limit_is_429_with_retry_after(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        await override(app, account.organization_id, {"rate_limit_per_minute": 2})
        answers = [await client.get("/api/v1/auth/me", headers=headers) for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 429]
        assert answers[0].headers["RateLimit-Limit"] == "2"
        assert answers[1].headers["RateLimit-Remaining"] == "0"
        assert answers[2].json()["code"] == "rate_limited"
        assert int(answers[2].headers["Retry-After"]) >= 1
        assert await api_calls(client, account) == 2

    async def test_without_the_api_feature_is_403_feature_not_in_plan(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        await override(app, account.organization_id, {"features": {"api": {"enabled": False}}})
        response = await client.get("/api/v1/auth/me", headers=headers)
        assert response.status_code == 403
        assert response.json()["code"] == "feature_not_in_plan"

    async def test_a_bad_key_still_gets_the_routes_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/auth/me", headers=key_headers("tw_live_nope"))
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_api_key"


class TestEntitlementsEndpoint:
    async def test_entitlements_describe_plan_license_features_and_limits(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        await put_on_plan(app, account.organization_id, "pro", license_state="grace")
        response = await client.get("/api/v1/entitlements", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["plan"], body["license_state"]) == ("pro", "grace")
        assert body["features"]["ai.generate"] == {
            "enabled": False,
            "reason": "license_degraded",
            "degradation": "immediate",
            "meter": "ai_requests",
            "quota": None,
            "enforcement": "hard",
            "rate_limit_per_minute": 30,
        }
        assert body["features"]["sync"]["enabled"] is True
        assert body["limits"]["api_calls"] == 100_000
        free = await register(client)
        features = (await client.get("/api/v1/entitlements", headers=free.headers)).json()[
            "features"
        ]
        assert features["custom_ontologies"]["reason"] == "feature_not_in_plan"
