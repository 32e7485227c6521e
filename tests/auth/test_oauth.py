"""OAuth2 login (authorization code + state + PKCE) against a provider on loopback."""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select

from tests.fixtures.apps import client_from, started
from tests.fixtures.identity import (
    PASSWORD,
    Account,
    TwoFactor,
    create_api_key,
    enable_two_factor,
    login,
    register,
)
from tests.fixtures.oauth_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    LoopbackProvider,
    ProviderServer,
    ProviderUser,
)
from tollway.accounts.service.users import user_service
from tollway.audit.models import AuditEntry
from tollway.auth.models import OAuthAccount
from tollway.db import Database
from tollway.kit.clock import ManualClock


@pytest.fixture(scope="session")
def loopback_provider() -> Iterator[LoopbackProvider]:
    provider = LoopbackProvider()
    server = ProviderServer(provider)
    server.start()
    yield provider
    server.stop()


@pytest.fixture
def provider(loopback_provider: LoopbackProvider) -> LoopbackProvider:
    loopback_provider.reset()
    return loopback_provider


@pytest.fixture
async def oauth_app(
    app_factory: Callable[..., FastAPI], provider: LoopbackProvider
) -> AsyncIterator[FastAPI]:
    application = app_factory(
        github_client_id=CLIENT_ID,
        github_client_secret=SecretStr(CLIENT_SECRET),
        github_authorize_url=provider.url("/github/authorize"),
        github_token_url=provider.url("/github/token"),
        github_userinfo_url=provider.url("/github/user"),
        github_emails_url=provider.url("/github/user/emails"),
        google_client_id=CLIENT_ID,
        google_client_secret=SecretStr(CLIENT_SECRET),
        google_authorize_url=provider.url("/google/authorize"),
        google_token_url=provider.url("/google/token"),
        google_userinfo_url=provider.url("/google/userinfo"),
    )
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def web(oauth_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=oauth_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def start(web: httpx.AsyncClient, provider: str, **params: str) -> str:
    """Ask Tollway to begin; answers the provider URL the browser is sent to."""
    response = await web.get(f"/api/v1/auth/oauth/{provider}/authorize", params=params)
    assert response.status_code == 302, response.text
    return response.headers["location"]


async def visit_provider(url: str) -> str:
    """The browser at the provider (real HTTP to loopback); answers the callback path."""
    async with httpx.AsyncClient(trust_env=False) as browser:
        consent = await browser.get(url)
    assert consent.status_code == 302, consent.text
    callback = urlsplit(consent.headers["location"])
    return f"{callback.path}?{callback.query}"


async def oauth_login(
    web: httpx.AsyncClient, provider: str = "github", **params: str
) -> httpx.Response:
    return await web.get(await visit_provider(await start(web, provider, **params)))


class TestAuthorize:
    async def test_the_redirect_carries_state_and_a_s256_pkce_challenge(
        self, web: httpx.AsyncClient, provider: LoopbackProvider
    ) -> None:
        url = urlsplit(await start(web, "github"))
        query = parse_qs(url.query)
        assert f"{url.scheme}://{url.netloc}{url.path}" == provider.url("/github/authorize")
        assert query["client_id"] == [CLIENT_ID]
        assert query["response_type"] == ["code"]
        assert query["code_challenge_method"] == ["S256"]
        assert len(query["state"][0]) >= 32
        assert query["redirect_uri"][0].endswith("/api/v1/auth/oauth/github/callback")

    async def test_an_unconfigured_or_unknown_provider_is_a_404(
        self, client: httpx.AsyncClient, web: httpx.AsyncClient
    ) -> None:
        unconfigured = await client.get("/api/v1/auth/oauth/github/authorize")
        unknown = await web.get("/api/v1/auth/oauth/gitlab/authorize")
        assert unconfigured.status_code == unknown.status_code == 404
        assert unconfigured.json()["code"] == unknown.json()["code"]
        assert unknown.json()["code"] == "oauth_provider_not_configured"

    async def test_a_redirect_off_the_site_is_refused(self, web: httpx.AsyncClient) -> None:
        for target in ("//evil.example/", "https://evil.example/", "dashboard"):
            response = await web.get(
                "/api/v1/auth/oauth/github/authorize", params={"redirect_to": target}
            )
            assert response.status_code == 400
            assert response.json()["code"] == "invalid_redirect"


class TestCallback:
    async def test_a_new_github_user_gets_an_account_and_a_dashboard_session(
        self, web: httpx.AsyncClient, provider: LoopbackProvider
    ) -> None:
        provider.next_user = ProviderUser("4242", "new.octocat@example.com", name="Octo Cat")
        response = await oauth_login(web, "github", redirect_to="/dashboard/billing")
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard/billing"
        cookies = response.headers.get_list("set-cookie")
        session_cookie = next(c for c in cookies if c.startswith("tollway_session="))
        assert "HttpOnly" in session_cookie
        assert "SameSite=lax" in session_cookie
        me = await web.get("/api/v1/auth/me")
        assert me.status_code == 200
        assert me.json()["user"]["email"] == "new.octocat@example.com"
        assert me.json()["user"]["email_verified"] is True
        assert me.json()["role"] == "owner"
        # PKCE: the verifier reached the token endpoint, which checked it against the challenge.
        assert provider.token_requests[0]["code_verifier"]

    async def test_token_mode_answers_like_login_with_google(
        self, web: httpx.AsyncClient, provider: LoopbackProvider
    ) -> None:
        provider.next_user = ProviderUser("g-77", "gina@example.com", name="Gina")
        response = await oauth_login(web, "google", mode="token")
        assert response.status_code == 200
        body = response.json()
        assert body["user"]["email"] == "gina@example.com"
        assert body["token_type"] == "bearer"
        me = await web.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        assert me.json()["user"]["id"] == body["user"]["id"]

    async def test_a_verified_email_links_to_the_existing_account_once(
        self, web: httpx.AsyncClient, provider: LoopbackProvider, oauth_app: FastAPI
    ) -> None:
        account = await register(web, email="linda@example.com")
        provider.next_user = ProviderUser("5150", "linda@example.com")
        first = await oauth_login(web, "github", mode="token")
        assert first.status_code == 200
        assert first.json()["user"]["id"] == account.user_id
        # The link holds by provider identity, even after the email changes at GitHub.
        provider.next_user = ProviderUser("5150", "linda.new@example.com")
        second = await oauth_login(web, "github", mode="token")
        assert second.json()["user"]["id"] == account.user_id
        database: Database = oauth_app.state.database
        async with database.transaction(write=False) as session:
            links = list((await session.execute(select(OAuthAccount))).scalars())
            linked = list(
                (
                    await session.execute(
                        select(AuditEntry).where(AuditEntry.action == "user.oauth_linked")
                    )
                ).scalars()
            )
        assert [(link.provider, link.provider_user_id, link.user_id) for link in links] == [
            ("github", "5150", account.user_id)
        ]
        assert len(linked) == 1

    async def test_an_unverified_email_neither_links_nor_creates(
        self, web: httpx.AsyncClient, provider: LoopbackProvider
    ) -> None:
        account = await register(web, email="victim@example.com")
        provider.next_user = ProviderUser("666", "victim@example.com", email_verified=False)
        response = await oauth_login(web, "github", mode="token")
        assert response.status_code == 403
        assert response.json()["code"] == "oauth_email_unverified"
        provider.next_user = ProviderUser("667", "stranger@example.com", email_verified=False)
        stranger = await oauth_login(web, "google", mode="token")
        assert stranger.status_code == 403
        me = await web.get("/api/v1/auth/me", headers=account.headers)
        assert me.json()["user"]["email"] == "victim@example.com"

    async def test_a_wrong_or_replayed_state_is_refused(
        self, web: httpx.AsyncClient, provider: LoopbackProvider
    ) -> None:
        callback = await visit_provider(await start(web, "github", mode="token"))
        path, _, query = callback.partition("?")
        params = parse_qs(query)
        forged = await web.get(path, params={"code": params["code"][0], "state": "forged"})
        assert forged.status_code == 400
        assert forged.json()["code"] == "invalid_oauth_state"
        assert (await web.get(callback)).status_code == 200
        replayed = await web.get(callback)
        assert replayed.status_code == 400
        assert replayed.json()["code"] == "invalid_oauth_state"

    async def test_a_callback_opened_in_another_browser_logs_nobody_in(
        self, oauth_app: FastAPI, web: httpx.AsyncClient, provider: LoopbackProvider
    ) -> None:
        """Login CSRF: the attacker starts a login, stops at the callback and sends its
        link to the victim; the victim's browser lacks the login's cookie."""
        provider.next_user = ProviderUser("666", "attacker@example.com")
        link = await visit_provider(await start(web, "github"))
        async with client_from(oauth_app) as victim:
            opened = await victim.get(link)
            assert (opened.status_code, opened.json()["code"]) == (400, "oauth_state_mismatch")
            assert opened.headers["content-type"] == "application/problem+json"
            assert "tollway_session" not in victim.cookies
            assert (await victim.get("/api/v1/auth/me")).status_code == 401
            # A login of the victim's own in flight is no better a match.
            await start(victim, "github")
            provider.next_user = ProviderUser("666", "attacker@example.com")
            other_link = await visit_provider(await start(web, "github"))
            mismatched = await victim.get(other_link)
            assert mismatched.json()["code"] == "oauth_state_mismatch"

    async def test_authorize_binds_the_login_to_the_browser_with_a_short_lived_cookie(
        self, oauth_app: FastAPI, app_factory: Callable[..., FastAPI]
    ) -> None:
        async with client_from(oauth_app) as browser:
            started_here = await browser.get("/api/v1/auth/oauth/github/authorize")
        [cookie] = started_here.headers.get_list("set-cookie")
        assert cookie.startswith("tollway_oauth_state=")
        for attribute in ("HttpOnly", "SameSite=lax", "Max-Age=600", "Path=/api/v1/auth/oauth"):
            assert attribute in cookie
        assert "Secure" not in cookie
        https_settings = oauth_app.state.settings.model_copy(
            update={"base_url": "https://tollway.example"}
        )
        async with (
            started(app_factory, **https_settings.model_dump()) as https_app,
            client_from(https_app) as browser,
        ):
            secure = await browser.get("/api/v1/auth/oauth/github/authorize")
        assert "Secure" in secure.headers["set-cookie"]

    async def test_a_state_is_bound_to_its_provider(
        self, web: httpx.AsyncClient, provider: LoopbackProvider
    ) -> None:
        callback = await visit_provider(await start(web, "github", mode="token"))
        swapped = await web.get(callback.replace("/oauth/github/", "/oauth/google/"))
        assert swapped.status_code == 400
        assert swapped.json()["code"] == "invalid_oauth_state"

    async def test_a_declined_authorization_is_oauth_denied(
        self, web: httpx.AsyncClient, provider: LoopbackProvider
    ) -> None:
        provider.deny_next = "access_denied"
        response = await oauth_login(web, "github")
        assert response.status_code == 400
        assert response.json()["code"] == "oauth_denied"

    async def test_a_code_the_provider_refuses_is_a_provider_error(
        self, web: httpx.AsyncClient, provider: LoopbackProvider
    ) -> None:
        callback = await visit_provider(await start(web, "github", mode="token"))
        path, _, query = callback.partition("?")
        params = parse_qs(query)
        response = await web.get(path, params={"code": "not-issued", "state": params["state"][0]})
        assert response.status_code == 502
        assert response.json()["code"] == "oauth_provider_error"

    async def test_an_oauth_signup_accepts_open_invitations(
        self, web: httpx.AsyncClient, provider: LoopbackProvider
    ) -> None:
        owner = await register(web)
        members = f"/api/v1/organizations/{owner.organization_id}/members"
        invited = await web.post(
            members, json={"email": "invitee@example.com", "role": "admin"}, headers=owner.headers
        )
        assert invited.json()["status"] == "invited"
        provider.next_user = ProviderUser("808", "invitee@example.com")
        body = (await oauth_login(web, "github", mode="token")).json()
        listed = (await web.get(members, headers=owner.headers)).json()
        assert (body["user"]["id"], "admin") in {
            (member["user_id"], member["role"]) for member in listed["items"]
        }
        assert listed["invitations"] == []

    async def test_an_account_whose_provider_verified_its_email_is_added_at_once(
        self, web: httpx.AsyncClient, provider: LoopbackProvider
    ) -> None:
        owner = await register(web)
        members = f"/api/v1/organizations/{owner.organization_id}/members"
        provider.next_user = ProviderUser("810", "verified@example.com", name="Vera")
        vera = (await oauth_login(web, "github", mode="token")).json()["user"]
        added = await web.post(
            members,
            json={"email": "Verified@example.com", "role": "billing"},
            headers=owner.headers,
        )
        assert added.status_code == 201, added.text
        assert added.json()["status"] == "added"
        assert added.json()["invitation"] is None
        assert added.json()["member"] == {
            **added.json()["member"],
            "user_id": vera["id"],
            "email": "verified@example.com",
            "name": "Vera",
            "role": "billing",
        }
        listed = (await web.get(members, headers=owner.headers)).json()
        assert (vera["id"], "billing") in {(m["user_id"], m["role"]) for m in listed["items"]}
        assert listed["invitations"] == []
        again = await web.post(members, json={"email": vera["email"]}, headers=owner.headers)
        assert again.status_code == 409
        assert again.json()["code"] == "already_member"

    async def test_once_a_provider_verifies_an_invited_account_its_invitations_are_accepted(
        self, web: httpx.AsyncClient, provider: LoopbackProvider
    ) -> None:
        owner = await register(web)
        members = f"/api/v1/organizations/{owner.organization_id}/members"
        dana = await register(web, email="dana@example.com")
        invited = await web.post(
            members, json={"email": dana.email, "role": "admin"}, headers=owner.headers
        )
        assert invited.json()["status"] == "invited"
        # Dana links GitHub, which vouches for the address: now she has proven it.
        provider.next_user = ProviderUser("811", "dana@example.com")
        linked = await oauth_login(web, "github", mode="token")
        assert linked.status_code == 200
        dana_now = {"Authorization": f"Bearer {linked.json()['access_token']}"}
        listed = (await web.get(members, headers=owner.headers)).json()
        assert (dana.user_id, "admin") in {(m["user_id"], m["role"]) for m in listed["items"]}
        # The open invitation became the membership; its token is spent.
        assert listed["invitations"] == []
        stale = await web.post(
            "/api/v1/invitations/accept",
            json={"token": invited.json()["invitation"]["token"]},
            headers=dana_now,
        )
        assert stale.status_code == 404
        again = await web.post(members, json={"email": dana.email}, headers=owner.headers)
        assert (again.status_code, again.json()["code"]) == (409, "already_member")


async def audit_actions(app: FastAPI, action: str) -> list[AuditEntry]:
    database: Database = app.state.database
    async with database.transaction(write=False) as session:
        return list(
            (await session.execute(select(AuditEntry).where(AuditEntry.action == action))).scalars()
        )


async def linked_then_two_factor(
    web: httpx.AsyncClient, provider: LoopbackProvider, clock: ManualClock, email: str
) -> tuple[Account, TwoFactor]:
    """An account whose GitHub identity was linked before it turned 2FA on."""
    registered = await register(web, email=email)
    provider.next_user = ProviderUser("9001", email)
    linked = await oauth_login(web, "github", mode="token")
    assert linked.status_code == 200
    # Linking made the registration's password and tokens void (the address was not
    # verified): the account goes on with the tokens of the OAuth login.
    account = replace(
        registered,
        password="",
        access_token=linked.json()["access_token"],
        refresh_token=linked.json()["refresh_token"],
    )
    two_factor = await enable_two_factor(web, account, now=clock.now())
    clock.advance(seconds=30)  # the enabling code is spent
    provider.next_user = ProviderUser("9001", email)
    return account, two_factor


async def complete(web: httpx.AsyncClient, **body: str) -> httpx.Response:
    return await web.post("/api/v1/auth/2fa/challenge", json=body)


class TestSecondFactor:
    async def test_a_linked_identity_of_an_account_with_two_factor_gets_a_challenge_not_tokens(
        self,
        web: httpx.AsyncClient,
        provider: LoopbackProvider,
        clock: ManualClock,
        oauth_app: FastAPI,
    ) -> None:
        account, two_factor = await linked_then_two_factor(
            web, provider, clock, "guarded@example.com"
        )
        response = await oauth_login(web, "github", mode="token")
        assert response.status_code == 401
        body = response.json()
        assert body["code"] == "totp_required"
        assert body["totp_required"] is True
        assert body["expires_in"] == 300
        assert "access_token" not in body
        assert "refresh_token" not in body

        completed = await complete(
            web, challenge=body["challenge"], totp_code=two_factor.code(clock.now())
        )
        assert completed.status_code == 200, completed.text
        session = completed.json()
        assert session["user"]["id"] == account.user_id
        me = await web.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {session['access_token']}"}
        )
        assert me.json()["user"]["id"] == account.user_id
        entries = await audit_actions(oauth_app, "auth.2fa_challenge_completed")
        assert [(entry.target, entry.details["via"]) for entry in entries] == [
            (account.user_id, "oauth:github")
        ]

    async def test_a_challenge_works_once(
        self, web: httpx.AsyncClient, provider: LoopbackProvider, clock: ManualClock
    ) -> None:
        _, two_factor = await linked_then_two_factor(web, provider, clock, "once@example.com")
        challenge = (await oauth_login(web, "github", mode="token")).json()["challenge"]
        first = await complete(web, challenge=challenge, recovery_code=two_factor.recovery_codes[0])
        assert first.status_code == 200
        again = await complete(web, challenge=challenge, recovery_code=two_factor.recovery_codes[1])
        assert again.status_code == 401
        assert again.json()["code"] == "invalid_challenge"

    async def test_one_challenge_completed_twice_at_once_logs_in_once(
        self, web: httpx.AsyncClient, provider: LoopbackProvider, clock: ManualClock
    ) -> None:
        _, two_factor = await linked_then_two_factor(web, provider, clock, "race@example.com")
        challenge = (await oauth_login(web, "github", mode="token")).json()["challenge"]
        results = await asyncio.gather(
            complete(web, challenge=challenge, recovery_code=two_factor.recovery_codes[0]),
            complete(web, challenge=challenge, recovery_code=two_factor.recovery_codes[1]),
        )
        assert sorted(response.status_code for response in results) == [200, 401]
        assert {response.json().get("code") for response in results} == {None, "invalid_challenge"}

    async def test_an_expired_or_unknown_challenge_is_refused(
        self, web: httpx.AsyncClient, provider: LoopbackProvider, clock: ManualClock
    ) -> None:
        _, two_factor = await linked_then_two_factor(web, provider, clock, "late@example.com")
        challenge = (await oauth_login(web, "github", mode="token")).json()["challenge"]
        clock.advance(minutes=5, seconds=1)
        late = await complete(web, challenge=challenge, totp_code=two_factor.code(clock.now()))
        assert late.status_code == 401
        assert late.json()["code"] == "invalid_challenge"
        unknown = await complete(web, challenge="tw2_made-up", totp_code="123456")
        assert unknown.status_code == 401
        assert unknown.json()["code"] == "invalid_challenge"
        missing = await complete(web, totp_code="123456")
        assert missing.status_code == 401
        assert missing.json()["code"] == "invalid_challenge"

    async def test_wrong_codes_are_refused_and_count_toward_the_login_throttle(
        self, web: httpx.AsyncClient, provider: LoopbackProvider, clock: ManualClock
    ) -> None:
        account, two_factor = await linked_then_two_factor(
            web, provider, clock, "guess@example.com"
        )
        challenge = (await oauth_login(web, "github", mode="token")).json()["challenge"]
        for _ in range(5):
            wrong = await complete(web, challenge=challenge, totp_code="000000")
            assert wrong.status_code == 401
            assert wrong.json()["code"] == "invalid_totp"
        locked = await complete(web, challenge=challenge, totp_code=two_factor.code(clock.now()))
        assert locked.status_code == 429
        assert locked.json()["code"] == "login_throttled"
        password_login = await web.post(
            "/api/v1/auth/login",
            json={
                "email": account.email,
                "password": PASSWORD,
                "totp_code": two_factor.code(clock.now()),
            },
        )
        assert password_login.status_code == 429

    async def test_a_challenge_without_a_code_asks_for_one(
        self, web: httpx.AsyncClient, provider: LoopbackProvider, clock: ManualClock
    ) -> None:
        await linked_then_two_factor(web, provider, clock, "blank@example.com")
        challenge = (await oauth_login(web, "github", mode="token")).json()["challenge"]
        response = await complete(web, challenge=challenge)
        assert response.status_code == 401
        assert response.json()["code"] == "totp_required"

    async def test_cookie_mode_sends_the_browser_to_the_two_factor_page_without_a_session(
        self, web: httpx.AsyncClient, provider: LoopbackProvider, clock: ManualClock
    ) -> None:
        account, two_factor = await linked_then_two_factor(
            web, provider, clock, "browser@example.com"
        )
        response = await oauth_login(web, "github", redirect_to="/dashboard/billing")
        assert response.status_code == 303
        location = urlsplit(response.headers["location"])
        assert location.path == "/dashboard/2fa"
        assert parse_qs(location.query) == {"redirect_to": ["/dashboard/billing"]}
        cookies = response.headers.get_list("set-cookie")
        assert not any(c.startswith("tollway_session=") for c in cookies)
        challenge_cookie = next(c for c in cookies if c.startswith("tollway_2fa_challenge="))
        assert "HttpOnly" in challenge_cookie
        assert "Max-Age=300" in challenge_cookie
        assert (await web.get("/api/v1/auth/me")).status_code == 401

        # The dashboard's 2FA page posts only the code; the challenge rides in its cookie.
        completed = await complete(web, totp_code=two_factor.code(clock.now()))
        assert completed.status_code == 200, completed.text
        assert completed.json()["redirect_to"] == "/dashboard/billing"
        assert completed.json()["csrf_token"]
        me = await web.get("/api/v1/auth/me")
        assert me.status_code == 200
        assert me.json()["user"]["id"] == account.user_id
        assert web.cookies.get("tollway_2fa_challenge") is None

    async def test_a_provider_identity_links_to_an_account_with_two_factor_after_the_code(
        self,
        web: httpx.AsyncClient,
        provider: LoopbackProvider,
        clock: ManualClock,
        oauth_app: FastAPI,
    ) -> None:
        account, two_factor = await linked_then_two_factor(
            web, provider, clock, "careful@example.com"
        )
        # Google vouches for the same (verified) address: a second identity to link.
        provider.next_user = ProviderUser("g-777", "careful@example.com")
        refused = await oauth_login(web, "google", mode="token")
        assert refused.status_code == 401
        assert refused.json()["code"] == "totp_required"
        # Without the code nothing is linked: the next login still asks.
        assert [
            e.details["provider"] for e in await audit_actions(oauth_app, "user.oauth_linked")
        ] == ["github"]
        provider.next_user = ProviderUser("g-777", "careful@example.com")
        challenge = (await oauth_login(web, "google", mode="token")).json()["challenge"]
        completed = await complete(web, challenge=challenge, totp_code=two_factor.code(clock.now()))
        assert completed.status_code == 200
        assert completed.json()["user"]["id"] == account.user_id
        linked = await audit_actions(oauth_app, "user.oauth_linked")
        assert [(entry.target, entry.details["provider"]) for entry in linked] == [
            (account.user_id, "github"),
            (account.user_id, "google"),
        ]
        # Linked now, and still asked for the code at the next login.
        provider.next_user = ProviderUser("g-777", "careful@example.com")
        assert (await oauth_login(web, "google", mode="token")).status_code == 401
        # Only the first link (to the unverified registration) cleared anything; linking
        # Google to the verified account kept its second factor.
        cleared = await audit_actions(oauth_app, "user.unverified_credentials_cleared")
        assert [entry.details["provider"] for entry in cleared] == ["github"]
        assert await audit_actions(oauth_app, "user.2fa_disabled") == []


