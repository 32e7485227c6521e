"""Login throttling: 5 failures per account or per client address within 15 minutes."""

import asyncio
from collections.abc import Callable

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from tests.fixtures.apps import client_from, started
from tests.fixtures.identity import PASSWORD, enable_two_factor, register
from tollway.audit.models import AuditEntry
from tollway.auth.throttle import account_key, address_key, login_throttle_service
from tollway.db import Database
from tollway.kit.clock import ManualClock


async def attempt(http: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"email": email, "password": password})


class TestPerAccount:
    async def test_five_failures_lock_the_account_from_every_address(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        for number in range(5):
            async with client_from(app, f"10.0.0.{number + 1}") as http:
                failed = await attempt(http, account.email, "wrong password!")
            assert failed.status_code == 401
            assert failed.json()["code"] == "invalid_credentials"
        async with client_from(app, "10.0.9.9") as http:
            locked = await attempt(http, account.email, PASSWORD)
        assert locked.status_code == 429
        assert locked.json()["code"] == "login_throttled"
        assert locked.headers["retry-after"] == "60"
        assert locked.json()["retry_after"] == 60

    async def test_the_lock_ends_and_repeated_lock_outs_last_longer(
        self, app_factory: Callable[..., FastAPI], clock: ManualClock
    ) -> None:
        # Two failures per lock-out (the limit is a setting) keep the test quick.
        app = app_factory(login_max_failures=2)
        async with client_from(app, "10.1.1.1") as client:
            account = await register(client)
        retry_afters = []
        for round_number in range(3):
            # A new address each round, so only the account's count is at work.
            async with client_from(app, f"10.1.0.{round_number + 1}") as http:
                for _ in range(2):
                    assert (
                        await attempt(http, account.email, "wrong password!")
                    ).status_code == 401
                locked = await attempt(http, account.email, PASSWORD)
                assert locked.status_code == 429
                retry_afters.append(int(locked.headers["retry-after"]))
                clock.advance(seconds=retry_afters[-1])
        assert retry_afters == [60, 120, 240]
        async with client_from(app, "10.1.9.9") as http:
            assert (await attempt(http, account.email, PASSWORD)).status_code == 200

    async def test_failures_spread_over_more_than_the_window_do_not_lock(
        self, app_factory: Callable[..., FastAPI], clock: ManualClock
    ) -> None:
        async with (
            started(app_factory, login_max_failures=3) as app,
            client_from(app, "10.2.1.1") as client,
        ):
            account = await register(client)
            for number in range(5):
                async with client_from(app, f"10.2.0.{number + 1}") as http:
                    failed = await attempt(http, account.email, "wrong password!")
                    assert failed.status_code == 401
                clock.advance(minutes=8)
            # At most 2 failures ever fall within one 15-minute window.
            assert (await attempt(client, account.email, PASSWORD)).status_code == 200

    async def test_a_successful_login_clears_the_account_count(
        self, app_factory: Callable[..., FastAPI]
    ) -> None:
        app = app_factory(login_max_failures=3)
        async with client_from(app, "10.3.9.1") as client:
            account = await register(client)
        for round_number in range(2):
            async with client_from(app, f"10.3.{round_number}.1") as http:
                for _ in range(2):
                    assert (
                        await attempt(http, account.email, "wrong password!")
                    ).status_code == 401
                assert (await attempt(http, account.email, PASSWORD)).status_code == 200


class TestPerAddress:
    async def test_unknown_emails_count_toward_the_address_limit(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        async with client_from(app, "192.0.2.10") as http:
            for number in range(5):
                unknown = await attempt(http, f"ghost{number}@example.com", PASSWORD)
                assert unknown.status_code == 401
                assert unknown.json()["code"] == "invalid_credentials"
            # Even the right password of a real account is refused from this address now.
            locked = await attempt(http, account.email, PASSWORD)
            assert locked.status_code == 429
            assert locked.json()["code"] == "login_throttled"
        async with client_from(app, "192.0.2.11") as http:
            assert (await attempt(http, account.email, PASSWORD)).status_code == 200

    async def test_unknown_emails_are_locked_like_known_ones(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        """Throttling does not reveal which emails have accounts."""
        for number in range(5):
            async with client_from(app, f"198.51.100.{number + 1}") as http:
                assert (await attempt(http, "nobody@example.com", "x" * 12)).status_code == 401
        async with client_from(app, "198.51.100.99") as http:
            assert (await attempt(http, "nobody@example.com", "x" * 12)).status_code == 429


class TestSharedState:
    async def test_a_second_instance_sees_the_lock_and_each_lock_out_is_audited(
        self,
        app: FastAPI,
        app_factory: Callable[..., FastAPI],
        client: httpx.AsyncClient,
        database: Database,
    ) -> None:
        account = await register(client)
        for _ in range(5):
            await attempt(client, account.email, "wrong password!")
        async with started(app_factory) as other, client_from(other, "203.0.113.5") as http:
            locked = await attempt(http, account.email, PASSWORD)
        assert locked.status_code == 429
        async with database.transaction(write=False) as session:
            entries = list(
                (
                    await session.execute(
                        select(AuditEntry).where(AuditEntry.action == "auth.login_locked")
                    )
                ).scalars()
            )
        # The account and the test client's address both reached five.
        assert sorted(entry.details["scope"] for entry in entries) == ["account", "address"]
        account_entry = next(entry for entry in entries if entry.details["scope"] == "account")
        assert account_entry.target == account.user_id


class TestOperator:
    async def test_an_operator_can_lift_a_lock_before_it_ends(
        self, client: httpx.AsyncClient, database: Database
    ) -> None:
        account = await register(client)
        for _ in range(5):
            await attempt(client, account.email, "wrong password!")
        assert (await attempt(client, account.email, PASSWORD)).status_code == 429
        async with database.transaction() as session:
            cleared = await login_throttle_service.unlock(
                session, keys=[account_key(account.email), address_key("127.0.0.1")]
            )
        assert cleared == 2
        assert (await attempt(client, account.email, PASSWORD)).status_code == 200


class TestConcurrency:
    async def test_simultaneous_failures_are_all_counted(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        """Five wrong passwords at once from five addresses: none of them is lost."""
        account = await register(client)

        async def fail(number: int) -> int:
            async with client_from(app, f"10.9.0.{number}") as http:
                return (await attempt(http, account.email, "wrong password!")).status_code

        assert await asyncio.gather(*(fail(number) for number in range(1, 6))) == [401] * 5
        assert (await attempt(client, account.email, PASSWORD)).status_code == 429

    async def test_a_burst_of_guesses_checks_at_most_the_limit_of_passwords(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        """29 wrong passwords and the right one at once, from one address: only five
        (the limit) are checked; the others are refused before any hashing."""
        account = await register(client)
        async with client_from(app, "10.9.1.1") as http:
            passwords = ["wrong password!"] * 29 + [PASSWORD]
            answers = await asyncio.gather(
                *(attempt(http, account.email, password) for password in passwords)
            )
        codes = [answer.status_code for answer in answers]
        assert codes.count(429) >= 25
        assert codes.count(401) + codes.count(200) <= 5
        if codes[-1] == 429:
            assert 200 not in codes
        async with client_from(app, "10.9.1.2") as http:
            assert (await attempt(http, account.email, PASSWORD)).status_code == 429

    async def test_a_burst_of_two_factor_codes_checks_at_most_the_limit(
        self, app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        two_factor = await enable_two_factor(client, account, now=clock.now())
        clock.advance(seconds=30)

        async def guess(code: str) -> int:
            async with client_from(app, "10.9.2.1") as http:
                response = await http.post(
                    "/api/v1/auth/login",
                    json={"email": account.email, "password": PASSWORD, "totp_code": code},
                )
                return response.status_code

        right = two_factor.code(clock.now())
        wrong = [f"{(int(right) + n) % 1_000_000:06d}" for n in range(1, 30)]
        codes = await asyncio.gather(*(guess(code) for code in [*wrong, right]))
        assert codes.count(429) >= 25
        assert codes.count(401) + codes.count(200) <= 5
