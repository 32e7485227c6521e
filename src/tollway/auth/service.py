"""Sessions: registration, login, refresh-token rotation with reuse detection, logout."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.models import Membership, Organization, User
from tollway.accounts.passwords import verify_password_in_thread
from tollway.accounts.service.members import membership_service
from tollway.accounts.service.organizations import organization_service
from tollway.accounts.service.users import user_service
from tollway.audit.service import audit_service
from tollway.auth import repository
from tollway.auth.models import RefreshToken, TwoFactorChallenge
from tollway.auth.oauth import ProviderIdentity, oauth_service
from tollway.auth.principal import Principal
from tollway.auth.revocation import revoke_family
from tollway.auth.scopes import ROLE_SCOPES
from tollway.auth.sessions import OpenedSession, dashboard_session_service
from tollway.auth.throttle import ThrottlePolicy, login_throttle_service, throttle_keys
from tollway.auth.tokens import (
    ACCESS_TOKEN_TTL,
    InvalidToken,
    TokenExpired,
    issue_access_token,
)
from tollway.auth.two_factor import InvalidTotp, two_factor_service
from tollway.config import Settings
from tollway.errors import Forbidden, NotFound, Unauthorized
from tollway.kit.ids import new_id
from tollway.kit.signing import KeyRing
from tollway.plans.service.assignments import plans_service

REFRESH_TOKEN_TTL = timedelta(days=30)
REFRESH_TOKEN_PREFIX = "twr_"  # noqa: S105 - a visible prefix, not a secret
#: How long a login that passed its first factor waits for the TOTP code.
CHALLENGE_TTL = timedelta(minutes=5)
CHALLENGE_PREFIX = "tw2_"


class InvalidCredentials(Unauthorized):
    """Wrong email or password. The failure was counted for throttling, and that count
    must survive the error answer."""

    code = "invalid_credentials"
    title = "Invalid credentials"
    commit_transaction = True


class RefreshTokenReused(InvalidToken):
    """A rotated refresh token came back: someone else holds a copy. The family is
    revoked, and that revocation must survive the error answer."""

    code = "refresh_token_reused"
    commit_transaction = True


class InvalidChallenge(Unauthorized):
    code = "invalid_challenge"
    title = "Unknown or expired two-factor challenge"


@dataclass(frozen=True, slots=True)
class IssuedSession:
    user: User
    organization: Organization
    role: str
    tier: str
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """What a login presents: the credentials and where they come from."""

    email: str
    password: str
    totp_code: str | None = None
    client_address: str | None = None
    organization_id: str | None = None


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """The verdict on a login's password, reached outside any transaction (hashing takes
    tens to hundreds of milliseconds; no database lock or connection waits for it)."""

    user_id: str | None
    #: The stored hash that was checked; if it changed meanwhile, the check is redone.
    password_hash: str | None
    valid: bool
    upgraded_hash: str | None


@dataclass(frozen=True, slots=True)
class PendingSecondFactor:
    """A login that passed its first factor and waits for the TOTP code: the client
    gets ``challenge`` (once; only its hash is kept) to send with the code."""

    challenge: str
    mode: str
    redirect_to: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class CompletedChallenge:
    """What completing a challenge answers: what its login would have answered at once."""

    login: IssuedSession | OpenedSession
    redirect_to: str


def throttle_policy(settings: Settings) -> ThrottlePolicy:
    return ThrottlePolicy(
        max_failures=settings.login_max_failures,
        window=timedelta(seconds=settings.login_window_seconds),
        first_lockout=timedelta(seconds=settings.login_lockout_seconds),
    )


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_challenge(challenge: str) -> str:
    return hashlib.sha256(challenge.encode()).hexdigest()


async def tier_of(
    session: AsyncSession, organization_id: str, *, now: datetime | None = None
) -> str:
    """The organization's plan id (the default plan until one is set). Tokens read it
    exactly; with ``now`` it comes through the plans' one-second cache (``/auth/me``)."""
    if now is not None:
        return await plans_service.plan_id(session, organization_id, now=now)
    return (await plans_service.plan_of(session, organization_id)).plan_id


