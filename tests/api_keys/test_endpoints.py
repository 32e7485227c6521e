"""API keys: shown once, hashed, scoped, revocable everywhere within a second."""

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select

from tests.fixtures.identity import create_api_key, login, register
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

    async def test_an_expiry_without_a_utc_offset_is_refused_and_one_with_an_offset_is_kept(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        later = clock.now() + timedelta(days=1)
        naive = await client.post(
            "/api/v1/auth/keys",
            json={"name": "naive", "expires_at": later.replace(tzinfo=None).isoformat()},
            headers=account.headers,
        )
        assert (naive.status_code, naive.json()["code"]) == (422, "validation_error")
        assert naive.json()["errors"][0]["loc"] == ["body", "expires_at"]
        assert naive.json()["errors"][0]["type"] == "timezone_aware"
        in_paris = later.astimezone(timezone(timedelta(hours=1)))
        created = await client.post(
            "/api/v1/auth/keys",
            json={"name": "paris", "expires_at": in_paris.isoformat()},
            headers=account.headers,
        )
        assert created.status_code == 201, created.text
        assert datetime.fromisoformat(created.json()["expires_at"]) == later

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


class TestRollingKeys:
    async def roll(
        self, client: httpx.AsyncClient, headers: dict[str, str], key_id: str, **body: int
    ) -> httpx.Response:
        return await client.post(
            f"/api/v1/auth/keys/{key_id}/roll", json=body or None, headers=headers
        )

    async def test_a_rolled_key_keeps_working_for_its_grace_then_only_the_new_one_does(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        old_key = await create_api_key(client, account, scopes=["usage:read", "credits:read"])
        [old] = (await client.get("/api/v1/auth/keys", headers=account.headers)).json()["items"]
        rolled = await self.roll(client, account.headers, old["id"], grace_seconds=3600)
        assert rolled.status_code == 201, rolled.text
        body = rolled.json()
        new_key = body["key"]
        assert new_key != old_key
        assert new_key.startswith("tw_live_")
        assert (body["name"], body["scopes"]) == (old["name"], ["credits:read", "usage:read"])
        assert body["replaced_key"]["id"] == old["id"]
        assert body["replaced_key"]["expires_at"] is not None
        for key in (old_key, new_key):
            assert (await client.get("/api/v1/auth/me", headers=bearer(key))).status_code == 200
        clock.advance(hours=1, seconds=1)
        expired = await client.get("/api/v1/auth/me", headers=bearer(old_key))
        assert (expired.status_code, expired.json()["code"]) == (401, "invalid_api_key")
        assert (await client.get("/api/v1/auth/me", headers=bearer(new_key))).status_code == 200
        again = await self.roll(client, (await login(client, account)).headers, old["id"])
        assert (again.status_code, again.json()["code"]) == (409, "api_key_expired")

    async def test_rolling_without_grace_revokes_the_old_key_at_once(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        old_key = await create_api_key(client, account)
        [old] = (await client.get("/api/v1/auth/keys", headers=account.headers)).json()["items"]
        assert (await client.get("/api/v1/auth/me", headers=bearer(old_key))).status_code == 200
        rolled = await self.roll(client, account.headers, old["id"], grace_seconds=0)
        assert rolled.status_code == 201, rolled.text
        assert rolled.json()["replaced_key"]["revoked_at"] is not None
        refused = await client.get("/api/v1/auth/me", headers=bearer(old_key))
        assert refused.status_code == 401
        new_key = rolled.json()["key"]
        assert (await client.get("/api/v1/auth/me", headers=bearer(new_key))).status_code == 200
        again = await self.roll(client, account.headers, old["id"])
        assert (again.status_code, again.json()["code"]) == (409, "api_key_revoked")

    async def test_only_the_keys_organization_may_roll_it_within_bounds(
        self, client: httpx.AsyncClient
    ) -> None:
        alice = await register(client)
        bob = await register(client)
        await create_api_key(client, alice)
        [key] = (await client.get("/api/v1/auth/keys", headers=alice.headers)).json()["items"]
        stranger = await self.roll(client, bob.headers, key["id"])
        assert stranger.status_code == 404
        too_long = await self.roll(client, alice.headers, key["id"], grace_seconds=31 * 86_400)
        assert (too_long.status_code, too_long.json()["code"]) == (422, "validation_error")
        listed = (await client.get("/api/v1/auth/keys", headers=alice.headers)).json()["items"]
        assert [item["id"] for item in listed] == [key["id"]]
