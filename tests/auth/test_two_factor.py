"""TOTP two-factor authentication: set-up, enable, login with code or recovery code, disable."""

import httpx
import pyotp
from sqlalchemy import select

from tests.fixtures.identity import Account, create_api_key, enable_two_factor, register
from tollway.accounts.models import User
from tollway.audit.models import AuditEntry
from tollway.auth.two_factor import two_factor_service
from tollway.db import Database
from tollway.kit.clock import ManualClock


async def login(
    client: httpx.AsyncClient, account: Account, totp_code: str | None = None
) -> httpx.Response:
    body: dict[str, str] = {"email": account.email, "password": account.password}
    if totp_code is not None:
        body["totp_code"] = totp_code
    return await client.post("/api/v1/auth/login", json=body)


class TestSetup:
    async def test_setup_gives_a_secret_and_uri_but_login_is_unchanged_until_enabled(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client, email="setup@example.com")
        setup = await client.post("/api/v1/auth/2fa/setup", headers=account.headers)
        assert setup.status_code == 200
        body = setup.json()
        assert body["enabled"] is False
        assert body["otpauth_uri"].startswith("otpauth://totp/Tollway:setup%40example.com?")
        assert f"secret={body['secret']}" in body["otpauth_uri"]
        assert (await login(client, account)).status_code == 200

    async def test_the_secret_is_stored_encrypted(
        self, client: httpx.AsyncClient, database: Database
    ) -> None:
        account = await register(client)
        secret = (await client.post("/api/v1/auth/2fa/setup", headers=account.headers)).json()[
            "secret"
        ]
        async with database.transaction(write=False) as session:
            user = await session.get(User, account.user_id)
        assert user is not None
        assert user.totp_secret is not None
        assert secret not in user.totp_secret

    async def test_enable_needs_a_valid_code(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        no_setup = await client.post(
            "/api/v1/auth/2fa/enable", json={"code": "123456"}, headers=account.headers
        )
        assert no_setup.status_code == 409
        assert no_setup.json()["code"] == "totp_not_set_up"
        secret = (await client.post("/api/v1/auth/2fa/setup", headers=account.headers)).json()[
            "secret"
        ]
        stale = pyotp.TOTP(secret).at(clock.now(), counter_offset=-3)
        wrong = await client.post(
            "/api/v1/auth/2fa/enable", json={"code": stale}, headers=account.headers
        )
        assert wrong.status_code == 422
        assert wrong.json()["code"] == "invalid_totp"
        assert (await login(client, account)).status_code == 200

    async def test_a_code_that_is_not_ascii_is_just_wrong(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        await client.post("/api/v1/auth/2fa/setup", headers=account.headers)
        response = await client.post(
            "/api/v1/auth/2fa/enable", json={"code": "12345\u00e9"}, headers=account.headers
        )
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_totp"

    async def test_api_keys_cannot_manage_two_factor(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        key = await create_api_key(client, account)
        response = await client.post(
            "/api/v1/auth/2fa/setup", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 403
        assert response.json()["code"] == "user_required"


class TestLoginWithTwoFactor:
    async def test_enable_then_login_needs_the_code_and_a_recovery_code_works_once(
        self, client: httpx.AsyncClient, clock: ManualClock, database: Database
    ) -> None:
        account = await register(client)
        two_factor = await enable_two_factor(client, account, now=clock.now())
        assert len(two_factor.recovery_codes) == 10
        assert len(set(two_factor.recovery_codes)) == 10

        missing = await login(client, account)
        assert missing.status_code == 401
        assert missing.json()["code"] == "totp_required"

        clock.advance(seconds=30)
        wrong = await login(client, account, "000000")
        assert wrong.status_code == 401
        assert wrong.json()["code"] == "invalid_totp"

        good = await login(client, account, two_factor.code(clock.now()))
        assert good.status_code == 200
        assert good.json()["user"]["totp_enabled"] is True

        recovery = two_factor.recovery_codes[0]
        assert (await login(client, account, recovery.upper())).status_code == 200
        again = await login(client, account, recovery)
        assert again.status_code == 401
        assert again.json()["code"] == "invalid_totp"
        async with database.transaction(write=False) as session:
            actions = set(
                (
                    await session.execute(
                        select(AuditEntry.action).where(AuditEntry.target == account.user_id)
                    )
                ).scalars()
            )
        assert {"user.2fa_enabled", "user.2fa_recovery_code_used"} <= actions

    async def test_a_code_is_accepted_once_and_only_near_its_time(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        two_factor = await enable_two_factor(client, account, now=clock.now())
        clock.advance(seconds=30)
        code = two_factor.code(clock.now())
        assert (await login(client, account, code)).status_code == 200
        replay = await login(client, account, code)
        assert replay.status_code == 401
        assert replay.json()["code"] == "invalid_totp"
        # One step of drift either way is tolerated; three are not.
        clock.advance(seconds=90)
        assert (await login(client, account, two_factor.code(clock.now()))).status_code == 200
        clock.advance(seconds=30)
        late = pyotp.TOTP(two_factor.secret).at(clock.now(), counter_offset=-3)
        assert (await login(client, account, late)).status_code == 401

    async def test_wrong_codes_count_toward_the_login_throttle(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        two_factor = await enable_two_factor(client, account, now=clock.now())
        clock.advance(seconds=30)
        for _ in range(5):
            assert (await login(client, account, "999999")).status_code == 401
        throttled = await login(client, account, two_factor.code(clock.now()))
        assert throttled.status_code == 429
        assert throttled.json()["code"] == "login_throttled"

    async def test_the_cookie_session_login_asks_for_the_code_too(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        two_factor = await enable_two_factor(client, account, now=clock.now())
        body = {"email": account.email, "password": account.password}
        missing = await client.post("/api/v1/auth/session", json=body)
        assert missing.status_code == 401
        assert missing.json()["code"] == "totp_required"
        clock.advance(seconds=30)
        opened = await client.post(
            "/api/v1/auth/session", json={**body, "totp_code": two_factor.code(clock.now())}
        )
        assert opened.status_code == 200


class TestDisable:
    async def test_disable_with_a_code_turns_it_off(
        self, client: httpx.AsyncClient, clock: ManualClock, database: Database
    ) -> None:
        account = await register(client)
        two_factor = await enable_two_factor(client, account, now=clock.now())
        clock.advance(seconds=30)
        disabled = await client.post(
            "/api/v1/auth/2fa/disable",
            json={"code": two_factor.code(clock.now())},
            headers=account.headers,
        )
        assert disabled.status_code == 200
        assert disabled.json() == {"enabled": False}
        assert (await login(client, account)).status_code == 200
        async with database.transaction(write=False) as session:
            actions = list(
                (
                    await session.execute(
                        select(AuditEntry.action).where(AuditEntry.action == "user.2fa_disabled")
                    )
                ).scalars()
            )
        assert actions == ["user.2fa_disabled"]

    async def test_disable_with_a_recovery_code_or_the_password(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        two_factor = await enable_two_factor(client, account, now=clock.now())
        recovered = await client.post(
            "/api/v1/auth/2fa/disable",
            json={"code": two_factor.recovery_codes[3]},
            headers=account.headers,
        )
        assert recovered.status_code == 200
        clock.advance(seconds=30)
        await enable_two_factor(client, account, now=clock.now())
        with_password = await client.post(
            "/api/v1/auth/2fa/disable", json={"password": account.password}, headers=account.headers
        )
        assert with_password.status_code == 200

    async def test_disable_refuses_wrong_proof(
        self, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        await enable_two_factor(client, account, now=clock.now())
        for body in ({"code": "123456"}, {"password": "not the password"}, {"code": "aaaaa-bbbbb"}):
            response = await client.post(
                "/api/v1/auth/2fa/disable", json=body, headers=account.headers
            )
            assert response.status_code == 422
            assert response.json()["code"] == "invalid_totp"
        nothing = await client.post("/api/v1/auth/2fa/disable", json={}, headers=account.headers)
        assert nothing.status_code == 422
        assert (await login(client, account)).json()["code"] == "totp_required"

    async def test_an_operator_reset_turns_it_off_without_proof(
        self, client: httpx.AsyncClient, clock: ManualClock, database: Database
    ) -> None:
        account = await register(client)
        await enable_two_factor(client, account, now=clock.now())
        assert (await login(client, account)).json()["code"] == "totp_required"
        async with database.transaction() as session:
            await two_factor_service.reset(session, user_id=account.user_id, now=clock.now())
        assert (await login(client, account)).status_code == 200
