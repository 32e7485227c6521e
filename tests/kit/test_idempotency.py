"""Idempotency-Key on unsafe requests: replay, conflict, expiry, concurrency."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.identity import add_member, create_api_key, login_into, register
from tests.fixtures.routes import router as edge_router
from tollway.kit.clock import ManualClock


@pytest.fixture
async def edge(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    app.include_router(edge_router)
    return client


async def event_count(client: httpx.AsyncClient) -> int:
    count: int = (await client.get("/test/events/count")).json()["count"]
    return count


class TestIdempotencyKeys:
    async def test_a_retry_replays_the_first_answer_and_does_the_work_once(
        self, edge: httpx.AsyncClient
    ) -> None:
        headers = {"Idempotency-Key": "order-42"}
        first = await edge.post("/test/events", json={"kind": "pay", "amount": 5}, headers=headers)
        again = await edge.post("/test/events", json={"kind": "pay", "amount": 5}, headers=headers)
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert await event_count(edge) == 1

    async def test_the_same_key_with_another_body_is_a_409(self, edge: httpx.AsyncClient) -> None:
        headers = {"Idempotency-Key": "order-43"}
        await edge.post("/test/events", json={"kind": "pay", "amount": 5}, headers=headers)
        other = await edge.post("/test/events", json={"kind": "pay", "amount": 6}, headers=headers)
        assert other.status_code == 409
        assert other.json()["code"] == "idempotency_conflict"
        assert await event_count(edge) == 1

    async def test_the_same_key_on_another_path_is_a_409(self, edge: httpx.AsyncClient) -> None:
        headers = {"Idempotency-Key": "order-44"}
        await edge.post("/test/events", json={"kind": "pay"}, headers=headers)
        other = await edge.post("/test/events/then-fail", json={"kind": "pay"}, headers=headers)
        assert other.status_code == 409
        assert other.json()["code"] == "idempotency_conflict"

    async def test_a_failure_that_keeps_its_writes_does_not_burn_its_key(
        self, edge: httpx.AsyncClient
    ) -> None:
        headers = {"Idempotency-Key": "order-46"}
        for _ in range(2):
            failed = await edge.post(
                "/test/events/then-fail-keeping", json={"kind": "x"}, headers=headers
            )
            assert failed.status_code == 409
            assert failed.json()["code"] == "kept"
        assert await event_count(edge) == 2

    async def test_a_failed_request_does_not_burn_its_key(self, edge: httpx.AsyncClient) -> None:
        headers = {"Idempotency-Key": "order-45"}
        failed = await edge.post("/test/events/then-fail", json={"kind": "x"}, headers=headers)
        assert failed.status_code == 409
        assert failed.json()["code"] == "boom"
        retried = await edge.post("/test/events/then-fail", json={"kind": "x"}, headers=headers)
        assert retried.json()["code"] == "boom"
        assert "idempotent-replayed" not in retried.headers

    async def test_keys_are_forgotten_after_their_time_to_live(
        self, app: FastAPI, edge: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        headers = {"Idempotency-Key": "order-46"}
        await edge.post("/test/events", json={"kind": "pay"}, headers=headers)
        clock.advance(app.state.settings.idempotency_ttl_seconds + 1)
        later = await edge.post("/test/events", json={"kind": "pay"}, headers=headers)
        assert later.status_code == 201
        assert "idempotent-replayed" not in later.headers
        assert await event_count(edge) == 2

    async def test_concurrent_duplicates_do_the_work_once(self, edge: httpx.AsyncClient) -> None:
        headers = {"Idempotency-Key": "order-47"}
        answers = await asyncio.gather(
            *(
                edge.post("/test/events", json={"kind": "pay", "amount": 1}, headers=headers)
                for _ in range(8)
            )
        )
        assert {answer.status_code for answer in answers} == {201}
        assert len({answer.json()["id"] for answer in answers}) == 1
        assert await event_count(edge) == 1

    async def test_an_unprintable_key_is_a_422(self, edge: httpx.AsyncClient) -> None:
        response = await edge.post(
            "/test/events", json={"kind": "pay"}, headers={"Idempotency-Key": "x" * 300}
        )
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_idempotency_key"

    async def test_requests_without_a_key_run_every_time(self, edge: httpx.AsyncClient) -> None:
        await edge.post("/test/events", json={"kind": "pay"})
        await edge.post("/test/events", json={"kind": "pay"})
        assert await event_count(edge) == 2


class TestIdempotencyAcrossCredentials:
    """Keys live per credential, and the credential is authorized before any replay."""

    async def test_a_narrow_key_cannot_replay_the_owners_key_creation(
        self, client: httpx.AsyncClient
    ) -> None:
        owner = await register(client)
        reader = await create_api_key(client, owner, scopes=["usage:read"])
        request = {"name": "deploy", "scopes": ["keys:manage"]}
        headers = {"Idempotency-Key": "new-deploy-key"}
        first = await client.post(
            "/api/v1/auth/keys", json=request, headers={**owner.headers, **headers}
        )
        assert first.status_code == 201, first.text
        replayed = await client.post(
            "/api/v1/auth/keys",
            json=request,
            headers={"Authorization": f"Bearer {reader}", **headers},
        )
        assert (replayed.status_code, replayed.json()["code"]) == (403, "insufficient_scope")
        assert first.json()["key"] not in replayed.text
        again = await client.post(
            "/api/v1/auth/keys", json=request, headers={**owner.headers, **headers}
        )
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["key"] == first.json()["key"]

    async def test_a_member_cannot_replay_an_admins_invitation(
        self, client: httpx.AsyncClient
    ) -> None:
        owner = await register(client)
        member = await register(client)
        await add_member(client, owner, member, role="member")
        member_here = await login_into(client, member, owner.organization_id)
        path = f"/api/v1/organizations/{owner.organization_id}/members"
        request = {"email": "newcomer@example.com", "role": "admin"}
        headers = {"Idempotency-Key": "invite-newcomer"}
        invited = await client.post(path, json=request, headers={**owner.headers, **headers})
        assert invited.status_code == 201, invited.text
        token = invited.json()["invitation"]["token"]
        replayed = await client.post(path, json=request, headers={**member_here.headers, **headers})
        assert (replayed.status_code, replayed.json()["code"]) == (403, "insufficient_role")
        assert token not in replayed.text
        assert "idempotent-replayed" not in replayed.headers

    async def test_two_credentials_of_one_organization_never_share_a_key(
        self, client: httpx.AsyncClient
    ) -> None:
        owner = await register(client)
        manager = await create_api_key(client, owner, scopes=["keys:manage", "usage:read"])
        request = {"name": "ci", "scopes": ["usage:read"]}
        headers = {"Idempotency-Key": "ci-key"}
        by_owner = await client.post(
            "/api/v1/auth/keys", json=request, headers={**owner.headers, **headers}
        )
        by_key = await client.post(
            "/api/v1/auth/keys",
            json=request,
            headers={"Authorization": f"Bearer {manager}", **headers},
        )
        assert by_owner.status_code == by_key.status_code == 201
        assert "idempotent-replayed" not in by_key.headers
        assert by_key.json()["id"] != by_owner.json()["id"]
