"""A person's own credentials: changing the password, resetting a forgotten one,
verifying the email address."""

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.conftest import START
from tests.fixtures.apps import client_from, started
from tests.fixtures.identity import (
    PASSWORD,
    Account,
    create_api_key,
    enable_two_factor,
    register,
)
from tests.fixtures.identity import login as log_in
from tollway.audit.models import AuditEntry
from tollway.auth.models import UserToken
from tollway.auth.tasks import purge_expired
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.outbox import outbox
from tollway.kit.sweeps import SweepContext

NEW_PASSWORD = "a brand new passphrase 7"


async def open_dashboard(http: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    """Log ``http`` into a dashboard session; answers its CSRF token."""
    opened = await http.post("/api/v1/auth/session", json={"email": email, "password": password})
    assert opened.status_code == 200, opened.text
    return str(opened.json()["csrf_token"])


async def login(http: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await http.post("/api/v1/auth/login", json={"email": email, "password": password})


async def change_password(
    http: httpx.AsyncClient,
    account: Account,
    *,
    current: str = PASSWORD,
    new: str = NEW_PASSWORD,
) -> httpx.Response:
    return await http.post(
        "/api/v1/auth/password",
        json={"current_password": current, "new_password": new},
        headers=account.headers,
    )


async def events(app: FastAPI, event_type: str) -> list[dict[str, Any]]:
    database: Database = app.state.database
    async with database.transaction(write=False) as session:
        found = await outbox.list_events(session, event_type=event_type)
    for event in found:
        # Events with a token are for the operator's mailer, never an organization's hooks.
        assert event.organization_id is None
    return [event.payload for event in found]


async def audit_entries(app: FastAPI, action: str) -> list[AuditEntry]:
    database: Database = app.state.database
    async with database.transaction(write=False) as session:
        statement = select(AuditEntry).where(AuditEntry.action == action)
        return list((await session.execute(statement)).scalars())


async def request_reset(http: httpx.AsyncClient, email: str) -> httpx.Response:
    return await http.post("/api/v1/auth/password-reset", json={"email": email})


async def reset_token(app: FastAPI, http: httpx.AsyncClient, email: str) -> str:
    """Ask for a reset of ``email``; answers the token the mailer received."""
    requested = await request_reset(http, email)
    assert requested.status_code == 202, requested.text
    return str((await events(app, "user.password_reset_requested"))[-1]["token"])


async def confirm_reset(
    http: httpx.AsyncClient, token: str, password: str = NEW_PASSWORD
) -> httpx.Response:
    return await http.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "password": password}
    )


async def verification_token(app: FastAPI, http: httpx.AsyncClient, account: Account) -> str:
    requested = await http.post("/api/v1/auth/email/verification", headers=account.headers)
    assert requested.status_code == 202, requested.text
    return str((await events(app, "user.email_verification_requested"))[-1]["token"])


