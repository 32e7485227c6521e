"""OAuth2 login with GitHub and Google: authorization code flow with ``state`` and PKCE.

The protocol steps (the authorization URI, the S256 code challenge, the token request)
are Authlib's RFC 6749 / RFC 7636 implementations; the HTTP calls go through httpx.
(Authlib's own httpx client class is not used: it warns that its httpx support is
deprecated in favour of httpx2, which Tollway does not depend on.)

``state`` (stored as its SHA-256) and the PKCE verifier live in the ``oauth_states``
table for ten minutes, so any process can take the callback; a state is good for one
callback, and only in the browser that started the login: authorize sets the
``tollway_oauth_state`` cookie (HttpOnly, SameSite=Lax, ten minutes) to the state, and
the callback requires it. Provider endpoints come from settings, so tests point them at a provider
on loopback and operators at a GitHub Enterprise server.

Linking: a provider identity seen before logs its user in. A new one is linked to the
account with the same email only if the provider says that email is verified; without
such an account, one is created (without password, email verified). A provider that
gives no verified email is refused (``oauth_email_unverified``). An account whose email
is verified and which has 2FA on is linked only once its TOTP code is given (the
caller opens a challenge). An account whose email was never verified (registered with
a password) is taken over by the mailbox owner: whatever its registrant held -
password, TOTP, logins, sessions, API keys - is voided in the same transaction
(``user.unverified_credentials_cleared``; docs/auth.md, "An address registered by
someone else").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
import structlog
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.models import User
from tollway.accounts.service.members import membership_service
from tollway.accounts.service.users import user_service
from tollway.api_keys.service import api_key_service
from tollway.audit.service import audit_service
from tollway.auth import repository
from tollway.auth.models import OAuthAccount, OAuthState
from tollway.auth.revocation import revoke_every_login
from tollway.auth.two_factor import two_factor_service
from tollway.config import Settings
from tollway.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    TollwayError,
    Unprocessable,
)
from tollway.kit.ids import new_id

log = structlog.get_logger("tollway.auth.oauth")

PROVIDERS = ("github", "google")
STATE_TTL = timedelta(minutes=10)
#: The cookie that binds a login in flight to the browser that started it (its value is
#: the state), sent only to the OAuth routes.
OAUTH_STATE_COOKIE = "tollway_oauth_state"
OAUTH_COOKIE_PATH = "/api/v1/auth/oauth"
HTTP_TIMEOUT_SECONDS = 10.0
MODES = ("cookie", "token")


class OAuthProviderNotConfigured(NotFound):
    code = "oauth_provider_not_configured"
    title = "OAuth provider not configured"


class InvalidOAuthState(BadRequest):
    code = "invalid_oauth_state"
    title = "Invalid OAuth state"


class OAuthStateMismatch(BadRequest):
    code = "oauth_state_mismatch"
    title = "OAuth login started in another browser"


class OAuthDenied(BadRequest):
    code = "oauth_denied"
    title = "OAuth authorization denied"


class OAuthProviderError(TollwayError):
    status = 502
    code = "oauth_provider_error"
    title = "The OAuth provider failed"


class OAuthEmailUnverified(Forbidden):
    code = "oauth_email_unverified"
    title = "No verified email from the provider"


class OAuthLinkRefused(Conflict):
    code = "oauth_link_refused"
    title = "Account cannot be linked"


@dataclass(frozen=True, slots=True)
class ProviderIdentity:
    provider: str
    provider_user_id: str
    email: str | None
    email_verified: bool
    name: str | None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    userinfo_url: str
    emails_url: str | None
    scope: str


class OAuthProvider(Protocol):
    """One identity provider: where to send the user, and who came back."""

    config: ProviderConfig

    def authorization_url(self, *, state: str, code_verifier: str, redirect_uri: str) -> str: ...

    async def identify(
        self, *, code: str, code_verifier: str, redirect_uri: str
    ) -> ProviderIdentity: ...


class AuthorizationCodeProvider:
    """The authorization-code + PKCE steps every provider shares; subclasses read the user."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    def authorization_url(self, *, state: str, code_verifier: str, redirect_uri: str) -> str:
        uri: str = prepare_grant_uri(
            self.config.authorize_url,
            self.config.client_id,
            "code",
            redirect_uri=redirect_uri,
            scope=self.config.scope,
            state=state,
            code_challenge=create_s256_code_challenge(code_verifier),
            code_challenge_method="S256",
        )
        return uri

    async def identify(
        self, *, code: str, code_verifier: str, redirect_uri: str
    ) -> ProviderIdentity:
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as http:
                access_token = await self._exchange(http, code, code_verifier, redirect_uri)
                return await self._identity(http, access_token)
        except httpx.HTTPError as error:
            log.warning("oauth.provider_unreachable", provider=self.config.name, error=str(error))
            raise OAuthProviderError(f"{self.config.name} could not be reached") from error

    async def _exchange(
        self, http: httpx.AsyncClient, code: str, code_verifier: str, redirect_uri: str
    ) -> str:
        body = prepare_token_request(
            "authorization_code",
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
        )
        response = await http.post(
            self.config.token_url,
            content=body,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        payload = self._json(response)
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if response.status_code != 200 or not isinstance(token, str):
            error = payload.get("error") if isinstance(payload, dict) else None
            log.warning(
                "oauth.token_refused", provider=self.config.name, status=response.status_code
            )
            raise OAuthProviderError(
                f"{self.config.name} refused the authorization code ({error or 'no token'})"
            )
        return token

    async def _get(self, http: httpx.AsyncClient, url: str, access_token: str) -> Any:
        response = await http.get(
            url, headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        )
        if response.status_code != 200:
            raise OAuthProviderError(
                f"{self.config.name} did not tell who logged in (HTTP {response.status_code})"
            )
        return self._json(response)

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as error:
            raise OAuthProviderError(
                f"{self.config.name} answered with something not JSON"
            ) from error

    async def _identity(self, http: httpx.AsyncClient, access_token: str) -> ProviderIdentity:
        raise NotImplementedError


class GitHubProvider(AuthorizationCodeProvider):
    async def _identity(self, http: httpx.AsyncClient, access_token: str) -> ProviderIdentity:
        user = await self._get(http, self.config.userinfo_url, access_token)
        if not isinstance(user, dict) or "id" not in user:
            raise OAuthProviderError("github answered without a user id")
        email: str | None = None
        verified = False
        if self.config.emails_url:
            emails = await self._get(http, self.config.emails_url, access_token)
            candidates = [
                item
                for item in (emails if isinstance(emails, list) else [])
                if isinstance(item, dict) and item.get("verified") is True and item.get("email")
            ]
            candidates.sort(key=lambda item: item.get("primary") is not True)
            if candidates:
                email, verified = str(candidates[0]["email"]), True
        if email is None and user.get("email"):
            email = str(user["email"])
        return ProviderIdentity(
            provider="github",
            provider_user_id=str(user["id"]),
            email=email,
            email_verified=verified,
            name=str(user.get("name") or user.get("login") or "") or None,
        )


class GoogleProvider(AuthorizationCodeProvider):
    async def _identity(self, http: httpx.AsyncClient, access_token: str) -> ProviderIdentity:
        info = await self._get(http, self.config.userinfo_url, access_token)
        if not isinstance(info, dict) or "sub" not in info:
            raise OAuthProviderError("google answered without a subject")
        return ProviderIdentity(
            provider="google",
            provider_user_id=str(info["sub"]),
            email=str(info["email"]) if info.get("email") else None,
            email_verified=info.get("email_verified") in (True, "true"),
            name=str(info["name"]) if info.get("name") else None,
        )


def provider_for(settings: Settings, name: str) -> OAuthProvider:
    """The configured provider ``name`` (404 ``oauth_provider_not_configured`` otherwise)."""
    if name == "github" and settings.github_client_id and settings.github_client_secret:
        return GitHubProvider(
            ProviderConfig(
                name="github",
                client_id=settings.github_client_id,
                client_secret=settings.github_client_secret.get_secret_value(),
                authorize_url=settings.github_authorize_url,
                token_url=settings.github_token_url,
                userinfo_url=settings.github_userinfo_url,
                emails_url=settings.github_emails_url,
                scope="read:user user:email",
            )
        )
    if name == "google" and settings.google_client_id and settings.google_client_secret:
        return GoogleProvider(
            ProviderConfig(
                name="google",
                client_id=settings.google_client_id,
                client_secret=settings.google_client_secret.get_secret_value(),
                authorize_url=settings.google_authorize_url,
                token_url=settings.google_token_url,
                userinfo_url=settings.google_userinfo_url,
                emails_url=None,
                scope="openid email profile",
            )
        )
    raise OAuthProviderNotConfigured(f"OAuth login with {name!r} is not configured here")


def redirect_uri(settings: Settings, provider: str) -> str:
    return f"{settings.base_url.rstrip('/')}/api/v1/auth/oauth/{provider}/callback"


def _hash_state(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def safe_redirect_target(value: str | None) -> str:
    """A path on this site only: ``/dashboard``, never ``//evil.example`` or a URL."""
    if not value:
        return "/dashboard"
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        raise BadRequest("redirect_to must be a path on this site", code="invalid_redirect")
    return value


@dataclass(frozen=True, slots=True)
class StartedLogin:
    url: str
    state: str


@dataclass(frozen=True, slots=True)
class PendingLogin:
    provider: str
    code_verifier: str
    mode: str
    redirect_to: str


@dataclass(frozen=True, slots=True)
class OAuthLogin:
    user: User
    created: bool
    linked: bool
    #: An identity to link once the account's second factor holds (the account, found
    #: by the provider's verified email, has 2FA on); None when nothing waits.
    pending_link: ProviderIdentity | None = None


class OAuthService:
    async def begin(
        self,
        session: AsyncSession,
        *,
        settings: Settings,
        provider: str,
        mode: str,
        redirect_to: str | None,
        now: datetime,
    ) -> StartedLogin:
        """The provider URL to send the browser to, and the state the browser is to keep
        in the login cookie; the state (hashed) and verifier are kept here."""
        client = provider_for(settings, provider)
        if mode not in MODES:
            raise Unprocessable("mode must be cookie or token")
        target = safe_redirect_target(redirect_to)
        state = secrets.token_urlsafe(32)
        code_verifier = secrets.token_urlsafe(64)
        await repository.oauth_states(session).add(
            OAuthState(
                state_hash=_hash_state(state),
                provider=provider,
                code_verifier=code_verifier,
                mode=mode,
                redirect_to=target,
                created_at=now,
                expires_at=now + STATE_TTL,
            )
        )
        url = client.authorization_url(
            state=state,
            code_verifier=code_verifier,
            redirect_uri=redirect_uri(settings, provider),
        )
        return StartedLogin(url=url, state=state)

    async def take_state(
        self,
        session: AsyncSession,
        *,
        provider: str,
        state: str | None,
        browser_state: str | None,
        now: datetime,
    ) -> PendingLogin:
        """Consume the callback's ``state`` (400 ``invalid_oauth_state`` unless ours, fresh,
        unused and for this provider). ``browser_state`` is the login cookie the browser
        got at authorize: a callback link opened in another browser (login CSRF: an
        attacker's own login completed in the victim's browser) is 400
        ``oauth_state_mismatch``, and the state stays unspent."""
        record = await repository.oauth_states(session).pop(_hash_state(state)) if state else None
        if (
            state is None
            or record is None
            or record.provider != provider
            or record.expires_at <= now
        ):
            raise InvalidOAuthState(
                "this login did not start here, took too long or was already completed; start again"
            )
        if browser_state is None or not hmac.compare_digest(browser_state, state):
            raise OAuthStateMismatch(
                "this login was started in another browser; start it again here"
            )
        return PendingLogin(
            provider=record.provider,
            code_verifier=record.code_verifier,
            mode=record.mode,
            redirect_to=record.redirect_to,
        )

    async def identify(
        self, *, settings: Settings, pending: PendingLogin, code: str | None, error: str | None
    ) -> ProviderIdentity:
        """Exchange the code at the provider and read who logged in (network; no transaction)."""
        if error is not None or not code:
            raise OAuthDenied(f"the provider did not authorize the login ({error or 'no code'})")
        client = provider_for(settings, pending.provider)
        return await client.identify(
            code=code,
            code_verifier=pending.code_verifier,
            redirect_uri=redirect_uri(settings, pending.provider),
        )

    async def complete(
        self, session: AsyncSession, *, identity: ProviderIdentity, now: datetime
    ) -> OAuthLogin:
        """Find, link or create the account of ``identity``.

        A verified account with 2FA on is neither logged in nor linked here: the caller
        asks for its code first (``OAuthLogin.pending_link`` holds an identity still to
        link). An unverified account is taken over (:meth:`_clear_unverified_credentials`)
        and linked at once.
        """
        links = repository.oauth_accounts(session)
        linked = await links.get_by_provider_identity(
            provider=identity.provider, provider_user_id=identity.provider_user_id
        )
        if linked is not None:
            user = await user_service.get_user(session, linked.user_id)
            if user.disabled_at is not None:
                raise Forbidden("this account is disabled", code="account_disabled")
            linked.last_login_at = now
            if not user.totp_enabled:
                user.last_login_at = now
            await session.flush()
            return OAuthLogin(user=user, created=False, linked=False)
        if identity.email is None or not identity.email_verified:
            raise OAuthEmailUnverified(
                f"{identity.provider} did not confirm a verified email for this account; "
                "verify one there, or register with a password"
            )
        # Locked: a password login or refresh of this account waits for the link (and
        # any clearing below) to commit, and then finds its credentials void.
        user_or_none = await user_service.get_user_by_email(
            session, identity.email, for_update=True
        )
        created = user_or_none is None
        if user_or_none is None:
            tenancy = await user_service.register(
                session,
                email=identity.email,
                password=None,
                name=identity.name,
                email_verified=True,
                now=now,
            )
            user = tenancy.user
        else:
            user = user_or_none
            if user.disabled_at is not None:
                raise Forbidden("this account is disabled", code="account_disabled")
            if not user.email_verified:
                await self._clear_unverified_credentials(
                    session, user=user, identity=identity, now=now
                )
            elif user.totp_enabled:
                return OAuthLogin(user=user, created=False, linked=False, pending_link=identity)
        await self.link(session, user=user, identity=identity, created=created, now=now)
        user.last_login_at = now
        await session.flush()
        return OAuthLogin(user=user, created=created, linked=True)

    async def _clear_unverified_credentials(
        self, session: AsyncSession, *, user: User, identity: ProviderIdentity, now: datetime
    ) -> None:
        """The provider vouches that ``identity`` owns the mailbox of ``user``, an account
        that never proved it (registered with a password): the mailbox owner takes the
        account over, and whatever whoever registered it holds stops working.

        In this transaction: the password is cleared, every token login and dashboard
        session is revoked, every API key the user created is revoked, and TOTP is turned
        off (it was set up by the registrant; the mailbox owner could not give its code).
        Audited as ``user.unverified_credentials_cleared``, by the OAuth login.
        """
        actor = f"oauth:{identity.provider}:{identity.provider_user_id}"
        had_password = user.password_hash is not None
        user.password_hash = None
        totp_disabled = await two_factor_service.turn_off(session, user=user)
        logins = await revoke_every_login(session, user_id=user.id, now=now)
        keys = await api_key_service.revoke_created_by(
            session,
            user_id=user.id,
            reason="unverified_credentials_cleared",
            actor=actor,
            now=now,
        )
        membership = await membership_service.default_membership(session, user.id)
        audit_service.record(
            session,
            action="user.unverified_credentials_cleared",
            target=user.id,
            organization_id=membership.organization_id,
            actor=actor,
            details={
                "provider": identity.provider,
                "password_cleared": had_password,
                "totp_disabled": totp_disabled,
                "logins_revoked": logins.families,
                "sessions_revoked": logins.sessions,
                "api_keys_revoked": len(keys),
            },
            occurred_at=now,
        )
        log.warning(
            "oauth.unverified_credentials_cleared",
            user_id=user.id,
            provider=identity.provider,
            api_keys_revoked=len(keys),
        )
        await session.flush()

    async def link(
        self,
        session: AsyncSession,
        *,
        user: User,
        identity: ProviderIdentity,
        now: datetime,
        created: bool = False,
    ) -> None:
        """Link ``identity`` (whose verified email is the user's) to ``user``.

        Linked meanwhile to this user: nothing to do; to another one: 409
        ``oauth_link_refused`` (two logins raced for one provider identity).
        """
        links = repository.oauth_accounts(session)
        existing = await links.get_by_provider_identity(
            provider=identity.provider, provider_user_id=identity.provider_user_id
        )
        if existing is not None:
            if existing.user_id != user.id:
                raise OAuthLinkRefused(
                    f"this {identity.provider} identity is linked to another account"
                )
            existing.last_login_at = now
            await session.flush()
            return
        await links.add(
            OAuthAccount(
                id=new_id("oac"),
                provider=identity.provider,
                provider_user_id=identity.provider_user_id,
                user_id=user.id,
                email=identity.email,
                created_at=now,
                last_login_at=now,
            )
        )
        if not user.email_verified:
            # The provider vouched for the mailbox: the same proof as a verification
            # token, so the open invitations to it are accepted the same way.
            user.email_verified = True
            await user_service.accept_invitations_of_verified_email(session, user=user, now=now)
        membership = await membership_service.default_membership(session, user.id)
        audit_service.record(
            session,
            action="user.oauth_linked",
            target=user.id,
            organization_id=membership.organization_id,
            actor=f"user:{user.id}",
            details={"provider": identity.provider, "created": created},
            occurred_at=now,
        )
        await session.flush()

    async def purge(self, session: AsyncSession, *, now: datetime) -> int:
        return await repository.oauth_states(session).purge_expired(now=now)


oauth_service = OAuthService()
