"""Login throttling: failed logins per account and per client address.

After ``login_max_failures`` failures of one key within ``login_window_seconds``, the
key is locked for ``login_lockout_seconds``; every repeated lock-out doubles the lock
(up to a day), and a key without failures for a day starts over. Both keys are kept
in the ``login_throttles`` table, so every process (and every restart) sees the same
counts, and time is the injected clock's.

A login (and a two-factor code) first *reserves* its attempt (:meth:`LoginThrottleService.reserve`):
it counts as a failure before the password is hashed, and a success gives it back. So
at most ``login_max_failures`` attempts per key are checked in a window even when many
arrive at once; the rest are refused before any hashing.

Unknown emails count like known ones (the account key is the email, whether an
account exists or not), so throttling tells nothing about which emails exist. A
successful login clears its account's count, never the address's: an attacker who
owns one account cannot wash a guessing address clean by logging into it.

Other actions worth limiting (password-reset and verification emails) count in the
same table under keys of their own scope (:func:`scoped_key`), with their own policy
and error: requesting resets for an address never locks its owner's logins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.auth import repository
from tollway.auth.models import LoginThrottle
from tollway.errors import RateLimited

MAX_LOCKOUT = timedelta(days=1)
#: A key quiet for this long forgets its earlier lock-outs (and the sweep deletes it).
FORGET_AFTER = timedelta(days=1)


class LoginThrottled(RateLimited):
    code = "login_throttled"
    title = "Too many failed logins"


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    first_lockout: timedelta = timedelta(minutes=1)

    def lockout(self, lockouts: int) -> timedelta:
        """The lock after the ``lockouts``-th consecutive lock-out (1, 2, ...)."""
        lockout: timedelta = self.first_lockout * (2 ** min(lockouts - 1, 20))
        return min(lockout, MAX_LOCKOUT)


def account_key(email: str) -> str:
    return f"account:{email.strip().lower()}"


def address_key(client_address: str) -> str:
    return f"address:{client_address}"


def scoped_key(scope: str, key: str) -> str:
    """``key`` (``account:...``, ``address:...``) counted for ``scope`` (``password_reset``)
    instead of for logins."""
    return f"{scope}/{key}"


def throttle_keys(*, email: str, client_address: str | None) -> list[str]:
    keys = [account_key(email)]
    if client_address:
        keys.append(address_key(client_address))
    return keys


class LoginThrottleService:
    async def check(
        self,
        session: AsyncSession,
        *,
        keys: list[str],
        now: datetime,
        error: type[RateLimited] = LoginThrottled,
        detail: str = "too many failed logins; try again later",
    ) -> None:
        """Raise 429 ``error`` (``login_throttled``) while any of ``keys`` is locked."""
        locked_until = [
            row.locked_until
            for row in await repository.login_throttles(session).list_by_keys(keys)
            if row.locked_until is not None and row.locked_until > now
        ]
        if locked_until:
            until = max(locked_until)
            raise error(
                detail,
                retry_after=math.ceil((until - now).total_seconds()),
            )

    async def reserve(
        self,
        session: AsyncSession,
        *,
        keys: list[str],
        policy: ThrottlePolicy,
        now: datetime,
    ) -> None:
        """Count an attempt on every key *before* it is checked (a password hashed, a
        two-factor code compared), so at most ``policy.max_failures`` attempts per key are
        in flight or checked in a window, however many arrive at once: 429
        ``login_throttled`` while a key is locked or its window is full. The attempt stays
        counted as a failure unless :meth:`record_success` releases it; a failure then
        locks through :meth:`record_failure` with ``reserved=True``. Commit it before the
        slow check (or hold the rows' locks through it)."""
        throttles = repository.login_throttles(session)
        # Sorted, so two processes lock the same rows in the same order (no deadlock).
        rows = [await throttles.lock_or_create(key, now=now) for key in sorted(keys)]
        retry_at = [row.locked_until for row in rows if row.locked_until and row.locked_until > now]
        retry_at += [
            row.window_started_at + policy.window
            for row in rows
            if row.failures >= policy.max_failures and now - row.window_started_at < policy.window
        ]
        if retry_at:
            raise LoginThrottled(
                "too many failed logins; try again later",
                retry_after=max(1, math.ceil((max(retry_at) - now).total_seconds())),
            )
        for row in rows:
            self._count(row, policy=policy, now=now)
        await session.flush()

    async def record_failure(
        self,
        session: AsyncSession,
        *,
        keys: list[str],
        policy: ThrottlePolicy,
        now: datetime,
        user_id: str | None = None,
        action: str = "auth.login_locked",
        reserved: bool = False,
    ) -> None:
        """Count one failure on every key (``reserved``: it was counted by
        :meth:`reserve` already); lock (and audit as ``action``) the keys that reach the
        limit."""
        throttles = repository.login_throttles(session)
        # Sorted, so two processes lock the same rows in the same order (no deadlock).
        for key in sorted(keys):
            row = await throttles.lock_or_create(key, now=now)
            if not reserved:
                self._count(row, policy=policy, now=now)
            if row.failures >= policy.max_failures:
                row.lockouts += 1
                row.failures = 0
                row.window_started_at = now
                row.locked_until = now + policy.lockout(row.lockouts)
                scope, _, value = key.partition(":")
                audit_service.record(
                    session,
                    action=action,
                    target=user_id if scope == "account" and user_id else key,
                    actor=f"user:{user_id}" if scope == "account" and user_id else "anonymous",
                    details={
                        "scope": scope,
                        "key": value,
                        "lockouts": row.lockouts,
                        "locked_until": row.locked_until.isoformat(),
                    },
                    occurred_at=now,
                )
        await session.flush()

    def _count(self, row: LoginThrottle, *, policy: ThrottlePolicy, now: datetime) -> None:
        if now - row.last_failure_at >= FORGET_AFTER:
            row.lockouts = 0
        if row.failures == 0 or now - row.window_started_at >= policy.window:
            row.failures = 0
            row.window_started_at = now
        row.failures += 1
        row.last_failure_at = now

    async def record_success(
        self, session: AsyncSession, *, email: str, reserved_address: str | None = None
    ) -> None:
        """A correct login clears the account's count (not the address's, see above);
        the attempt :meth:`reserve` counted on ``reserved_address`` is given back."""
        throttles = repository.login_throttles(session)
        for row in await throttles.list_by_keys(throttle_keys(email=email, client_address=None)):
            row.failures = 0
        if reserved_address:
            for row in await throttles.list_by_keys([address_key(reserved_address)]):
                row.failures = max(0, row.failures - 1)
        await session.flush()

    async def unlock(self, session: AsyncSession, *, keys: list[str]) -> int:
        """Forget the counts and locks of ``keys`` (``tollway admin unlock-login``)."""
        throttles = repository.login_throttles(session)
        rows = await throttles.list_by_keys(keys)
        for row in rows:
            await throttles.delete(row)
        return len(rows)

    async def purge(self, session: AsyncSession, *, now: datetime) -> int:
        return await repository.login_throttles(session).purge_idle(
            idle_since=now - FORGET_AFTER, now=now
        )


login_throttle_service = LoginThrottleService()
