"""Registration, login, token refresh with reuse detection, logout, validate, me."""

import httpx
import pytest

from tests.fixtures.identity import PASSWORD, Account, login, register
from tollway.kit.clock import ManualClock


class TestRegistration:
    async def test_registering_creates_a_user_an_owned_organization_and_a_session(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": "Ada@Example.com", "password": PASSWORD, "name": "Ada"},
        )
        assert response.status_code == 201
        body = response.json()
        assert body["user"]["email"] == "ada@example.com"
        assert body["organization"]["id"].startswith("org_")
        assert body["role"] == "owner"
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 900
        me = await client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        assert me.json()["organization"]["id"] == body["organization"]["id"]
        assert me.json()["role"] == "owner"
        assert me.json()["tier"] == "free"

    async def test_an_email_registers_once(self, client: httpx.AsyncClient) -> None:
        await register(client, email="twice@example.com")
        again = await client.post(
            "/api/v1/auth/register", json={"email": "TWICE@example.com", "password": PASSWORD}
        )
        assert again.status_code == 409
        assert again.json()["code"] == "email_taken"

    @pytest.mark.parametrize(
        "password",
        ["short", "qwertyuiop123", "password1234", "grace@example.com", "grace"],
    )
    async def test_weak_passwords_are_refused(
        self, client: httpx.AsyncClient, password: str
    ) -> None:
        response = await client.post(
            "/api/v1/auth/register", json={"email": "grace@example.com", "password": password}
        )
        assert response.status_code == 422
        assert response.json()["code"] == "weak_password"

    async def test_an_invalid_email_or_missing_field_is_a_422(
        self, client: httpx.AsyncClient
    ) -> None:
        bad_email = await client.post(
            "/api/v1/auth/register", json={"email": "not-an-email", "password": PASSWORD}
        )
        missing = await client.post("/api/v1/auth/register", json={"email": "a@example.com"})
        assert bad_email.status_code == missing.status_code == 422
        assert bad_email.json()["code"] == "validation_error"


class TestLogin:
    async def test_the_right_password_logs_in_and_a_wrong_one_does_not(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        assert (await login(client, account)).user_id == account.user_id
        wrong = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": "wrong password!"}
        )
        unknown = await client.post(
            "/api/v1/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
        )
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json()["code"] == unknown.json()["code"] == "invalid_credentials"


class TestTokens:
    async def test_refresh_rotates_and_a_reused_token_revokes_the_whole_login(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        first = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
        )
        assert first.status_code == 200
        rotated = first.json()
        assert rotated["refresh_token"] != account.refresh_token

        reused = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
        )
        assert reused.status_code == 401
        assert reused.json()["code"] == "refresh_token_reused"

        # The family is gone: the newest refresh token and access token stop working too.
        newest = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
        )
        assert newest.status_code == 401
        me = await client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {rotated['access_token']}"}
        )
        assert me.status_code == 401

    async def test_logout_stops_the_access_token_and_its_refresh_token(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        assert (
            await client.post("/api/v1/auth/logout", headers=account.headers)
        ).status_code == 204
        me = await client.get("/api/v1/auth/me", headers=account.headers)
        assert me.status_code == 401
        assert me.json()["code"] == "invalid_token"
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
        )
        assert refreshed.status_code == 401

    async def test_access_tokens_expire_after_fifteen_minutes(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        clock.advance(minutes=15, seconds=1)
        me = await client.get("/api/v1/auth/me", headers=account.headers)
        assert me.status_code == 401
        assert me.json()["code"] == "token_expired"

    async def test_a_tampered_token_is_refused(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        header, payload, signature = account.access_token.split(".")
        tampered = f"{header}.{payload[:-2]}xx.{signature}"
        for token in (tampered, "not.a.jwt", "garbage"):
            me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 401
            assert me.json()["code"] == "invalid_token"

    async def test_no_credentials_is_a_401_with_www_authenticate(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/api/v1/auth/me")
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_validate_answers_for_good_and_bad_tokens(
        self, client: httpx.AsyncClient
    ) -> None:
        account: Account = await register(client)
        good = await client.post("/api/v1/auth/validate", json={"token": account.access_token})
        assert good.json()["valid"] is True
        assert good.json()["organization_id"] == account.organization_id
        assert good.json()["tier"] == "free"
        bad = await client.post("/api/v1/auth/validate", json={"token": "tw_live_nope"})
        assert bad.json() == {**bad.json(), "valid": False, "code": "invalid_api_key"}