async def second_browser(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestSquattedEmail:
    """Someone registered the address with a password, never proving they own it; then
    the mailbox's owner logs in with a provider that vouches for it."""

    async def test_the_mailbox_owner_gets_the_account_and_every_squatter_credential_stops(
        self,
        web: httpx.AsyncClient,
        provider: LoopbackProvider,
        clock: ManualClock,
        oauth_app: FastAPI,
    ) -> None:
        squatter = await register(web, email="victim@company.com")
        squatter_key = await create_api_key(web, squatter)
        async with await second_browser(oauth_app) as squatter_browser:
            opened = await squatter_browser.post(
                "/api/v1/auth/session",
                json={"email": squatter.email, "password": squatter.password},
            )
            assert opened.status_code == 200
            assert (await squatter_browser.get("/api/v1/auth/me")).status_code == 200

            provider.next_user = ProviderUser("31337", "victim@company.com", name="Victim")
            owner = await oauth_login(web, "github", mode="token")
            assert owner.status_code == 200, owner.text
            assert owner.json()["user"]["id"] == squatter.user_id
            assert owner.json()["user"]["email_verified"] is True
            clock.advance(seconds=2)  # past every process's one-second caches

            password = await web.post(
                "/api/v1/auth/login", json={"email": squatter.email, "password": PASSWORD}
            )
            assert password.status_code == 401
            assert password.json()["code"] == "invalid_credentials"
            refreshed = await web.post(
                "/api/v1/auth/refresh", json={"refresh_token": squatter.refresh_token}
            )
            assert refreshed.status_code == 401
            assert refreshed.json()["code"] == "invalid_token"
            access = await web.get("/api/v1/auth/me", headers=squatter.headers)
            assert access.status_code == 401
            cookie = await squatter_browser.get("/api/v1/auth/me")
            assert cookie.status_code == 401
            key = await web.get("/api/v1/auth/me", headers=bearer(squatter_key))
            assert key.status_code == 401
            assert key.json()["code"] == "invalid_api_key"

        me = await web.get("/api/v1/auth/me", headers=bearer(owner.json()["access_token"]))
        assert me.status_code == 200
        assert me.json()["user"]["email_verified"] is True
        keys = await web.get("/api/v1/auth/keys", headers=bearer(owner.json()["access_token"]))
        assert [item["revoked_at"] is not None for item in keys.json()["items"]] == [True]

        [cleared] = await audit_actions(oauth_app, "user.unverified_credentials_cleared")
        assert cleared.target == squatter.user_id
        assert cleared.actor == "oauth:github:31337"
        assert cleared.details == {
            "provider": "github",
            "password_cleared": True,
            "totp_disabled": False,
            "logins_revoked": 1,
            "sessions_revoked": 1,
            "api_keys_revoked": 1,
        }
        [revoked] = await audit_actions(oauth_app, "api_key.revoked")
        assert revoked.actor == "oauth:github:31337"
        assert revoked.details == {"reason": "unverified_credentials_cleared"}

    async def test_a_squatter_s_two_factor_neither_keeps_the_owner_out_nor_survives(
        self,
        web: httpx.AsyncClient,
        provider: LoopbackProvider,
        clock: ManualClock,
        oauth_app: FastAPI,
    ) -> None:
        squatter = await register(web, email="ceo@company.com")
        two_factor = await enable_two_factor(web, squatter, now=clock.now())
        clock.advance(seconds=30)
        provider.next_user = ProviderUser("g-1", "ceo@company.com")
        owner = await oauth_login(web, "google", mode="token")
        # No challenge: the second factor was the squatter's, not the mailbox owner's.
        assert owner.status_code == 200, owner.text
        assert owner.json()["user"]["id"] == squatter.user_id
        assert owner.json()["user"]["totp_enabled"] is False
        with_code = await web.post(
            "/api/v1/auth/login",
            json={
                "email": squatter.email,
                "password": PASSWORD,
                "totp_code": two_factor.code(clock.now()),
            },
        )
        assert with_code.status_code == 401
        assert with_code.json()["code"] == "invalid_credentials"
        [cleared] = await audit_actions(oauth_app, "user.unverified_credentials_cleared")
        assert cleared.details["totp_disabled"] is True
        # The owner may turn 2FA on again, with their own authenticator.
        setup = await web.post(
            "/api/v1/auth/2fa/setup", headers=bearer(owner.json()["access_token"])
        )
        assert setup.status_code == 200

    async def test_in_cookie_mode_the_owner_lands_in_the_dashboard_and_the_squatter_is_out(
        self, web: httpx.AsyncClient, provider: LoopbackProvider, clock: ManualClock
    ) -> None:
        squatter = await register(web, email="ops@company.com")
        provider.next_user = ProviderUser("4040", "ops@company.com")
        response = await oauth_login(web, "github")
        assert response.status_code == 303
        clock.advance(seconds=2)
        me = await web.get("/api/v1/auth/me")
        assert me.json()["user"]["id"] == squatter.user_id
        assert me.json()["user"]["email_verified"] is True
        # The owner's own new session survived the clearing it caused.
        assert (await web.get("/api/v1/auth/me", headers=squatter.headers)).status_code == 401

    async def test_a_verified_account_links_another_provider_and_keeps_every_credential(
        self,
        web: httpx.AsyncClient,
        provider: LoopbackProvider,
        clock: ManualClock,
        oauth_app: FastAPI,
    ) -> None:
        provider.next_user = ProviderUser("5001", "vera@company.com")
        signup = (await oauth_login(web, "github", mode="token")).json()
        account = Account(
            user_id=signup["user"]["id"],
            organization_id=signup["organization"]["id"],
            email="vera@company.com",
            password="",
            access_token=signup["access_token"],
            refresh_token=signup["refresh_token"],
        )
        key = await create_api_key(web, account)
        provider.next_user = ProviderUser("g-5001", "vera@company.com")
        google = await oauth_login(web, "google", mode="token")
        assert google.status_code == 200
        assert google.json()["user"]["id"] == account.user_id
        clock.advance(seconds=2)
        assert (await web.get("/api/v1/auth/me", headers=account.headers)).status_code == 200
        assert (await web.get("/api/v1/auth/me", headers=bearer(key))).status_code == 200
        refreshed = await web.post(
            "/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}
        )
        assert refreshed.status_code == 200
        linked = await audit_actions(oauth_app, "user.oauth_linked")
        assert [entry.details["provider"] for entry in linked] == ["github", "google"]
        assert await audit_actions(oauth_app, "user.unverified_credentials_cleared") == []
        assert await audit_actions(oauth_app, "api_key.revoked") == []

    async def test_a_verified_account_with_a_password_keeps_it(
        self, web: httpx.AsyncClient, provider: LoopbackProvider, oauth_app: FastAPI
    ) -> None:
        account = await register(web, email="pat@company.com")
        database: Database = oauth_app.state.database
        async with database.transaction() as session:
            user = await user_service.get_user(session, account.user_id)
            user.email_verified = True  # proven earlier (an import, an older link)
        provider.next_user = ProviderUser("6001", "pat@company.com")
        assert (await oauth_login(web, "github", mode="token")).status_code == 200
        assert (await login(web, account)).user_id == account.user_id
        assert (await web.get("/api/v1/auth/me", headers=account.headers)).status_code == 200
