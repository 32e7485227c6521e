"""The credits API over HTTP, with real accounts, tokens and API keys."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.identity import Account, create_api_key, make_platform_admin, register
from tollway.kit.clock import ManualClock

RESERVATIONS = "/api/v1/credits/reservations"


@pytest.fixture
async def account(client: httpx.AsyncClient) -> Account:
    return await register(client)


@pytest.fixture
async def admin(app: FastAPI, client: httpx.AsyncClient) -> Account:
    return await make_platform_admin(app, await register(client))


async def grant(
    client: httpx.AsyncClient, admin: Account, organization_id: str, amount: int, **extra: Any
) -> httpx.Response:
    response = await client.post(
        "/api/v1/admin/credits/grant",
        json={"organization_id": organization_id, "amount": amount, "reason": "test", **extra},
        headers=admin.headers,
    )
    return response


async def funded(client: httpx.AsyncClient, admin: Account, account: Account, amount: int) -> None:
    response = await grant(client, admin, account.organization_id, amount)
    assert response.status_code == 201, response.text


async def reserve(
    client: httpx.AsyncClient,
    account: Account,
    clock: ManualClock,
    amount: int,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    clock.advance(3)  # the abuse battery's minimum gap between spending requests
    return await client.post(
        RESERVATIONS,
        json={"amount": amount, **extra},
        headers={**account.headers, **(headers or {})},
    )


async def balance(client: httpx.AsyncClient, account: Account) -> dict[str, Any]:
    response = await client.get("/api/v1/credits/balance", headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


class TestAdminGrant:
    async def test_an_admin_grants_credits_that_show_in_the_balance_and_ledger(
        self, client: httpx.AsyncClient, admin: Account, account: Account
    ) -> None:
        response = await grant(
            client, admin, account.organization_id, 100, expires_at="2026-03-01T00:00:00Z"
        )
        assert response.status_code == 201, response.text
        assert response.json()["amount"] == 100
        body = await balance(client, account)
        assert (body["balance"], body["reserved"], body["available"]) == (100, 0, 100)
        assert [(lot["amount"], lot["remaining"], lot["source"]) for lot in body["grants"]] == [
            (100, 100, "admin")
        ]
        page = await client.get("/api/v1/credits/ledger?limit=1", headers=account.headers)
        assert page.status_code == 200
        assert len(page.json()["items"]) == 1
        rest = await client.get(
            f"/api/v1/credits/ledger?cursor={page.json()['next_cursor']}", headers=account.headers
        )
        entries = page.json()["items"] + rest.json()["items"]
        assert sorted((entry["account"], entry["amount"]) for entry in entries) == [
            ("issuance", -100),
            ("wallet", 100),
        ]

    async def test_only_platform_admins_may_grant(
        self, client: httpx.AsyncClient, account: Account
    ) -> None:
        problem(await grant(client, account, account.organization_id, 5), 403, "admin_only")

    @pytest.mark.parametrize("amount", [0, -1, 2**63, 2**63 - 1, 10**12 + 1, True, "5", 5.0])
    async def test_a_grant_needs_a_bounded_positive_whole_amount(
        self, client: httpx.AsyncClient, admin: Account, account: Account, amount: Any
    ) -> None:
        problem(
            await grant(client, admin, account.organization_id, amount), 422, "validation_error"
        )

    async def test_a_grant_past_the_balance_bound_is_refused_and_the_wallet_still_works(
        self, client: httpx.AsyncClient, admin: Account, account: Account
    ) -> None:
        for _ in range(10):
            await funded(client, admin, account, 10**12)
        over = await grant(client, admin, account.organization_id, 1)
        problem(over, 409, "balance_limit_exceeded")
        assert (await balance(client, account))["balance"] == 10**13
        other = await register(client)
        await funded(client, admin, other, 10**12)
        assert (await balance(client, other))["balance"] == 10**12

    async def test_a_grant_to_an_unknown_organization_is_a_404(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        response = await grant(client, admin, "org_01JD8X3N5Q8W6Y2ZB4C7D9E0F1", 5)
        problem(response, 404, "organization_not_found")

    async def test_an_expiry_in_the_past_is_refused(
        self, client: httpx.AsyncClient, admin: Account, account: Account
    ) -> None:
        response = await grant(
            client, admin, account.organization_id, 5, expires_at="2020-01-01T00:00:00Z"
        )
        assert problem(response, 422, "invalid_expiry")["title"] == "Invalid expiry"


class TestReservations:
    async def test_reserve_commit_and_release(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 50)
        held = await reserve(client, account, clock, 10, feature="ai.generate")
        assert held.status_code == 201, held.text
        body = held.json()
        assert (body["amount"], body["status"]) == (10, "held")
        assert body["id"].startswith("res_")
        assert body["expires_at"].startswith("2026-01-15T12:00:")
        figures = await balance(client, account)
        assert (figures["balance"], figures["reserved"], figures["available"]) == (50, 10, 40)

        committed = await client.post(
            f"{RESERVATIONS}/{body['id']}/commit", json={"amount": 7}, headers=account.headers
        )
        assert committed.status_code == 200, committed.text
        assert committed.json() | {"id": None} == {
            "id": None,
            "status": "committed",
            "committed": 7,
            "released": 3,
        }

        other = (await reserve(client, account, clock, 5)).json()
        released = await client.post(
            f"{RESERVATIONS}/{other['id']}/release", headers=account.headers
        )
        assert released.status_code == 200
        assert released.json()["status"] == "released"
        figures = await balance(client, account)
        assert (figures["balance"], figures["reserved"], figures["available"]) == (43, 0, 43)

    async def test_holds_can_be_read_and_listed_by_state(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 50)
        first = (await reserve(client, account, clock, 4)).json()
        second = (await reserve(client, account, clock, 6)).json()
        assert (first["committed"], first["released"], first["settled_at"]) == (None, None, None)
        committed = await client.post(
            f"{RESERVATIONS}/{first['id']}/commit", json={"amount": 3}, headers=account.headers
        )
        assert committed.status_code == 200, committed.text

        read = await client.get(f"{RESERVATIONS}/{first['id']}", headers=account.headers)
        assert read.status_code == 200, read.text
        body = read.json()
        assert (body["status"], body["amount"], body["committed"], body["released"]) == (
            "committed",
            4,
            3,
            1,
        )
        assert body["settled_at"] is not None
        held = await client.get(RESERVATIONS, params={"status": "held"}, headers=account.headers)
        assert [hold["id"] for hold in held.json()["items"]] == [second["id"]]
        every = await client.get(RESERVATIONS, headers=account.headers)
        assert [hold["id"] for hold in every.json()["items"]] == [second["id"], first["id"]]
        unknown_state = await client.get(
            RESERVATIONS, params={"status": "lost"}, headers=account.headers
        )
        problem(unknown_state, 422, "validation_error")

    async def test_commit_without_a_body_spends_the_whole_hold(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 50)
        held = (await reserve(client, account, clock, 4)).json()
        committed = await client.post(
            f"{RESERVATIONS}/{held['id']}/commit", headers=account.headers
        )
        assert committed.json()["committed"] == 4

    async def test_an_api_key_with_credits_write_may_reserve_one_without_may_not(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 50)
        key = await create_api_key(client, account)
        reader = await create_api_key(client, account, scopes=["credits:read"])
        clock.advance(3)
        allowed = await client.post(
            RESERVATIONS, json={"amount": 1}, headers={"Authorization": f"Bearer {key}"}
        )
        assert allowed.status_code == 201, allowed.text
        refused = await client.post(
            RESERVATIONS, json={"amount": 1}, headers={"Authorization": f"Bearer {reader}"}
        )
        problem(refused, 403, "insufficient_scope")
        seen = await client.get(
            "/api/v1/credits/balance", headers={"Authorization": f"Bearer {reader}"}
        )
        assert seen.json()["reserved"] == 1

    async def test_without_credentials_it_is_a_401(self, client: httpx.AsyncClient) -> None:
        problem(await client.post(RESERVATIONS, json={"amount": 1}), 401, "unauthenticated")
        problem(await client.get("/api/v1/credits/balance"), 401, "unauthenticated")

    async def test_more_than_available_is_a_402(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 3)
        body = problem(await reserve(client, account, clock, 4), 402, "insufficient_credits")
        assert (body["requested"], body["available"]) == (4, 3)

    @pytest.mark.parametrize(
        ("payload", "code"),
        [
            ({"amount": 0}, "validation_error"),
            ({"amount": -3}, "validation_error"),
            ({"amount": "many"}, "validation_error"),
            ({"amount": "5"}, "validation_error"),
            ({"amount": True}, "validation_error"),
            ({"amount": 2**63}, "validation_error"),
            ({"amount": 2**63 - 1}, "validation_error"),
            ({"amount": 1, "ttl_seconds": 2**63}, "validation_error"),
            ({"amount": 1, "ttl_seconds": 3601}, "invalid_ttl"),
            ({"amount": 1, "ttl_seconds": 0}, "validation_error"),
            ({"amount": 1, "surprise": True}, "validation_error"),
        ],
    )
    async def test_bad_reservations_are_422(
        self,
        client: httpx.AsyncClient,
        admin: Account,
        account: Account,
        clock: ManualClock,
        payload: dict[str, Any],
        code: str,
    ) -> None:
        await funded(client, admin, account, 10)
        clock.advance(3)
        response = await client.post(RESERVATIONS, json=payload, headers=account.headers)
        problem(response, 422, code)

    async def test_hold_errors(
        self,
        client: httpx.AsyncClient,
        admin: Account,
        account: Account,
        clock: ManualClock,
    ) -> None:
        await funded(client, admin, account, 50)
        first = (await reserve(client, account, clock, 5)).json()["id"]
        second = (await reserve(client, account, clock, 5)).json()["id"]
        url = RESERVATIONS + "/{}/{}"
        headers = account.headers
        problem(
            await client.post(url.format(first, "commit"), json={"amount": 6}, headers=headers),
            422,
            "amount_exceeds_hold",
        )
        problem(
            await client.post(url.format(first, "commit"), json={"amount": -1}, headers=headers),
            422,
            "validation_error",
        )
        await client.post(url.format(first, "release"), headers=headers)
        problem(
            await client.post(url.format(first, "commit"), headers=headers), 409, "hold_not_active"
        )
        await client.post(url.format(second, "commit"), headers=headers)
        problem(
            await client.post(url.format(second, "release"), headers=headers),
            409,
            "hold_not_active",
        )
        unknown = "res_01JD8X3N5Q8W6Y2ZB4C7D9E0F1"
        problem(
            await client.post(url.format(unknown, "commit"), headers=headers), 404, "hold_not_found"
        )
        problem(
            await client.post(url.format(unknown, "release"), headers=headers),
            404,
            "hold_not_found",
        )

    async def test_another_organizations_hold_is_a_404(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 50)
        held = (await reserve(client, account, clock, 5)).json()["id"]
        stranger = await register(client)
        for action in ("commit", "release"):
            response = await client.post(
                f"{RESERVATIONS}/{held}/{action}", headers=stranger.headers
            )
            problem(response, 404, "hold_not_found")
        problem(
            await client.get(f"{RESERVATIONS}/{held}", headers=stranger.headers),
            404,
            "hold_not_found",
        )
        listed = await client.get(RESERVATIONS, headers=stranger.headers)
        assert listed.json()["items"] == []
        assert (await balance(client, account))["reserved"] == 5

    async def test_a_hold_past_its_ttl_cannot_be_committed(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 50)
        held = (await reserve(client, account, clock, 5, ttl_seconds=60)).json()["id"]
        clock.advance(60)
        response = await client.post(f"{RESERVATIONS}/{held}/commit", headers=account.headers)
        problem(response, 409, "hold_not_active")


class TestIdempotency:
    async def test_retried_reserve_and_commit_move_credits_once(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 50)
        key = {"Idempotency-Key": "reserve-1"}
        first = await reserve(client, account, clock, 5, headers=key)
        again = await reserve(client, account, clock, 5, headers=key)
        assert first.status_code == again.status_code == 201
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        assert (await balance(client, account))["reserved"] == 5
        commit_url = f"{RESERVATIONS}/{first.json()['id']}/commit"
        commit_key = {**account.headers, "Idempotency-Key": "commit-1"}
        done = await client.post(commit_url, json={"amount": 2}, headers=commit_key)
        redone = await client.post(commit_url, json={"amount": 2}, headers=commit_key)
        assert done.json() == redone.json()
        figures = await balance(client, account)
        assert (figures["balance"], figures["reserved"]) == (48, 0)

    async def test_a_refused_reserve_does_not_burn_its_key(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 2)
        key = {"Idempotency-Key": "reserve-2"}
        problem(await reserve(client, account, clock, 3, headers=key), 402, "insufficient_credits")
        await funded(client, admin, account, 5)
        assert (await reserve(client, account, clock, 3, headers=key)).status_code == 201


class TestAbuseBattery:
    async def test_requests_closer_than_three_seconds_are_too_frequent(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 50)
        assert (await reserve(client, account, clock, 1)).status_code == 201
        clock.advance(1)
        response = await client.post(RESERVATIONS, json={"amount": 1}, headers=account.headers)
        problem(response, 429, "too_frequent")
        assert response.headers["retry-after"] == "2"

    async def test_more_than_ten_credits_at_once_is_too_large(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 50)
        problem(await reserve(client, account, clock, 11), 422, "request_too_large")

    async def test_a_commit_above_2000_output_units_is_refused(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 50)
        held = (await reserve(client, account, clock, 3)).json()["id"]
        url = f"{RESERVATIONS}/{held}/commit"
        body = problem(
            await client.post(url, json={"output_units": 2001}, headers=account.headers),
            422,
            "output_too_large",
        )
        assert body["limit"] == 2000
        fine = await client.post(url, json={"output_units": 2000}, headers=account.headers)
        assert fine.status_code == 200

    async def test_five_releases_block_the_spender_for_fifteen_minutes(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 50)
        # An API key: an access token would expire during the fifteen minutes.
        key = {"Authorization": f"Bearer {await create_api_key(client, account)}"}
        for _ in range(5):
            held = (await reserve(client, account, clock, 1, headers=key)).json()["id"]
            await client.post(f"{RESERVATIONS}/{held}/release", headers=key)
        response = await reserve(client, account, clock, 1, headers=key)
        problem(response, 429, "temporarily_blocked")
        assert int(response.headers["retry-after"]) == 15 * 60 - 3
        clock.advance(15 * 60)
        assert (await reserve(client, account, clock, 1, headers=key)).status_code == 201

    async def test_refusals_for_lack_of_credits_never_block_so_a_top_up_helps_at_once(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 2)
        key = {"Authorization": f"Bearer {await create_api_key(client, account)}"}
        for _ in range(6):
            problem(
                await reserve(client, account, clock, 3, headers=key), 402, "insufficient_credits"
            )
        await funded(client, admin, account, 5)
        assert (await reserve(client, account, clock, 3, headers=key)).status_code == 201
        assert (await balance(client, account))["available"] == 4

    async def test_concurrent_reserves_over_http_never_hold_more_than_available(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        await funded(client, admin, account, 10)
        # Spend without the battery's per-minute limit and minimum gap, as a busy customer.
        overridden = await client.put(
            f"/api/v1/admin/organizations/{account.organization_id}/overrides",
            json={"abuse": {"requests_per_minute": 1000, "min_interval_seconds": 0}},
            headers=admin.headers,
        )
        assert overridden.status_code == 200, overridden.text
        key = {"Authorization": f"Bearer {await create_api_key(client, account)}"}

        async def attempt() -> int:
            response = await client.post(RESERVATIONS, json={"amount": 1}, headers=key)
            return response.status_code

        statuses = await asyncio.gather(*(attempt() for _ in range(15)))
        assert sorted(statuses) == [201] * 10 + [402] * 5
        totals = await balance(client, account)
        assert (totals["balance"], totals["reserved"], totals["available"]) == (10, 10, 0)

    async def test_heavy_spending_raises_a_fraud_flag_only_admins_see(
        self,
        app_factory: Any,
        client: httpx.AsyncClient,
        admin: Account,
        account: Account,
        clock: ManualClock,
    ) -> None:
        await funded(client, admin, account, 1000)
        for _ in range(51):
            response = await reserve(client, account, clock, 10)
            assert response.status_code == 201, response.text
            await client.post(
                f"{RESERVATIONS}/{response.json()['id']}/commit", headers=account.headers
            )
        flags = await client.get("/api/v1/admin/fraud-flags", headers=admin.headers)
        assert flags.status_code == 200
        [flag] = flags.json()["items"]
        assert (flag["organization_id"], flag["credits_in_window"]) == (
            account.organization_id,
            510,
        )
        assert flag["subject"] == f"user:{account.user_id}"
        problem(
            await client.get("/api/v1/admin/fraud-flags", headers=account.headers),
            403,
            "admin_only",
        )


class TestMetrics:
    async def test_committed_credit_movements_are_counted(
        self, client: httpx.AsyncClient, admin: Account, account: Account, clock: ManualClock
    ) -> None:
        def committed_so_far(text: str) -> float:
            for line in text.splitlines():
                if line.startswith('tollway_credits_total{kind="commit"}'):
                    return float(line.split()[-1])
            return 0.0

        before = committed_so_far((await client.get("/metrics")).text)
        await funded(client, admin, account, 50)
        held = (await reserve(client, account, clock, 5)).json()["id"]
        await client.post(
            f"{RESERVATIONS}/{held}/commit", json={"amount": 4}, headers=account.headers
        )
        # A refused commit moves nothing and counts nothing.
        await client.post(
            f"{RESERVATIONS}/{held}/commit", json={"amount": 3}, headers=account.headers
        )
        after = committed_so_far((await client.get("/metrics")).text)
        assert after - before == 4
