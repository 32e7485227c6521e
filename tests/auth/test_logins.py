"""A person's logins: listed with the one asking marked, ended one by one or all others."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures.identity import Account, create_api_key, login, register
from tollway.kit.clock import ManualClock

LOGINS = "/api/v1/auth/logins"


async def open_dashboard_session(client: httpx.AsyncClient, account: Account) -> str:
    """A dashboard session's cookie; the client's own cookie jar stays empty."""
    opened = await client.post(
        "/api/v1/auth/session", json={"email": account.email, "password": account.password}
    )
    assert opened.status_code == 200, opened.text
    cookie = opened.cookies["tollway_session"]
    client.cookies.clear()
    return str(cookie)


async def logins(client: httpx.AsyncClient, account: Account) -> list[dict[str, Any]]:
    response = await client.get(LOGINS, headers=account.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def me(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    return (await client.get("/api/v1/auth/me", headers=headers)).status_code


class TestListingLogins:
    async def test_a_person_sees_each_login_and_which_one_is_asking(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        await login(client, account)
        await open_dashboard_session(client, account)
        items = await logins(client, account)
        assert sorted(item["kind"] for item in items) == ["dashboard", "token", "token"]
        assert {item["id"][:4] for item in items} == {"fam_", "ses_"}
        [current] = [item for item in items if item["current"]]
        assert current["kind"] == "token"
        assert all(item["organization_id"] == account.organization_id for item in items)

    async def test_api_keys_have_no_logins(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        key = await create_api_key(client, account)
        response = await client.get(LOGINS, headers={"Authorization": f"Bearer {key}"})
        assert (response.status_code, response.json()["code"]) == (403, "user_required")


class TestEndingLogins:
    async def test_ending_a_token_login_stops_its_tokens_at_once(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        laptop = await login(client, account)
        [other] = [item for item in await logins(client, account) if not item["current"]]
        ended = await client.delete(f"{LOGINS}/{other['id']}", headers=account.headers)
        assert ended.status_code == 204
        assert await me(client, laptop.headers) == 401
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": laptop.refresh_token}
        )
        assert refreshed.status_code == 401
        again = await client.delete(f"{LOGINS}/{other['id']}", headers=account.headers)
        assert (again.status_code, again.json()["code"]) == (404, "login_not_found")
        assert await me(client, account.headers) == 200

    async def test_ending_a_dashboard_session_closes_it(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        cookie = await open_dashboard_session(client, account)
        browser = {"Cookie": f"tollway_session={cookie}"}
        assert await me(client, browser) == 200
        [dashboard] = [
            item for item in await logins(client, account) if item["kind"] == "dashboard"
        ]
        ended = await client.delete(f"{LOGINS}/{dashboard['id']}", headers=account.headers)
        assert ended.status_code == 204
        assert await me(client, browser) == 401

    async def test_logging_out_everywhere_else_keeps_this_login(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        laptop = await login(client, account)
        cookie = await open_dashboard_session(client, account)
        ended = await client.post(f"{LOGINS}/end-others", headers=account.headers)
        assert ended.status_code == 200, ended.text
        assert ended.json() == {"logins": 1, "sessions": 1}
        clock.advance(seconds=1)  # every process refuses them within a second
        assert await me(client, laptop.headers) == 401
        assert await me(client, {"Cookie": f"tollway_session={cookie}"}) == 401
        assert await me(client, account.headers) == 200
        assert [item["current"] for item in await logins(client, account)] == [True]

    async def test_another_persons_login_is_not_found(self, client: httpx.AsyncClient) -> None:
        alice = await register(client)
        bob = await register(client)
        [bobs] = await logins(client, bob)
        response = await client.delete(f"{LOGINS}/{bobs['id']}", headers=alice.headers)
        assert (response.status_code, response.json()["code"]) == (404, "login_not_found")
        assert await me(client, bob.headers) == 200