async def verify(http: httpx.AsyncClient, token: str, account: Account) -> httpx.Response:
    """Follow a verification link logged in as ``account``."""
    return await http.post(
        "/api/v1/auth/email/verify", json={"token": token}, headers=account.headers
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestChangingPassword:
    async def test_changing_password_keeps_the_caller_logged_in(
        self, app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        elsewhere = (await login(client, account.email, PASSWORD)).json()
        async with client_from(app) as other_browser:
            await open_dashboard(other_browser, account.email)

            changed = await change_password(client, account)
            assert changed.status_code == 204, changed.text
            clock.advance(seconds=2)  # past every process's one-second caches

            assert (await client.get("/api/v1/auth/me", headers=account.headers)).status_code == 200
            kept = await client.post(
                "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
            )
            assert kept.status_code == 200
            other = await client.get("/api/v1/auth/me", headers=bearer(elsewhere["access_token"]))
            assert other.status_code == 401
            other_refresh = await client.post(
                "/api/v1/auth/refresh", json={"refresh_token": elsewhere["refresh_token"]}
            )
            assert other_refresh.status_code == 401
            assert (await other_browser.get("/api/v1/auth/me")).status_code == 401

        old = await login(client, account.email, PASSWORD)
        assert old.status_code == 401
        assert old.json()["code"] == "invalid_credentials"
        assert (await login(client, account.email, NEW_PASSWORD)).status_code == 200
        [entry] = await audit_entries(app, "user.password_changed")
        assert (entry.target, entry.actor) == (account.user_id, f"user:{account.user_id}")
        assert entry.details == {"logins_revoked": 1, "sessions_revoked": 1}
        [event] = await events(app, "user.password_changed")
        assert (event["user_id"], event["email"]) == (account.user_id, account.email)
        assert "token" not in event

    async def test_changing_password_from_the_dashboard_keeps_that_session(
        self, app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        async with client_from(app) as dashboard:
            csrf = await open_dashboard(dashboard, account.email)
            body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
            forged = await dashboard.post("/api/v1/auth/password", json=body)
            assert forged.status_code == 403
            assert forged.json()["code"] == "csrf_failed"
            changed = await dashboard.post(
                "/api/v1/auth/password", json=body, headers={"X-CSRF-Token": csrf}
            )
            assert changed.status_code == 204, changed.text
            clock.advance(seconds=2)
            assert (await dashboard.get("/api/v1/auth/me")).status_code == 200
        # The registration's login was another one: it ends.
        assert (await client.get("/api/v1/auth/me", headers=account.headers)).status_code == 401

    async def test_a_wrong_current_password_is_a_failed_login(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        for _ in range(5):
            wrong = await change_password(client, account, current="not my password")
            assert wrong.status_code == 401
            assert wrong.json()["code"] == "invalid_credentials"
        locked = await change_password(client, account)
        assert locked.status_code == 429
        assert locked.json()["code"] == "login_throttled"
        assert locked.headers["retry-after"] == "60"
        # The same lock keeps password logins out: guessing here is guessing a login.
        assert (await login(client, account.email, PASSWORD)).status_code == 429

    async def test_a_weak_new_password_is_refused_and_the_old_one_stays(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        for weak in ("short", "password123", account.email):
            refused = await change_password(client, account, new=weak)
            assert refused.status_code == 422
            assert refused.json()["code"] == "weak_password"
        assert (await login(client, account.email, PASSWORD)).status_code == 200

    async def test_an_api_key_cannot_change_a_password(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        key = await create_api_key(client, account)
        refused = await client.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(key),
        )
        assert refused.status_code == 403
        assert refused.json()["code"] == "user_required"
        anonymous = await client.post(
            "/api/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        )
        assert anonymous.status_code == 401

    async def test_missing_fields_are_a_validation_error(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        missing = await client.post(
            "/api/v1/auth/password", json={"new_password": NEW_PASSWORD}, headers=account.headers
        )
        assert missing.status_code == 422
        assert missing.json()["code"] == "validation_error"


class TestPasswordReset:
    async def test_the_mailer_gets_a_one_hour_link_for_the_account(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        requested = await request_reset(client, account.email.upper())
        assert requested.status_code == 202
        assert "token" not in requested.text
        [event] = await events(app, "user.password_reset_requested")
        assert (event["user_id"], event["email"]) == (account.user_id, account.email)
        token = event["token"]
        assert token.startswith("twp_")
        assert len(token) == len("twp_") + 43  # 256 bits, base64url
        assert event["reset_url"] == f"http://127.0.0.1:8000/dashboard/password-reset?token={token}"
        assert event["expires_at"] == START.replace(hour=13).isoformat()

    async def test_links_lead_to_the_operators_own_pages_when_configured(
        self, app_factory: Callable[..., FastAPI]
    ) -> None:
        async with (
            started(app_factory, pages_url="https://app.example.com/account/") as application,
            client_from(application) as http,
        ):
            account = await register(http)
            reset = await reset_token(application, http, account.email)
            verification = await verification_token(application, http, account)
            [reset_event] = await events(application, "user.password_reset_requested")
            [verify_event] = await events(application, "user.email_verification_requested")
        assert reset_event["reset_url"] == (
            f"https://app.example.com/account/password-reset?token={reset}"
        )
        assert verify_event["verify_url"] == (
            f"https://app.example.com/account/verify-email?token={verification}"
        )

    async def test_unknown_email_gets_the_same_answer(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        known = await request_reset(client, account.email)
        unknown = await request_reset(client, "nobody@example.com")
        assert (unknown.status_code, unknown.json()) == (known.status_code, known.json())
        assert [e["email"] for e in await events(app, "user.password_reset_requested")] == [
            account.email
        ]

    async def test_reset_logs_out_every_session_and_sets_the_new_password(
        self, app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        async with client_from(app) as dashboard:
            await open_dashboard(dashboard, account.email)
            token = await reset_token(app, client, account.email)
            done = await confirm_reset(client, token)
            assert done.status_code == 204, done.text
            clock.advance(seconds=2)
            assert (await dashboard.get("/api/v1/auth/me")).status_code == 401
        assert (await client.get("/api/v1/auth/me", headers=account.headers)).status_code == 401
        refreshed = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
        )
        assert refreshed.status_code == 401
        assert (await login(client, account.email, PASSWORD)).status_code == 401
        assert (await login(client, account.email, NEW_PASSWORD)).status_code == 200
        [entry] = await audit_entries(app, "user.password_reset")
        assert entry.target == account.user_id
        assert entry.details == {"logins_revoked": 1, "sessions_revoked": 1}
        [event] = await events(app, "user.password_reset")
        assert event["user_id"] == account.user_id

    async def test_a_reset_token_works_once(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        account = await register(client)
        token = await reset_token(app, client, account.email)
        assert (await confirm_reset(client, token)).status_code == 204
        again = await confirm_reset(client, token, "yet another passphrase 9")
        assert again.status_code == 400
        assert again.json()["code"] == "invalid_reset_token"
        assert (await login(client, account.email, NEW_PASSWORD)).status_code == 200

    async def test_one_token_used_twice_at_once_sets_one_password(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        token = await reset_token(app, client, account.email)
        passwords = ("first new passphrase 1", "second new passphrase 2")
        answers = await asyncio.gather(*(confirm_reset(client, token, p) for p in passwords))
        assert sorted(answer.status_code for answer in answers) == [204, 400]
        winner = passwords[[answer.status_code for answer in answers].index(204)]
        loser = passwords[[answer.status_code for answer in answers].index(400)]
        assert (await login(client, account.email, winner)).status_code == 200
        assert (await login(client, account.email, loser)).status_code == 401

    async def test_a_reset_token_expires_after_an_hour(
        self, app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        token = await reset_token(app, client, account.email)
        clock.advance(hours=1)
        expired = await confirm_reset(client, token)
        assert expired.status_code == 400
        assert expired.json()["code"] == "invalid_reset_token"
        assert (await login(client, account.email, PASSWORD)).status_code == 200

    async def test_a_newer_request_replaces_the_open_token(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        first = await reset_token(app, client, account.email)
        second = await reset_token(app, client, account.email)
        assert first != second
        assert (await confirm_reset(client, first)).json()["code"] == "invalid_reset_token"
        assert (await confirm_reset(client, second)).status_code == 204

    async def test_a_weak_password_keeps_the_token_usable(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        token = await reset_token(app, client, account.email)
        weak = await confirm_reset(client, token, "password1")
        assert weak.status_code == 422
        assert weak.json()["code"] == "weak_password"
        assert (await confirm_reset(client, token)).status_code == 204

    async def test_tokens_of_another_kind_are_refused(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        verification = await verification_token(app, client, account)
        reset = await reset_token(app, client, account.email)
        for wrong in (verification, account.refresh_token, "twp_made-up", "x"):
            refused = await confirm_reset(client, wrong)
            assert refused.status_code == 400, wrong
            assert refused.json()["code"] == "invalid_reset_token"
        not_a_verification = await verify(client, reset, account)
        assert not_a_verification.status_code == 400
        assert not_a_verification.json()["code"] == "invalid_verification_token"
        # Both stay good for what they are.
        assert (await confirm_reset(client, reset)).status_code == 204
        logged_in_again = await log_in(client, replace(account, password=NEW_PASSWORD))
        assert (await verify(client, verification, logged_in_again)).status_code == 200

    async def test_a_reset_lets_a_locked_out_owner_in_again(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        for number in range(5):
            async with client_from(app, f"10.9.0.{number + 1}") as guesser:
                assert (await login(guesser, account.email, "guess number 1")).status_code == 401
        assert (await login(client, account.email, PASSWORD)).status_code == 429
        token = await reset_token(app, client, account.email)
        assert (await confirm_reset(client, token)).status_code == 204
        assert (await login(client, account.email, NEW_PASSWORD)).status_code == 200

    async def test_two_factor_stays_on_after_a_reset(
        self, app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        await enable_two_factor(client, account, now=clock.now())
        token = await reset_token(app, client, account.email)
        assert (await confirm_reset(client, token)).status_code == 204
        asked = await login(client, account.email, NEW_PASSWORD)
        assert asked.status_code == 401
        assert asked.json()["code"] == "totp_required"

    async def test_requests_are_limited_per_email_whether_or_not_it_exists(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        for email in (account.email, "nobody@example.com"):
            for number in range(5):
                async with client_from(app, f"10.7.{number}.1") as http:
                    assert (await request_reset(http, email)).status_code == 202
            async with client_from(app, "10.7.9.1") as http:
                limited = await request_reset(http, email)
            assert limited.status_code == 429
            assert limited.json()["code"] == "email_token_throttled"
            assert limited.headers["retry-after"] == "900"
        # Reset requests never lock the owner's logins.
        assert (await login(client, account.email, PASSWORD)).status_code == 200
        assert len(await events(app, "user.password_reset_requested")) == 5

    async def test_requests_are_limited_per_client_address(
        self, app_factory: Callable[..., FastAPI]
    ) -> None:
        async with (
            started(app_factory, email_token_max_requests_per_address=3) as application,
            client_from(application, "10.8.0.1") as http,
        ):
            for number in range(3):
                assert (
                    await request_reset(http, f"someone{number}@example.com")
                ).status_code == 202
            limited = await request_reset(http, "someone9@example.com")
            assert limited.status_code == 429
            assert limited.json()["code"] == "email_token_throttled"
            async with client_from(application, "10.8.0.2") as elsewhere:
                assert (await request_reset(elsewhere, "someone9@example.com")).status_code == 202

    async def test_bad_input_is_a_validation_error(self, client: httpx.AsyncClient) -> None:
        for path, body in (
            ("/api/v1/auth/password-reset", {}),
            ("/api/v1/auth/password-reset", {"email": "not an email"}),
            ("/api/v1/auth/password-reset/confirm", {"token": "twp_x"}),
            ("/api/v1/auth/password-reset/confirm", {"password": NEW_PASSWORD}),
        ):
            refused = await client.post(path, json=body)
            assert refused.status_code == 422, (path, body)
            assert refused.json()["code"] == "validation_error"


class TestEmailVerification:
    async def test_the_mailer_gets_a_one_day_link_for_the_user(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        requested = await client.post("/api/v1/auth/email/verification", headers=account.headers)
        assert requested.status_code == 202
        assert "token" not in requested.text
        [event] = await events(app, "user.email_verification_requested")
        assert (event["user_id"], event["email"]) == (account.user_id, account.email)
        assert event["token"].startswith("twv_")
        assert event["verify_url"] == (
            f"http://127.0.0.1:8000/dashboard/verify-email?token={event['token']}"
        )
        assert event["expires_at"] == START.replace(day=16).isoformat()

    async def test_verifying_marks_the_email_verified_without_a_login(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        before = await client.get("/api/v1/auth/me", headers=account.headers)
        assert before.json()["user"]["email_verified"] is False
        token = await verification_token(app, client, account)
        verified = await verify(client, token, account)
        assert verified.status_code == 200, verified.text
        assert verified.json()["user"]["id"] == account.user_id
        assert verified.json()["user"]["email_verified"] is True
        assert verified.json()["joined"] == []
        me = await client.get("/api/v1/auth/me", headers=account.headers)
        assert me.json()["user"]["email_verified"] is True
        [entry] = await audit_entries(app, "user.email_verified")
        assert entry.target == account.user_id
        assert entry.details == {"via": "token", "invitations_accepted": 0}
        again = await client.post("/api/v1/auth/email/verification", headers=account.headers)
        assert again.status_code == 409
        assert again.json()["code"] == "email_already_verified"

    async def test_verifying_email_accepts_open_invitations(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        alice = await register(client, organization_name="Alice Tools")
        carol = await register(client)
        members = f"/api/v1/organizations/{alice.organization_id}/members"
        invited = await client.post(
            members, json={"email": carol.email, "role": "billing"}, headers=alice.headers
        )
        assert invited.json()["status"] == "invited"
        verified = await verify(client, await verification_token(app, client, carol), carol)
        assert verified.json()["joined"] == [
            {"organization_id": alice.organization_id, "role": "billing"}
        ]
        listed = (await client.get(members, headers=alice.headers)).json()
        assert (carol.user_id, "billing") in {(m["user_id"], m["role"]) for m in listed["items"]}
        assert listed["invitations"] == []
        [joined] = await audit_entries(app, "member.joined")
        assert joined.details["via"] == "verified_email"
        # From now on an owner adds Carol's verified address at once.
        bob_org = await register(client)
        added = await client.post(
            f"/api/v1/organizations/{bob_org.organization_id}/members",
            json={"email": carol.email},
            headers=bob_org.headers,
        )
        assert added.json()["status"] == "added"

    async def test_an_invitation_to_an_organization_already_joined_is_spent(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        alice = await register(client)
        carol = await register(client)
        members = f"/api/v1/organizations/{alice.organization_id}/members"
        await client.post(members, json={"email": carol.email}, headers=alice.headers)
        # Carol joins through an invitation to another address of hers first.
        other = await client.post(
            members, json={"email": "carol.at.home@example.com"}, headers=alice.headers
        )
        accepted = await client.post(
            "/api/v1/invitations/accept",
            json={"token": other.json()["invitation"]["token"]},
            headers=carol.headers,
        )
        assert accepted.status_code == 200
        verified = await verify(client, await verification_token(app, client, carol), carol)
        assert verified.status_code == 200, verified.text
        assert verified.json()["joined"] == []
        listed = (await client.get(members, headers=alice.headers)).json()
        assert listed["invitations"] == []
        assert [m["user_id"] for m in listed["items"]].count(carol.user_id) == 1

    async def test_a_verification_token_works_once_and_for_a_day(
        self, app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
    ) -> None:
        account = await register(client)
        token = await verification_token(app, client, account)
        assert (await verify(client, token, account)).status_code == 200
        used = await verify(client, token, account)
        assert used.status_code == 400
        assert used.json()["code"] == "invalid_verification_token"

        late = await register(client)
        token = await verification_token(app, client, late)
        clock.advance(hours=24)
        expired = await verify(client, token, await log_in(client, late))
        assert expired.status_code == 400
        assert expired.json()["code"] == "invalid_verification_token"

    async def test_a_verification_link_works_only_for_the_account_that_asked(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        # Mallory registered Victor's address and asked for a link, which Victor received.
        mallory = await register(client, email="victor@example.com")
        token = await verification_token(app, client, mallory)
        victor = await register(client)
        clicked = await verify(client, token, victor)
        assert (clicked.status_code, clicked.json()["code"]) == (400, "invalid_verification_token")
        anonymous = await client.post("/api/v1/auth/email/verify", json={"token": token})
        assert anonymous.status_code == 401
        me = await client.get("/api/v1/auth/me", headers=mallory.headers)
        assert me.json()["user"]["email_verified"] is False

    async def test_verification_is_for_a_logged_in_user(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        key = await create_api_key(client, account)
        by_key = await client.post("/api/v1/auth/email/verification", headers=bearer(key))
        assert by_key.status_code == 403
        assert by_key.json()["code"] == "user_required"
        anonymous = await client.post("/api/v1/auth/email/verification")
        assert anonymous.status_code == 401
        missing = await client.post("/api/v1/auth/email/verify", json={}, headers=account.headers)
        assert missing.status_code == 422
        assert missing.json()["code"] == "validation_error"

    async def test_verification_requests_are_limited(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        for _ in range(5):
            await verification_token(app, client, account)
        limited = await client.post("/api/v1/auth/email/verification", headers=account.headers)
        assert limited.status_code == 429
        assert limited.json()["code"] == "email_token_throttled"
        assert "retry-after" in limited.headers
        # Only the newest link works.
        tokens = [e["token"] for e in await events(app, "user.email_verification_requested")]
        assert (await verify(client, tokens[0], account)).status_code == 400
        assert (await verify(client, tokens[-1], account)).status_code == 200


class TestHousekeeping:
    async def test_tokens_are_deleted_a_week_after_they_expire(
        self, app: FastAPI, client: httpx.AsyncClient, clock: ManualClock, database: Database
    ) -> None:
        account = await register(client)
        await reset_token(app, client, account.email)
        context = SweepContext(database=database, clock=clock, settings=app.state.settings)

        async def stored() -> int:
            async with database.transaction(write=False) as session:
                statement = select(func.count()).select_from(UserToken)
                return int((await session.execute(statement)).scalar_one())

        clock.advance(hours=1, days=6)
        await purge_expired(context)
        assert await stored() == 1
        clock.advance(days=1)
        await purge_expired(context)
        assert await stored() == 0
