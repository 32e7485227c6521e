"""API keys: shown once, hashed, scoped, revocable everywhere within a second."""

from collections.abc import Callable
from datetime import timedelta

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select

from tests.fixtures.identity import create_api_key, register
from tollway.api_keys.models import ApiKey
from tollway.db import Database
from tollway.kit.clock import ManualClock


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class TestApiKeys:
    async def test_a_key_is_shown_once_and_stored_only_as_a_hash(
        self, client: httpx.AsyncClient, database: Database
    ) -> None:
        account = await register(client)
        created = await client.post(
            "/api/v1/auth/keys", json={"name": "ci"}, headers=account.headers
        )
        assert created.status_code == 201
        body = created.json()
        key = body["key"]
        assert key.startswith("tw_live_")
        assert len(key) == len("tw_live_") + 38
        assert body["prefix"] == key[:16]
        listed = (await client.get("/api/v1/auth/keys", headers=account.headers)).json()
        assert [item["id"] for item in listed["items"]] == [body["id"]]
        assert "key" not in listed["items"][0]
        async with database.transaction(write=False) as session:
            stored = (await session.execute(select(ApiKey))).scalar_one()
        assert key not in {stored.key_hash, stored.prefix}

    async def test_a_key_authenticates_as_its_organization(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        key = await create_api_key(client, account)
        me = await client.get("/api/v1/auth/me", headers=bearer(key))
        assert me.status_code == 200
        assert me.json()["organization"]["id"] == account.organization_id
        assert me.json()["user"] is None
        assert "authorize" in me.json()["scopes"]

    async def test_a_revoked_key_is_refused_at_once_by_the_same_instance(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        key = await create_api_key(client, account)
        key_id = (await client.get("/api/v1/auth/keys", headers=account.headers)).json()["items"][
            0
        ]["id"]
        assert (await client.get("/api/v1/auth/me", headers=bearer(key))).status_code == 200
        revoked = await client.post(f"/api/v1/auth/keys/{key_id}/revoke", headers=account.headers)
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        refused = await client.get("/api/v1/auth/me", headers=bearer(key))
        assert refused.status_code == 401
        assert refused.json()["code"] == "invalid_api_key"

    async def test_revocation_reaches_a_second_instance_within_a_second(
        self, app_factory: Callable[..., FastAPI], client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        key = await create_api_key(client, account)
        key_id = (await client.get("/api/v1/auth/keys", headers=account.headers)).json()["items"][
            0
        ]["id"]
        other = app_factory()
        async with LifespanManager(other):
            transport = httpx.ASGITransport(app=other)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as second:
                assert (await second.get("/api/v1/auth/me", headers=bearer(key))).status_code == 200
                await client.post(f"/api/v1/auth/keys/{key_id}/revoke", headers=account.headers)
                clock.advance(seconds=1)
                refused = await second.get("/api/v1/auth/me", headers=bearer(key))
        assert refused.status_code == 401

    async def test_garbage_and_unknown_keys_are_invalid_api_key(
        self, client: httpx.AsyncClient
    ) -> None:
        for key in ("tw_live_short", "tw_live_" + "A" * 38, "tw_test_" + "0" * 38):
            response = await client.get("/api/v1/auth/me", headers=bearer(key))
            assert response.status_code == 401
            assert response.json()["code"] == "invalid_api_key"

    async def test_a_key_stops_working_when_it_expires(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        in_an_hour = (clock.now() + timedelta(hours=1)).isoformat()
        created = await client.post(
            "/api/v1/auth/keys",
            json={"name": "short-lived", "expires_at": in_an_hour},
            headers=account.headers,
        )
        assert created.status_code == 201
        key = created.json()["key"]
        assert (await client.get("/api/v1/auth/me", headers=bearer(key))).status_code == 200
        clock.advance(hours=1, seconds=1)
        expired = await client.get("/api/v1/auth/me", headers=bearer(key))
        assert expired.status_code == 401
        assert expired.json()["code"] == "invalid_api_key"

    async def test_an_expiry_in_the_past_is_a_422(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        created = await client.post(
            "/api/v1/auth/keys",
            json={"name": "stale", "expires_at": clock.now().isoformat()},
            headers=account.headers,
        )
        assert created.status_code == 422
        assert created.json()["code"] == "invalid_expiry"

    async def test_a_key_cannot_grant_more_than_its_creator_or_unknown_scopes(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        unknown = await client.post(
            "/api/v1/auth/keys", json={"name": "x", "scopes": ["root"]}, headers=account.headers
        )
        assert unknown.status_code == 422
        assert unknown.json()["code"] == "invalid_scope"
        key = await create_api_key(client, account, scopes=["usage:read"])
        escalate = await client.post("/api/v1/auth/keys", json={"name": "y"}, headers=bearer(key))
        assert escalate.status_code == 403
        assert escalate.json()["code"] == "insufficient_scope"

    async def test_another_organizations_key_is_not_found(self, client: httpx.AsyncClient) -> None:
        alice = await register(client)
        bob = await register(client)
        await create_api_key(client, alice)
        alice_key = (await client.get("/api/v1/auth/keys", headers=alice.headers)).json()["items"][
            0
        ]["id"]
        response = await client.post(f"/api/v1/auth/keys/{alice_key}/revoke", headers=bob.headers)
        assert response.status_code == 404
        assert (await client.get("/api/v1/auth/keys", headers=bob.headers)).json()["items"] == []
