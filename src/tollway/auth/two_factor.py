"""TOTP two-factor authentication (RFC 6238 through pyotp) with one-time recovery codes.

Set-up stores a fresh secret, encrypted (Fernet under a key derived from
``TOLLWAY_SECRET_KEY``, see :mod:`tollway.kit.sealing`), without enabling it; enabling
needs a valid code, proving the authenticator app holds the secret, and returns ten
recovery codes that are stored only as HMACs. A code is accepted one step either side
of the clock (phone clocks drift), and never twice: the last accepted time step is
kept. Time is the injected clock's.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.models import User
from tollway.accounts.passwords import verify_password_in_thread
from tollway.accounts.service.members import membership_service
from tollway.accounts.service.users import user_service
from tollway.audit.service import audit_service
from tollway.auth import repository
from tollway.auth.models import RecoveryCode
from tollway.errors import Conflict, Unauthorized, Unprocessable
from tollway.kit.ids import new_id
from tollway.kit.sealing import SealedValueInvalid, SecretBox, keyed_digest

log = structlog.get_logger("tollway.auth.two_factor")

ISSUER = "Tollway"
RECOVERY_CODES = 10
#: Recovery codes: 10 characters of base32 (50 bits), shown as ``abcde-fghij``.
_RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
#: Steps accepted either side of now (30 s each).
VALID_WINDOW = 1


class TotpRequired(Unauthorized):
    code = "totp_required"
    title = "Two-factor code required"


class InvalidTotp(Unauthorized):
    """A wrong code at login: counts as a failed login, so the count must be kept."""

    code = "invalid_totp"
    title = "Invalid two-factor code"
    commit_transaction = True


class InvalidTotpInput(Unprocessable):
    """A wrong code when enabling or disabling 2FA (the caller is already logged in)."""

    code = "invalid_totp"
    title = "Invalid two-factor code"


@dataclass(frozen=True, slots=True)
class TotpSetup:
    secret: str
    otpauth_uri: str


def _normalize_recovery_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def is_totp_shape(code: str) -> bool:
    stripped = "".join(code.split())
    return len(stripped) == 6 and stripped.isdigit()


class TwoFactorService:
    def _box(self, secret_key: str) -> SecretBox:
        return SecretBox(secret_key, purpose="totp-secret")

    def _recovery_hash(self, secret_key: str, code: str) -> str:
        return keyed_digest(secret_key, _normalize_recovery_code(code), purpose="recovery-code")

    async def setup(self, session: AsyncSession, *, user_id: str, secret_key: str) -> TotpSetup:
        """A new secret for the user's authenticator app; 2FA is not on until enabled."""
        user = await user_service.get_user(session, user_id)
        if user.totp_enabled:
            raise Conflict(
                "two-factor authentication is already on; disable it first",
                code="totp_already_enabled",
            )
        secret = pyotp.random_base32()
        user.totp_secret = self._box(secret_key).seal(secret)
        user.totp_last_step = None
        await session.flush()
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
        return TotpSetup(secret=secret, otpauth_uri=uri)

    async def enable(
        self, session: AsyncSession, *, user_id: str, code: str, secret_key: str, now: datetime
    ) -> list[str]:
        """Turn 2FA on with a valid code; answers the recovery codes (shown only now)."""
        user = await user_service.get_user(session, user_id)
        if user.totp_enabled:
            raise Conflict("two-factor authentication is already on", code="totp_already_enabled")
        if user.totp_secret is None:
            raise Conflict("call /auth/2fa/setup first", code="totp_not_set_up")
        if not self._accept_totp(user, code, secret_key=secret_key, now=now):
            raise InvalidTotpInput("the code is wrong or expired; try the current one")
        user.totp_enabled = True
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
        recovery = repository.recovery_codes(session)
        await recovery.delete_for_user(user.id)
        for code_value in codes:
            session.add(
                RecoveryCode(
                    id=new_id("rcv"),
                    user_id=user.id,
                    code_hash=self._recovery_hash(secret_key, code_value),
                    created_at=now,
                )
            )
        await session.flush()
        await self._audit(session, user, "user.2fa_enabled", now=now)
        return codes

    async def disable(
        self,
        session: AsyncSession,
        *,
        user_id: str,
        code: str | None,
        password: str | None,
        secret_key: str,
        now: datetime,
    ) -> User:
        """Turn 2FA off, proven by a current code, a recovery code or the password."""
        user = await user_service.get_user(session, user_id)
        if not user.totp_enabled:
            raise Conflict("two-factor authentication is not on", code="totp_not_enabled")
        if code is None and password is None:
            raise Unprocessable("send a code, a recovery code or the password", code="totp_proof")
        proven = False
        if code is not None:
            proven = await self._accept_code(session, user, code, secret_key=secret_key, now=now)
        if not proven and password is not None:
            proven, _ = await verify_password_in_thread(password, user.password_hash)
        if not proven:
            raise InvalidTotpInput("the code or password is wrong")
        await self.turn_off(session, user=user)
        await self._audit(session, user, "user.2fa_disabled", now=now)
        return user

    async def reset(self, session: AsyncSession, *, user_id: str, now: datetime) -> User:
        """The operator turns 2FA off for a user who lost both app and recovery codes
        (``tollway admin reset-2fa``); no proof asked, so it is audited as such."""
        user = await user_service.get_user(session, user_id)
        await self.turn_off(session, user=user)
        await self._audit(session, user, "user.2fa_reset", now=now)
        return user

    async def turn_off(self, session: AsyncSession, *, user: User) -> bool:
        """Forget the user's TOTP secret and recovery codes, without proof and without
        an audit entry (the caller proves and audits); answers whether 2FA was on."""
        was_on = user.totp_enabled
        user.totp_enabled = False
        user.totp_secret = None
        user.totp_last_step = None
        await repository.recovery_codes(session).delete_for_user(user.id)
        await session.flush()
        return was_on

    async def check_login(
        self,
        session: AsyncSession,
        *,
        user: User,
        code: str | None,
        secret_key: str,
        now: datetime,
    ) -> bool:
        """Whether the login's second factor holds (a TOTP code or an unused recovery code).

        Raises 401 ``totp_required`` when no code was sent; answers False for a wrong one
        (the caller counts it as a failed login).
        """
        if code is None or not code.strip():
            raise TotpRequired("this account uses two-factor authentication; send totp_code")
        return await self._accept_code(session, user, code, secret_key=secret_key, now=now)

    async def remaining_recovery_codes(self, session: AsyncSession, *, user_id: str) -> int:
        return await repository.recovery_codes(session).count_unused(user_id)

    async def _accept_code(
        self, session: AsyncSession, user: User, code: str, *, secret_key: str, now: datetime
    ) -> bool:
        if is_totp_shape(code):
            return self._accept_totp(user, code, secret_key=secret_key, now=now)
        record = await repository.recovery_codes(session).get_unused(
            user_id=user.id, code_hash=self._recovery_hash(secret_key, code)
        )
        if record is None:
            return False
        record.used_at = now
        await session.flush()
        await self._audit(session, user, "user.2fa_recovery_code_used", now=now)
        return True

    def _accept_totp(self, user: User, code: str, *, secret_key: str, now: datetime) -> bool:
        if user.totp_secret is None:
            return False
        code = "".join(code.split())
        try:
            secret = self._box(secret_key).open(user.totp_secret)
        except SealedValueInvalid:
            # TOLLWAY_SECRET_KEY changed since set-up: no code can be checked any more.
            log.error("two_factor.secret_unreadable", user_id=user.id)
            return False
        totp = pyotp.TOTP(secret)
        current = totp.timecode(now)
        for offset in range(-VALID_WINDOW, VALID_WINDOW + 1):
            step = current + offset
            if user.totp_last_step is not None and step <= user.totp_last_step:
                continue
            # Bytes: compare_digest refuses str with non-ASCII characters (a 500).
            if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()):
                user.totp_last_step = step
                return True
        return False

    async def _audit(
        self, session: AsyncSession, user: User, action: str, *, now: datetime
    ) -> None:
        membership = await membership_service.default_membership(session, user.id)
        audit_service.record(
            session,
            action=action,
            target=user.id,
            organization_id=membership.organization_id,
            actor="system" if action == "user.2fa_reset" else f"user:{user.id}",
            occurred_at=now,
        )


two_factor_service = TwoFactorService()