class AuthService:
    async def register(
        self,
        session: AsyncSession,
        *,
        keys: KeyRing,
        email: str,
        password: str,
        name: str | None,
        organization_name: str | None,
        now: datetime,
    ) -> IssuedSession:
        tenancy = await user_service.register(
            session,
            email=email,
            password=password,
            name=name,
            organization_name=organization_name,
            now=now,
        )
        return await self.issue(
            session,
            keys=keys,
            user=tenancy.user,
            membership=tenancy.membership,
            organization=tenancy.organization,
            now=now,
        )

    async def login(
        self,
        session: AsyncSession,
        *,
        keys: KeyRing,
        settings: Settings,
        attempt: LoginAttempt,
        check: PasswordCheck,
        now: datetime,
    ) -> IssuedSession:
        """Password (and TOTP code, when on) for an access and a refresh token."""
        user = await self.verify_login(
            session, settings=settings, attempt=attempt, check=check, now=now
        )
        membership = await self._membership(
            session, user=user, organization_id=attempt.organization_id
        )
        organization = await organization_service.get_organization(
            session, membership.organization_id
        )
        return await self.issue(
            session, keys=keys, user=user, membership=membership, organization=organization, now=now
        )

    async def open_dashboard_session(
        self,
        session: AsyncSession,
        *,
        settings: Settings,
        attempt: LoginAttempt,
        check: PasswordCheck,
        now: datetime,
    ) -> OpenedSession:
        """Password (and TOTP code, when on) for a dashboard cookie session."""
        user = await self.verify_login(
            session, settings=settings, attempt=attempt, check=check, now=now
        )
        membership = await self._membership(
            session, user=user, organization_id=attempt.organization_id
        )
        return await dashboard_session_service.open(
            session,
            user=user,
            membership=membership,
            ttl=timedelta(seconds=settings.session_ttl_seconds),
            now=now,
        )

    async def oauth_login(
        self,
        session: AsyncSession,
        *,
        keys: KeyRing,
        settings: Settings,
        identity: ProviderIdentity,
        mode: str,
        redirect_to: str,
        now: datetime,
    ) -> IssuedSession | OpenedSession | PendingSecondFactor:
        """Log the provider identity's account in (linking or creating it): a dashboard
        session for ``mode`` ``cookie``, a token pair for ``token``.

        The provider stands in for the password only: an account with 2FA on gets a
        second-factor challenge instead, completed by :meth:`complete_challenge`.
        """
        login = await oauth_service.complete(session, identity=identity, now=now)
        if login.user.totp_enabled:
            return await self._open_challenge(
                session,
                user=login.user,
                via=f"oauth:{identity.provider}",
                mode=mode,
                redirect_to=redirect_to,
                pending_link=login.pending_link,
                now=now,
            )
        return await self._log_in(
            session, keys=keys, settings=settings, user=login.user, mode=mode, now=now
        )

    async def _log_in(
        self,
        session: AsyncSession,
        *,
        keys: KeyRing,
        settings: Settings,
        user: User,
        mode: str,
        now: datetime,
    ) -> IssuedSession | OpenedSession:
        """The user's default organization: a dashboard session (``cookie``) or tokens."""
        membership = await membership_service.default_membership(session, user.id)
        if mode == "cookie":
            return await dashboard_session_service.open(
                session,
                user=user,
                membership=membership,
                ttl=timedelta(seconds=settings.session_ttl_seconds),
                now=now,
            )
        organization = await organization_service.get_organization(
            session, membership.organization_id
        )
        return await self.issue(
            session,
            keys=keys,
            user=user,
            membership=membership,
            organization=organization,
            now=now,
        )

    async def _open_challenge(
        self,
        session: AsyncSession,
        *,
        user: User,
        via: str,
        mode: str,
        redirect_to: str,
        pending_link: ProviderIdentity | None,
        now: datetime,
    ) -> PendingSecondFactor:
        challenge = CHALLENGE_PREFIX + secrets.token_urlsafe(32)
        await repository.two_factor_challenges(session).add(
            TwoFactorChallenge(
                challenge_hash=hash_challenge(challenge),
                user_id=user.id,
                via=via,
                mode=mode,
                redirect_to=redirect_to,
                link_provider=pending_link.provider if pending_link else None,
                link_provider_user_id=pending_link.provider_user_id if pending_link else None,
                link_email=pending_link.email if pending_link else None,
                created_at=now,
                expires_at=now + CHALLENGE_TTL,
            )
        )
        return PendingSecondFactor(
            challenge=challenge,
            mode=mode,
            redirect_to=redirect_to,
            expires_in=int(CHALLENGE_TTL.total_seconds()),
        )

    async def complete_challenge(
        self,
        session: AsyncSession,
        *,
        keys: KeyRing,
        settings: Settings,
        challenge: str | None,
        code: str | None,
        client_address: str | None,
        now: datetime,
    ) -> CompletedChallenge:
        """The second factor of a pending login: with the right TOTP or recovery code the
        challenge is spent and the login answers as it would have without 2FA.

        401 ``invalid_challenge`` for a challenge not issued here, spent or expired;
        401 ``totp_required`` without a code; 401 ``invalid_totp`` for a wrong one,
        counted by the login throttle like a wrong code at password login (the
        challenge stays usable until it expires); 429 ``login_throttled`` while the
        account or address is locked.
        """
        challenges = repository.two_factor_challenges(session)
        record = await challenges.get_by_hash(hash_challenge(challenge)) if challenge else None
        if record is None or record.expires_at <= now:
            raise InvalidChallenge(
                "this two-factor challenge is unknown, used or expired; log in again"
            )
        user = await user_service.get_user(session, record.user_id)
        counted = throttle_keys(email=user.email, client_address=client_address)
        # The code is compared with the rows locked: concurrent guesses wait their turn
        # and at most the limit of them is compared in a window.
        await login_throttle_service.reserve(
            session, keys=counted, policy=throttle_policy(settings), now=now
        )
        if user.disabled_at is not None:
            raise Forbidden("this account is disabled", code="account_disabled")
        if not user.totp_enabled:
            # 2FA was turned off since (an operator's reset): the login starts over.
            raise InvalidChallenge("two-factor authentication is off now; log in again")
        if not await two_factor_service.check_login(
            session, user=user, code=code, secret_key=settings.secret("secret_key"), now=now
        ):
            await login_throttle_service.record_failure(
                session,
                keys=counted,
                policy=throttle_policy(settings),
                now=now,
                user_id=user.id,
                reserved=True,
            )
            raise InvalidTotp("the two-factor code is wrong or was already used")
        await challenges.delete(record)
        await login_throttle_service.record_success(
            session, email=user.email, reserved_address=client_address
        )
        if record.link_provider is not None and record.link_provider_user_id is not None:
            await oauth_service.link(
                session,
                user=user,
                identity=ProviderIdentity(
                    provider=record.link_provider,
                    provider_user_id=record.link_provider_user_id,
                    email=record.link_email,
                    email_verified=True,
                    name=None,
                ),
                now=now,
            )
        user.last_login_at = now
        login = await self._log_in(
            session, keys=keys, settings=settings, user=user, mode=record.mode, now=now
        )
        audit_service.record(
            session,
            action="auth.2fa_challenge_completed",
            target=user.id,
            organization_id=login.organization.id,
            actor=f"user:{user.id}",
            details={"via": record.via, "mode": record.mode},
            occurred_at=now,
        )
        return CompletedChallenge(login=login, redirect_to=record.redirect_to)

    async def look_up_login(
        self, session: AsyncSession, *, attempt: LoginAttempt, settings: Settings, now: datetime
    ) -> tuple[str | None, str | None]:
        """Step one of a login, a short write: reserve the attempt on the account and
        the address, or refuse it (429 ``login_throttled``: locked, or the limit of
        attempts is in flight or failed), before any hashing; answer (user id, stored
        hash) or Nones. Commit it before the hashing."""
        keys = throttle_keys(email=attempt.email, client_address=attempt.client_address)
        await login_throttle_service.reserve(
            session, keys=keys, policy=throttle_policy(settings), now=now
        )
        user = await user_service.get_user_by_email(session, attempt.email)
        return (user.id, user.password_hash) if user is not None else (None, None)

    async def check_password(
        self, *, user_id: str | None, password_hash: str | None, password: str
    ) -> PasswordCheck:
        """Step two, without a session: verify the password (the same work for an unknown
        email, whose hash is None, as for a known one)."""
        valid, upgraded_hash = await verify_password_in_thread(password, password_hash)
        return PasswordCheck(
            user_id=user_id, password_hash=password_hash, valid=valid, upgraded_hash=upgraded_hash
        )

    async def verify_login(
        self,
        session: AsyncSession,
        *,
        settings: Settings,
        attempt: LoginAttempt,
        check: PasswordCheck,
        now: datetime,
    ) -> User:
        """Step three, in the write transaction: the user whose credentials these are, or
        a counted failure.

        A wrong password and a wrong TOTP code both count as failures (the attempt
        reserved in step one; the error keeps its transaction's writes); the password
        hash is upgraded (bcrypt -> argon2id) only once the whole login holds.
        """
        keys = throttle_keys(email=attempt.email, client_address=attempt.client_address)
        # Locked (users before tokens, like the OAuth takeover of an unverified account):
        # a password cleared by a concurrent takeover is seen here, not after tokens
        # were issued on the old one.
        user = await user_service.get_user_by_email(session, attempt.email, for_update=True)
        valid, upgraded_hash = check.valid, check.upgraded_hash
        if user is not None and (
            user.id != check.user_id or user.password_hash != check.password_hash
        ):
            # The account or its password changed since step two: judge again.
            valid, upgraded_hash = await verify_password_in_thread(
                attempt.password, user.password_hash
            )
        if user is None or not valid or user.disabled_at is not None:
            await login_throttle_service.record_failure(
                session,
                keys=keys,
                policy=throttle_policy(settings),
                now=now,
                user_id=user.id if user is not None else None,
                reserved=True,
            )
            raise InvalidCredentials("the email or the password is wrong")
        if user.totp_enabled and not await two_factor_service.check_login(
            session,
            user=user,
            code=attempt.totp_code,
            secret_key=settings.secret("secret_key"),
            now=now,
        ):
            await login_throttle_service.record_failure(
                session,
                keys=keys,
                policy=throttle_policy(settings),
                now=now,
                user_id=user.id,
                reserved=True,
            )
            raise InvalidTotp("the two-factor code is wrong or was already used")
        if upgraded_hash is not None:
            user.password_hash = upgraded_hash
        user.last_login_at = now
        await login_throttle_service.record_success(
            session, email=attempt.email, reserved_address=attempt.client_address
        )
        return user

    async def _membership(
        self, session: AsyncSession, *, user: User, organization_id: str | None
    ) -> Membership:
        if organization_id is None:
            return await membership_service.default_membership(session, user.id)
        membership = await membership_service.get_membership(
            session, user_id=user.id, organization_id=organization_id
        )
        if membership is None:
            raise NotFound("no such organization")
        return membership

    async def issue(
        self,
        session: AsyncSession,
        *,
        keys: KeyRing,
        user: User,
        membership: Membership,
        organization: Organization,
        now: datetime,
        family_id: str | None = None,
    ) -> IssuedSession:
        """A fresh access token and refresh token (a new family unless one is given)."""
        tier = await tier_of(session, organization.id)
        access_token, claims = issue_access_token(
            keys,
            user_id=user.id,
            organization_id=organization.id,
            role=membership.role,
            tier=tier,
            scopes=ROLE_SCOPES[membership.role],
            now=now,
            is_platform_admin=user.is_platform_admin,
        )
        refresh_token = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
        await repository.refresh_tokens(session).add(
            RefreshToken(
                id=new_id("rtk"),
                family_id=family_id or new_id("fam"),
                user_id=user.id,
                organization_id=organization.id,
                token_hash=hash_refresh_token(refresh_token),
                access_token_id=claims.token_id,
                created_at=now,
                expires_at=now + REFRESH_TOKEN_TTL,
            )
        )
        return IssuedSession(
            user=user,
            organization=organization,
            role=membership.role,
            tier=tier,
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=int(ACCESS_TOKEN_TTL.total_seconds()),
        )

    async def refresh(
        self, session: AsyncSession, *, keys: KeyRing, refresh_token: str, now: datetime
    ) -> IssuedSession:
        """Rotate: the presented token is spent and a new pair issued in the same family.

        Presenting a spent token again means it leaked: the whole family (and the
        access tokens it issued) is revoked, and the caller must log in again.
        """
        tokens = repository.refresh_tokens(session)
        token_hash = hash_refresh_token(refresh_token)
        found = await tokens.get_by_hash(token_hash)
        if found is None:
            raise InvalidToken("this refresh token is not valid; log in again")
        # Lock order users -> refresh tokens, as at login and the OAuth takeover: a
        # takeover revoking this user's logins meanwhile is seen below (the token read
        # afresh), and cannot miss the token issued here.
        user = await user_service.get_user(session, found.user_id, for_update=True)
        record = await tokens.get_by_hash(token_hash, for_update=True)
        if record is None or record.revoked_at is not None:
            raise InvalidToken("this refresh token is not valid; log in again")
        if record.used_at is not None:
            await revoke_family(session, record.family_id, now=now)
            audit_service.record(
                session,
                action="auth.refresh_token_reused",
                target=record.user_id,
                organization_id=record.organization_id,
                actor=f"user:{record.user_id}",
                details={"family_id": record.family_id},
                occurred_at=now,
            )
            raise RefreshTokenReused(
                "this refresh token was already used; every session of this login is revoked"
            )
        if record.expires_at <= now:
            raise TokenExpired("the refresh token has expired; log in again")
        record.used_at = now
        membership = await membership_service.get_membership(
            session, user_id=user.id, organization_id=record.organization_id
        )
        if membership is None or user.disabled_at is not None:
            await revoke_family(session, record.family_id, now=now)
            raise InvalidToken("this account can no longer use this organization")
        organization = await organization_service.get_organization(session, record.organization_id)
        return await self.issue(
            session,
            keys=keys,
            user=user,
            membership=membership,
            organization=organization,
            now=now,
            family_id=record.family_id,
        )

    async def logout(self, session: AsyncSession, *, principal: Principal, now: datetime) -> None:
        """Revoke the caller's access token and every refresh token of its login (or,
        called with a dashboard cookie, close that session)."""
        session_id = principal.extra.get("session_id")
        if session_id is not None:
            await dashboard_session_service.close(session, session_id=session_id, now=now)
            return
        if principal.token_id is None:
            raise InvalidToken("log out with the access token of a login, not an API key")
        await repository.revoked_tokens(session).revoke(
            principal.token_id, at=now, expires_at=now + ACCESS_TOKEN_TTL
        )
        family = await repository.refresh_tokens(session).get_by_access_token(principal.token_id)
        if family is not None:
            await revoke_family(session, family, now=now)


auth_service = AuthService()
