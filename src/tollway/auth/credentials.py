"""A person's own credentials: changing the password, resetting a forgotten one, and
proving the mailbox (email verification).

Tollway sends no email. Password reset and email verification hand a one-time token
to the operator's mailer through an outbox event, as invitations do: ``twp_`` (reset)
or ``twv_`` (verification) + 256 random bits, of which only the SHA-256 is kept (in
``user_tokens``). A token works once, for its purpose only, until it expires; a newer
token of the same purpose replaces the user's open ones. These events carry a
credential, so they are published without an organization: they are for the
operator's mailer, never for an organization's webhooks.

Password hashing (tens to hundreds of milliseconds) runs before the write transaction
opens, as at login; the ``look_up_*`` steps are the short reads that precede it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.models import Membership, User
from tollway.accounts.passwords import (
    check_policy,
    hash_password_in_thread,
    verify_password_in_thread,
)
from tollway.accounts.service.records import normalize_email
from tollway.accounts.service.users import user_service
from tollway.audit.service import audit_service
from tollway.auth import repository
from tollway.auth.models import UserToken
from tollway.auth.principal import Principal
from tollway.auth.revocation import RevokedLogins, current_login, revoke_every_login
from tollway.auth.service import InvalidCredentials, PasswordCheck, throttle_policy
from tollway.auth.throttle import (
    ThrottlePolicy,
    account_key,
    address_key,
    login_throttle_service,
    scoped_key,
    throttle_keys,
)
from tollway.config import Settings, page_link
from tollway.errors import BadRequest, Conflict, RateLimited
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox

PASSWORD_RESET = "password_reset"  # noqa: S105 - a token purpose, not a secret
EMAIL_VERIFICATION = "email_verification"
# Not ``twr_``: refresh tokens carry that prefix, and a prefix should tell what leaked.
RESET_TOKEN_PREFIX = "twp_"  # noqa: S105 - a visible prefix, not a secret
VERIFICATION_TOKEN_PREFIX = "twv_"  # noqa: S105 - a visible prefix, not a secret
RESET_TOKEN_TTL = timedelta(hours=1)
VERIFICATION_TOKEN_TTL = timedelta(hours=24)
#: The dashboard pages the links open; they complete the step through the API.
PASSWORD_RESET_PAGE = "password-reset"  # noqa: S105 - a page, not a secret
EMAIL_VERIFICATION_PAGE = "verify-email"
#: Used and expired tokens stay this long after their expiry (for support), then the
#: sweep ``auth.purge_expired`` deletes them.
TOKEN_RETENTION = timedelta(days=7)


class InvalidResetToken(BadRequest):
    code = "invalid_reset_token"
    title = "Unknown, used or expired password reset token"


class InvalidVerificationToken(BadRequest):
    code = "invalid_verification_token"
    title = "Unknown, used or expired email verification token"


class EmailAlreadyVerified(Conflict):
    code = "email_already_verified"
    title = "Email already verified"


class EmailTokenThrottled(RateLimited):
    code = "email_token_throttled"
    title = "Too many email requests"


def hash_user_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def email_token_policy(settings: Settings, *, per_address: bool = False) -> ThrottlePolicy:
    return ThrottlePolicy(
        max_failures=(
            settings.email_token_max_requests_per_address
            if per_address
            else settings.email_token_max_requests
        ),
        window=timedelta(seconds=settings.email_token_window_seconds),
        first_lockout=timedelta(seconds=settings.email_token_lockout_seconds),
    )


@dataclass(frozen=True, slots=True)
class PasswordChangeLookup:
    """What a password change reads before hashing: the stored hash to check against."""

    user_id: str
    password_hash: str | None


@dataclass(frozen=True, slots=True)
class EmailVerified:
    user: User
    #: Memberships made from open invitations to the verified email.
    joined: list[Membership]


def _usable(record: UserToken | None, *, purpose: str, now: datetime) -> bool:
    return (
        record is not None
        and record.purpose == purpose
        and record.used_at is None
        and record.expires_at > now
    )


class CredentialService:
    # -- change password (logged in) ------------------------------------------------

    async def look_up_password_change(
        self,
        session: AsyncSession,
        *,
        settings: Settings,
        user_id: str,
        new_password: str,
        client_address: str | None,
        now: datetime,
    ) -> PasswordChangeLookup:
        """A short write before any hashing: refuse a new password the policy refuses
        (422 ``weak_password``), then reserve the attempt on the account and address as
        a login does (429 ``login_throttled`` when locked or full)."""
        user = await user_service.get_user(session, user_id)
        check_policy(new_password, email=user.email)
        await login_throttle_service.reserve(
            session,
            keys=throttle_keys(email=user.email, client_address=client_address),
            policy=throttle_policy(settings),
            now=now,
        )
        return PasswordChangeLookup(user_id=user.id, password_hash=user.password_hash)

    async def change_password(
        self,
        session: AsyncSession,
        *,
        settings: Settings,
        principal: Principal,
        current_password: str,
        check: PasswordCheck,
        new_password: str,
        new_password_hash: str | None,
        client_address: str | None,
        now: datetime,
    ) -> RevokedLogins:
        """Set a new password, proven by the current one (checked in ``check``, outside
        the transaction). A wrong one is 401 ``invalid_credentials`` and a failed login for
        the throttle. Every other login and dashboard session of the user is revoked; the
        caller's own (``principal``) stays."""
        assert principal.user_id is not None
        # Locked, as at login: a password changed or cleared meanwhile is seen here.
        user = await user_service.get_user(session, principal.user_id, for_update=True)
        valid = check.valid
        if user.password_hash != check.password_hash:
            valid, _ = await verify_password_in_thread(current_password, user.password_hash)
        if not valid:
            await login_throttle_service.record_failure(
                session,
                keys=throttle_keys(email=user.email, client_address=client_address),
                policy=throttle_policy(settings),
                now=now,
                user_id=user.id,
                reserved=True,
            )
            raise InvalidCredentials("the current password is wrong")
        user.password_hash = new_password_hash or await hash_password_in_thread(new_password)
        await login_throttle_service.record_success(
            session, email=user.email, reserved_address=client_address
        )
        keep_family, keep_session = await current_login(session, principal)
        logins = await revoke_every_login(
            session, user_id=user.id, now=now, keep_family=keep_family, keep_session=keep_session
        )
        await _announce_new_password(
            session,
            user=user,
            action="user.password_changed",
            moment="changed_at",
            logins=logins,
            now=now,
        )
        return logins

    # -- password reset (forgotten password) -----------------------------------------

    async def request_password_reset(
        self,
        session: AsyncSession,
        *,
        settings: Settings,
        email: str,
        client_address: str | None,
        now: datetime,
    ) -> None:
        """Send a reset token to the account with ``email``, if there is one; the caller
        learns nothing either way. Counted per email and per client address (429
        ``email_token_throttled``), whether the account exists or not."""
        email = normalize_email(email)
        counted = [(scoped_key(PASSWORD_RESET, account_key(email)), email_token_policy(settings))]
        if client_address:
            counted.append(
                (
                    scoped_key(PASSWORD_RESET, address_key(client_address)),
                    email_token_policy(settings, per_address=True),
                )
            )
        await login_throttle_service.check(
            session,
            keys=[key for key, _ in counted],
            now=now,
            error=EmailTokenThrottled,
            detail="too many password reset requests; try again later",
        )
        for key, policy in counted:
            # One key at a time: the email and the address have limits of their own.
            await login_throttle_service.record_failure(
                session, keys=[key], policy=policy, now=now, action="auth.password_reset_locked"
            )
        user = await user_service.get_user_by_email(session, email)
        token = RESET_TOKEN_PREFIX + secrets.token_urlsafe(32)
        if user is None or user.disabled_at is not None:
            # The statement a real request runs first, matching nothing: an unknown email
            # costs about as much as a known one (minus two inserts in the same commit).
            await repository.user_tokens(session).delete_open(
                user_id="", purpose=PASSWORD_RESET, now=now
            )
            hash_user_token(token)
            return
        await self._issue(
            session,
            user=user,
            token=token,
            purpose=PASSWORD_RESET,
            ttl=RESET_TOKEN_TTL,
            event_type="user.password_reset_requested",
            url_field="reset_url",
            url=page_link(settings.pages_base_url, PASSWORD_RESET_PAGE, token=token),
            now=now,
        )

    async def look_up_password_reset(
        self, session: AsyncSession, *, token: str, password: str, now: datetime
    ) -> None:
        """Read-only, before hashing: 400 ``invalid_reset_token`` for a token unknown,
        used, expired or of another purpose; 422 ``weak_password`` (the token stays
        usable)."""
        record = await repository.user_tokens(session).get_by_hash(hash_user_token(token))
        if record is None or not _usable(record, purpose=PASSWORD_RESET, now=now):
            raise InvalidResetToken(
                "this reset link is unknown, used or expired; ask for a new one"
            )
        user = await user_service.get_user(session, record.user_id)
        check_policy(password, email=user.email)

    async def reset_password(
        self, session: AsyncSession, *, token: str, password_hash: str, now: datetime
    ) -> RevokedLogins:
        """Spend the reset token and set the password (hashed by the caller). Every login
        and dashboard session of the user is revoked and the account's failed-login count
        is cleared; 2FA stays on."""
        tokens = repository.user_tokens(session)
        token_hash = hash_user_token(token)
        found = await tokens.get_by_hash(token_hash)
        if found is None:
            raise InvalidResetToken(
                "this reset link is unknown, used or expired; ask for a new one"
            )
        # Lock order users -> tokens, as at login and refresh.
        user = await user_service.get_user(session, found.user_id, for_update=True)
        record = await tokens.get_by_hash(token_hash, for_update=True)
        if record is None or not _usable(record, purpose=PASSWORD_RESET, now=now):
            raise InvalidResetToken(
                "this reset link is unknown, used or expired; ask for a new one"
            )
        record.used_at = now
        user.password_hash = password_hash
        logins = await revoke_every_login(session, user_id=user.id, now=now)
        await login_throttle_service.unlock(session, keys=[account_key(user.email)])
        await _announce_new_password(
            session,
            user=user,
            action="user.password_reset",
            moment="reset_at",
            logins=logins,
            now=now,
        )
        return logins

    # -- email verification ----------------------------------------------------------

    async def request_email_verification(
        self, session: AsyncSession, *, settings: Settings, user_id: str, now: datetime
    ) -> None:
        """Send a verification token to the user's email. 409 ``email_already_verified``;
        429 ``email_token_throttled`` after too many requests for the account."""
        user = await user_service.get_user(session, user_id)
        if user.email_verified:
            raise EmailAlreadyVerified("this email address is verified already")
        key = scoped_key(EMAIL_VERIFICATION, account_key(user.email))
        await login_throttle_service.check(
            session,
            keys=[key],
            now=now,
            error=EmailTokenThrottled,
            detail="too many verification emails requested; try again later",
        )
        await login_throttle_service.record_failure(
            session,
            keys=[key],
            policy=email_token_policy(settings),
            now=now,
            user_id=user.id,
            action="auth.email_verification_locked",
        )
        token = VERIFICATION_TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self._issue(
            session,
            user=user,
            token=token,
            purpose=EMAIL_VERIFICATION,
            ttl=VERIFICATION_TOKEN_TTL,
            event_type="user.email_verification_requested",
            url_field="verify_url",
            url=page_link(settings.pages_base_url, EMAIL_VERIFICATION_PAGE, token=token),
            now=now,
        )

    async def verify_email(
        self, session: AsyncSession, *, token: str, user_id: str, now: datetime
    ) -> EmailVerified:
        """Mark the email of ``user_id`` verified: the token (which only the mailbox
        received) and the account's login together prove that the account's owner reads
        it. Open invitations to that email become memberships, as when an OAuth provider
        vouches for it. 400 ``invalid_verification_token`` for a token unknown, used,
        expired, of another purpose, or of another account: someone who registered a
        stranger's address cannot have it verified by the stranger's careless click."""
        tokens = repository.user_tokens(session)
        token_hash = hash_user_token(token)
        found = await tokens.get_by_hash(token_hash)
        if found is None or found.user_id != user_id:
            raise InvalidVerificationToken("this verification link is unknown, used or expired")
        user = await user_service.get_user(session, found.user_id, for_update=True)
        record = await tokens.get_by_hash(token_hash, for_update=True)
        if record is None or not _usable(record, purpose=EMAIL_VERIFICATION, now=now):
            raise InvalidVerificationToken("this verification link is unknown, used or expired")
        record.used_at = now
        if user.email_verified:
            # Verified meanwhile (an OAuth login): nothing more to do.
            await session.flush()
            return EmailVerified(user=user, joined=[])
        user.email_verified = True
        await session.flush()
        joined = await user_service.accept_invitations_of_verified_email(
            session, user=user, now=now
        )
        audit_service.record(
            session,
            action="user.email_verified",
            target=user.id,
            actor=f"user:{user.id}",
            details={"via": "token", "invitations_accepted": len(joined)},
            occurred_at=now,
        )
        await outbox.publish(
            session,
            "user.email_verified",
            {"user_id": user.id, "email": user.email},
            occurred_at=now,
        )
        return EmailVerified(user=user, joined=joined)

    async def purge(self, session: AsyncSession, *, now: datetime) -> int:
        """Delete tokens expired more than :data:`TOKEN_RETENTION` ago."""
        return await repository.user_tokens(session).purge_expired(
            expired_before=now - TOKEN_RETENTION
        )

    async def _issue(
        self,
        session: AsyncSession,
        *,
        user: User,
        token: str,
        purpose: str,
        ttl: timedelta,
        event_type: str,
        url_field: str,
        url: str,
        now: datetime,
    ) -> None:
        tokens = repository.user_tokens(session)
        await tokens.delete_open(user_id=user.id, purpose=purpose, now=now)
        record = UserToken(
            id=new_id("utk"),
            user_id=user.id,
            purpose=purpose,
            token_hash=hash_user_token(token),
            expires_at=now + ttl,
            created_at=now,
        )
        await tokens.add(record)
        # The token travels only in this event, to the operator's mailer.
        await outbox.publish(
            session,
            event_type,
            {
                "user_id": user.id,
                "email": user.email,
                "token": token,
                url_field: url,
                "expires_at": record.expires_at.isoformat(),
            },
            occurred_at=now,
        )


credential_service = CredentialService()


async def _announce_new_password(
    session: AsyncSession,
    *,
    user: User,
    action: str,
    moment: str,
    logins: RevokedLogins,
    now: datetime,
) -> None:
    """Audit a new password and tell the operator's mailer (outbox event ``action``
    with the time as ``moment`` and what was logged out)."""
    details = {"logins_revoked": logins.families, "sessions_revoked": logins.sessions}
    audit_service.record(
        session,
        action=action,
        target=user.id,
        actor=f"user:{user.id}",
        details=details,
        occurred_at=now,
    )
    await outbox.publish(
        session,
        action,
        {"user_id": user.id, "email": user.email, moment: now.isoformat(), **details},
        occurred_at=now,
    )
