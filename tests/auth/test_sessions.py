"""Dashboard cookie sessions: HttpOnly cookie, CSRF token on unsafe methods, logout."""

from collections.abc import Callable

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.fixtures.identity import Account, register
from tollway.kit.clock import ManualClock


async def open_session(client: httpx.AsyncClient, account: Account) -> httpx.Response:
    response = await client.post(
        "/api/v1/auth/session", json={"email": account.email, "password": account.password}
    )
    assert response.status_code == 200, response.text
    return response


def cookie_header(response: httpx.Response, name: str) -> str:
    return next(c for c in response.headers.get_list("set-cookie") if c.startswith(f"{name}="))


class TestOpening:
    async def test_login_sets_an_httponly_lax_cookie_and_answers_the_csrf_token(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        opened = await open_session(client, account)
        body = opened.json()
        assert body["user"]["id"] == account.user_id
        assert body["role"] == "owner"
        assert "access_token" not in body
        session_cookie = cookie_header(opened, "tollway_session")
        assert "HttpOnly" in session_cookie
        assert "SameSite=lax" in session_cookie
        assert "Secure" not in session_cookie
        csrf_cookie = cookie_header(opened, "tollway_csrf")
        assert f"tollway_csrf={body['csrf_token']}" in csrf_cookie
        assert "HttpOnly" not in csrf_cookie
        me = await client.get("/api/v1/auth/me")
        assert me.status_code == 200
        assert me.json()["user"]["id"] == account.user_id

    async def test_cookies_are_secure_behind_https(
        self, app_factory: Callable[..., FastAPI]
    ) -> None:
        application = app_factory(base_url="https://billing.example.com")
        async with LifespanManager(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(
                transport=transport, base_url="https://testserver"
            ) as client:
                account = await register(client)
                opened = await open_session(client, account)
        assert "Secure" in cookie_header(opened, "tollway_session")
        assert "Secure" in cookie_header(opened, "tollway_csrf")

    async def test_wrong_credentials_are_refused_like_login(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        response = await client.post(
            "/api/v1/auth/session", json={"email": account.email, "password": "wrong password!"}
        )
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_credentials"
        assert "set-cookie" not in response.headers


class TestCsrf:
    async def test_unsafe_requests_by_cookie_need_the_csrf_token(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        csrf = (await open_session(client, account)).json()["csrf_token"]
        missing = await client.post("/api/v1/auth/keys", json={"name": "from the dashboard"})
        assert missing.status_code == 403
        assert missing.json()["code"] == "csrf_failed"
        wrong = await client.post(
            "/api/v1/auth/keys", json={"name": "x"}, headers={"X-CSRF-Token": "forged"}
        )
        assert wrong.status_code == 403
        assert wrong.json()["code"] == "csrf_failed"
        good = await client.post(
            "/api/v1/auth/keys", json={"name": "from the dashboard"}, headers={"X-CSRF-Token": csrf}
        )
        assert good.status_code == 201
        # Safe methods need no token.
        assert (await client.get("/api/v1/auth/keys")).status_code == 200

    async def test_a_bearer_token_needs_no_csrf_token_even_with_a_cookie(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        await open_session(client, account)
        response = await client.post(
            "/api/v1/auth/keys", json={"name": "ci"}, headers=account.headers
        )
        assert response.status_code == 201

    async def test_a_form_post_may_carry_the_token_as_a_field(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        csrf = (await open_session(client, account)).json()["csrf_token"]
        refused = await client.request("DELETE", "/api/v1/auth/session", data={"csrf_token": "no"})
        assert refused.status_code == 403
        closed = await client.request("DELETE", "/api/v1/auth/session", data={"csrf_token": csrf})
        assert closed.status_code == 204


class TestClosing:
    async def test_logout_closes_the_session_and_clears_the_cookies(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        opened = await open_session(client, account)
        stolen = opened.cookies["tollway_session"]
        csrf = opened.json()["csrf_token"]
        closed = await client.delete("/api/v1/auth/session", headers={"X-CSRF-Token": csrf})
        assert closed.status_code == 204
        assert 'tollway_session=""' in cookie_header(closed, "tollway_session")
        replay = await client.get(
            "/api/v1/auth/me", headers={"Cookie": f"tollway_session={stolen}"}
        )
        assert replay.status_code == 401
        assert replay.json()["code"] == "invalid_session"

    async def test_logout_reaches_a_second_instance_within_a_second(
        self, client: httpx.AsyncClient, app_factory: Callable[..., FastAPI], clock: ManualClock
    ) -> None:
        account = await register(client)
        opened = await open_session(client, account)
        cookies = {"Cookie": f"tollway_session={opened.cookies['tollway_session']}"}
        other = app_factory()
        async with LifespanManager(other):
            transport = httpx.ASGITransport(app=other)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as second:
                assert (await second.get("/api/v1/auth/me", headers=cookies)).status_code == 200
                await client.delete(
                    "/api/v1/auth/session", headers={"X-CSRF-Token": opened.json()["csrf_token"]}
                )
                clock.advance(seconds=1)
                refused = await second.get("/api/v1/auth/me", headers=cookies)
        assert refused.status_code == 401

    async def test_the_general_logout_closes_a_cookie_session_too(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        opened = await open_session(client, account)
        csrf = {"X-CSRF-Token": opened.json()["csrf_token"]}
        assert (await client.post("/api/v1/auth/logout")).status_code == 403
        stolen = {"Cookie": f"tollway_session={opened.cookies['tollway_session']}"}
        assert (await client.post("/api/v1/auth/logout", headers=csrf)).status_code == 204
        replay = await client.get("/api/v1/auth/me", headers=stolen)
        assert replay.status_code == 401
        assert replay.json()["code"] == "invalid_session"

    async def test_the_session_expires(self, client: httpx.AsyncClient, clock: ManualClock) -> None:
        account = await register(client)
        await open_session(client, account)
        clock.advance(days=7, seconds=1)
        expired = await client.get("/api/v1/auth/me")
        assert expired.status_code == 401
        assert expired.json()["code"] == "invalid_session"

    async def test_closing_needs_a_cookie_session(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.delete("/api/v1/auth/session", headers=account.headers)
        assert response.status_code == 401
