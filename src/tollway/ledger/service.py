"""The credit ledger's rules; other domains call these functions.

Double entry: every movement is a transfer whose entries sum to zero (checked before
anything is written). Per organization there is one account of each kind
(:class:`~tollway.ledger.models.AccountKind`):

==========  ===========================================================
grant       issuance (or purchases) -> wallet
reserve     wallet -> holds
commit      holds -> spending (the committed part) + holds -> wallet (the rest)
release     holds -> wallet
expire      wallet -> expiry (a lot's unspent credits at its expiry)
reverse     wallet -> refunds (a refunded purchase's unspent credits)
==========  ===========================================================

Credits held from a lot that expired or was reversed meanwhile go, when the hold ends
uncommitted, to expiry or refunds instead of back to the wallet.

``available`` = unspent credits of live lots; ``reserved`` = credits held;
``balance`` = available + reserved = granted - spent - expired - reversed.

Concurrency: every write takes the organization's wallet row lock first
(:func:`repository.lock_accounts`; on SQLite write transactions are serialised by the
database's writer lock), then checks and changes. ``available`` therefore never goes
below zero however many reserves run at once.

Lock order, one for every path that touches an organization's credits (PostgreSQL row
locks; breaking it deadlocks, which PostgreSQL resolves after a second by failing one
transaction):

1. the organization's wallet account row (``credit_accounts``, kind ``wallet``);
2. its abuse state row of the subject (``credit_abuse_states``);
3. its usage counter rows (``usage_counters``, the metering of an authorize decision);
4. grants and reservations, changed only while the wallet is held.

Reserve, commit, release, the hold and grant expiry sweeps, grants and the abuse
battery all start at 1: :func:`repository.get_abuse_state` locks the wallet before the
abuse row whoever calls it, so ``POST /api/v1/authorize`` with credits (abuse battery,
then quota, then the hold) takes wallet -> abuse -> counter and a release or an expiry
takes wallet -> abuse, never the other way round. Organizations never wait for each
other's rows. Services only flush; the caller's edge
commits (and flushes what is pending: the hot paths leave it to that single flush).
Every transfer writes an audit entry in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from tollway.audit.service import audit_service
from tollway.db import TollwaySession
from tollway.errors import Unprocessable
from tollway.kit.ids import new_id
from tollway.kit.numbers import MAX_BALANCE, MAX_CREDITS, is_whole
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams, PageResult
from tollway.ledger import repository
from tollway.ledger.abuse import AbusePolicy, abuse_service
from tollway.ledger.errors import (
    AmountExceedsHold,
    BalanceLimitExceeded,
    GrantNotFound,
    HoldNotActive,
    HoldNotFound,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidAmount,
    InvalidExpiry,
    InvalidGrantSource,
    InvalidTtl,
    OutputTooLarge,
)
from tollway.ledger.models import (
    AccountKind,
    CreditAccount,
    CreditEntry,
    CreditGrant,
    GrantSource,
    Reservation,
    ReservationStatus,
    TransferKind,
)
from tollway.observability.metrics import CREDITS_MOVED
from tollway.plans.service import plans_service

DEFAULT_HOLD_TTL_SECONDS = 30
DEFAULT_MAX_HOLD_TTL_SECONDS = 3600
DEFAULT_LOW_BALANCE_THRESHOLD = 10

#: Lower is spent first: credits that lapse soonest or cost nothing go before paid ones.
DEFAULT_PRIORITY: dict[GrantSource, int] = {
    GrantSource.ALLOTMENT: 10,
    GrantSource.PROMO: 20,
    GrantSource.ADMIN: 30,
    GrantSource.PURCHASE: 40,
}

Accounts = dict[str, CreditAccount]

#: Transfers of the open transaction, counted in the metrics once it commits.
_UNCOUNTED = "tollway.ledger.uncounted"


class LedgerImbalance(AssertionError):
    """A transfer whose entries do not sum to zero: a bug, never written."""


@dataclass(frozen=True, slots=True)
class Balance:
    balance: int
    reserved: int
    available: int
    grants: list[CreditGrant] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CommitResult:
    reservation: Reservation
    committed: int
    released: int


def _require_positive(amount: int, what: str = "amount") -> None:
    if not is_whole(amount) or not 0 < amount <= MAX_CREDITS:
        raise InvalidAmount(
            f"{what} must be a whole number of credits from 1 to {MAX_CREDITS:,}",
            maximum=MAX_CREDITS,
        )


class LedgerService:
    # ------------------------------------------------------------------ reads

    async def balance(
        self, session: AsyncSession, *, organization_id: str, now: datetime
    ) -> Balance:
        """Balance, reserved and available credits, with the live lots in spending order."""
        accounts = await repository.get_accounts(session, organization_id=organization_id)
        grants = await repository.list_spendable_grants(
            session, organization_id=organization_id, now=now
        )
        holds = accounts.get(AccountKind.HOLDS.value)
        reserved = holds.balance if holds is not None else 0
        available = sum(grant.remaining for grant in grants)
        return Balance(
            balance=available + reserved, reserved=reserved, available=available, grants=grants
        )

    async def list_entries(
        self, session: AsyncSession, *, organization_id: str, params: PageParams
    ) -> PageResult[CreditEntry]:
        """The organization's ledger entries, newest first."""
        return await repository.list_entries(
            session, organization_id=organization_id, params=params
        )

    async def get_reservation(
        self, session: AsyncSession, *, organization_id: str, reservation_id: str
    ) -> Reservation:
        """A hold of this organization (404 ``hold_not_found`` for any other)."""
        reservation = await repository.get_reservation(
            session, organization_id=organization_id, reservation_id=reservation_id
        )
        if reservation is None:
            raise HoldNotFound(f"no hold {reservation_id}")
        return reservation

    async def list_reservations(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        params: PageParams,
        status: str | None = None,
    ) -> PageResult[Reservation]:
        """The organization's holds, newest first; ``status`` keeps one kind."""
        return await repository.list_reservations(
            session, organization_id=organization_id, params=params, status=status
        )

    # ----------------------------------------------------------------- grants

    async def grant(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        amount: int,
        source: str,
        now: datetime,
        reason: str,
        expires_at: datetime | None = None,
        priority: int | None = None,
        reference: str | None = None,
        period_start: datetime | None = None,
        period_end: datetime | None = None,
        rollover_cap: int | None = None,
        low_balance_threshold: int | None = DEFAULT_LOW_BALANCE_THRESHOLD,
    ) -> CreditGrant:
        """Add a lot of ``amount`` credits (issuance or purchases -> wallet).

        ``source`` is ``allotment``, ``purchase``, ``admin`` or ``promo``; ``priority``
        defaults per source (:data:`DEFAULT_PRIORITY`, lower is spent first). With a
        ``reference`` (an order or payment id) the grant is idempotent: a second call
        with the same organization, source and reference returns the first lot.
        """
        _require_positive(amount)
        try:
            grant_source = GrantSource(source)
        except ValueError:
            raise InvalidGrantSource(
                f"source must be one of {', '.join(item.value for item in GrantSource)}"
            ) from None
        if expires_at is not None and expires_at <= now:
            raise InvalidExpiry("expires_at must be in the future")
        if reference is not None and not 1 <= len(reference) <= 200:
            raise Unprocessable("reference must be 1-200 characters")
        if rollover_cap is not None and rollover_cap < 0:
            raise InvalidAmount("rollover_cap must not be negative")
        accounts = await repository.lock_accounts(session, organization_id=organization_id, now=now)
        if reference is not None:
            existing = await repository.get_grant_by_reference(
                session,
                organization_id=organization_id,
                source=grant_source.value,
                reference=reference,
            )
            if existing is not None:
                return existing
        balance = accounts[AccountKind.WALLET].balance + accounts[AccountKind.HOLDS].balance
        if balance + amount > MAX_BALANCE:
            # Checked before anything is stored: a wallet never grows past what its sums
            # (and every later grant) can hold.
            raise BalanceLimitExceeded(
                f"a balance holds at most {MAX_BALANCE:,} credits; this one has {balance:,}",
                balance=balance,
                maximum=MAX_BALANCE,
            )
        grant = CreditGrant(
            id=new_id("grt"),
            organization_id=organization_id,
            source=grant_source.value,
            amount=amount,
            remaining=amount,
            priority=DEFAULT_PRIORITY[grant_source] if priority is None else priority,
            expires_at=expires_at,
            reason=reason[:500],
            reference=reference,
            period_start=period_start,
            period_end=period_end,
            rollover_cap=rollover_cap,
            created_at=now,
        )
        session.add(grant)
        repository.remember_lot(session, grant)
        if period_start is not None:
            repository.allotment_added(session, grant)
        origin = (
            AccountKind.PURCHASES if grant_source is GrantSource.PURCHASE else AccountKind.ISSUANCE
        )
        await self._transfer(
            session,
            accounts,
            kind=TransferKind.GRANT,
            legs={origin: -amount, AccountKind.WALLET: amount},
            organization_id=organization_id,
            now=now,
            grant_id=grant.id,
            description=reason,
            low_balance_threshold=low_balance_threshold,
        )
        await outbox.publish(
            session,
            "credits.granted",
            {
                "grant_id": grant.id,
                "amount": amount,
                "source": grant.source,
                "expires_at": expires_at.isoformat() if expires_at else None,
                "reason": grant.reason,
            },
            organization_id=organization_id,
            occurred_at=now,
        )
        return grant

    async def grant_allotment(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        amount: int,
        period_start: datetime,
        period_end: datetime,
        rollover_cap: int | None = None,
    ) -> CreditGrant | None:
        """Grant a plan's tokens for one billing period; billing calls it at each period start.

        Idempotent per organization and ``period_start``: a second call returns the first
        lot. The lot expires at ``period_end``; with a ``rollover_cap`` up to that many
        unspent credits survive into the next period (and lapse at its end). An amount of
        0 (a plan without tokens) grants nothing and returns None.
        """
        if amount == 0:
            return None
        if period_end <= period_start:
            raise InvalidAmount("period_end must be after period_start", code="invalid_period")
        await repository.lock_accounts(session, organization_id=organization_id, now=period_start)
        existing = await repository.get_allotment(
            session, organization_id=organization_id, period_start=period_start
        )
        if existing is not None:
            return existing
        return await self.grant(
            session,
            organization_id=organization_id,
            amount=amount,
            source=GrantSource.ALLOTMENT.value,
            now=period_start,
            expires_at=period_end,
            reason=f"allotment {period_start.date().isoformat()} - {period_end.date().isoformat()}",
            period_start=period_start,
            period_end=period_end,
            rollover_cap=rollover_cap,
        )

    async def prepare_allotments(
        self, session: AsyncSession, *, periods: list[tuple[str, datetime]]
    ) -> None:
        """Lock the accounts and read the allotments of many (organization, period
        start) pairs in two queries, for the :meth:`grant_allotment` calls this
        transaction is about to make (a billing sweep's chunk)."""
        await repository.lock_many_accounts(
            session, organization_ids=[organization_id for organization_id, _ in periods]
        )
        await repository.read_allotments(session, periods=periods)

    async def expire_grant(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        grant_id: str,
        now: datetime,
        low_balance_threshold: int | None = DEFAULT_LOW_BALANCE_THRESHOLD,
    ) -> int:
        """Book a lot's expiry (wallet -> expiry); returns the credits that lapsed.

        Nothing happens before ``expires_at`` or twice. An allotment with a rollover cap
        keeps up to that many credits for one more period instead.
        """
        accounts = await repository.lock_accounts(session, organization_id=organization_id, now=now)
        grant = await repository.get_grant(
            session, organization_id=organization_id, grant_id=grant_id
        )
        if (
            grant is None
            or grant.expired_at is not None
            or grant.reversed_at is not None
            or grant.expires_at is None
            or grant.expires_at > now
        ):
            return 0
        keep = min(grant.remaining, grant.rollover_cap or 0)
        lapsed = grant.remaining - keep
        if keep > 0:
            length = (
                grant.period_end - grant.period_start
                if grant.period_end is not None and grant.period_start is not None
                else timedelta(days=30)
            )
            grant.remaining = keep
            grant.expires_at = grant.expires_at + length
            grant.rollover_cap = 0
        else:
            grant.remaining = 0
            grant.expired_at = now
        if lapsed:
            await self._transfer(
                session,
                accounts,
                kind=TransferKind.EXPIRE,
                legs={AccountKind.WALLET: -lapsed, AccountKind.EXPIRY: lapsed},
                organization_id=organization_id,
                now=now,
                grant_id=grant.id,
                description="lot expired",
                low_balance_threshold=low_balance_threshold,
            )
            await outbox.publish(
                session,
                "credits.expired",
                {"grant_id": grant.id, "amount": lapsed, "rolled_over": keep},
                organization_id=organization_id,
                occurred_at=now,
            )
        await session.flush()
        return lapsed

    async def reverse_grant_remaining(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        now: datetime,
        reason: str,
        grant_id: str | None = None,
        reference: str | None = None,
        amount: int | None = None,
        low_balance_threshold: int | None = DEFAULT_LOW_BALANCE_THRESHOLD,
    ) -> int:
        """Take back a lot's unspent credits (wallet -> refunds), e.g. a refunded token pack.

        Name the lot by ``grant_id`` or by the purchase ``reference`` it was granted with.
        Without ``amount`` the whole unspent rest is reversed and the lot is closed: a
        second call reverses nothing, and credits held from the lot at that moment go to
        refunds too if their hold ends uncommitted. With ``amount`` (a partial refund's
        share) at most that many of the lot's unspent credits are reversed and the lot
        stays open. Returns the credits reversed.
        """
        if amount is not None:
            _require_positive(amount)
        accounts = await repository.lock_accounts(session, organization_id=organization_id, now=now)
        grant: CreditGrant | None = None
        if grant_id is not None:
            grant = await repository.get_grant(
                session, organization_id=organization_id, grant_id=grant_id
            )
        elif reference is not None:
            grant = await repository.get_grant_by_reference(
                session,
                organization_id=organization_id,
                source=GrantSource.PURCHASE.value,
                reference=reference,
            )
        if grant is None:
            raise GrantNotFound("no such credit grant")
        if grant.reversed_at is not None:
            return 0
        if amount is None:
            reversed_amount = grant.remaining
            grant.reversed_at = now
        else:
            reversed_amount = min(amount, grant.remaining)
        grant.remaining -= reversed_amount
        if reversed_amount:
            await self._transfer(
                session,
                accounts,
                kind=TransferKind.REVERSE,
                legs={AccountKind.WALLET: -reversed_amount, AccountKind.REFUNDS: reversed_amount},
                organization_id=organization_id,
                now=now,
                grant_id=grant.id,
                description=reason,
                low_balance_threshold=low_balance_threshold,
            )
        await session.flush()
        return reversed_amount

    async def reverse_allotments(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        granted_from: datetime,
        expiring_by: datetime,
        now: datetime,
        reason: str,
    ) -> int:
        """Take back the unspent rest of the allotment lots granted since ``granted_from``
        and expiring by ``expiring_by`` (a trial's, when it ends unconverted or is
        cancelled): one ``reverse`` transfer (wallet -> refunds) per lot, audited like
        every transfer, the lot closed, and a ``credits.reversed`` event. Returns the
        credits reversed; a second call reverses nothing."""
        await repository.lock_accounts(session, organization_id=organization_id, now=now)
        lots = await repository.list_live_allotments(
            session,
            organization_id=organization_id,
            granted_from=granted_from,
            expiring_by=expiring_by,
        )
        total = 0
        for lot in lots:
            reversed_amount = await self.reverse_grant_remaining(
                session, organization_id=organization_id, now=now, reason=reason, grant_id=lot.id
            )
            total += reversed_amount
            await outbox.publish(
                session,
                "credits.reversed",
                {"grant_id": lot.id, "amount": reversed_amount, "reason": reason[:500]},
                organization_id=organization_id,
                occurred_at=now,
            )
        return total

    # ------------------------------------------------------------------ holds

    async def _abuse_policy(
        self, session: AsyncSession, organization_id: str, *, now: datetime
    ) -> AbusePolicy:
        """The battery's limits for this organization: its plan's, with its overrides."""
        limits = await plans_service.abuse_limits(session, organization_id, now=now)
        return AbusePolicy.from_limits(limits)

    async def reserve(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        amount: int,
        now: datetime,
        ttl_seconds: int = DEFAULT_HOLD_TTL_SECONDS,
        feature: str | None = None,
        idempotency_key: str | None = None,
        subject: str | None = None,
        max_ttl_seconds: int = DEFAULT_MAX_HOLD_TTL_SECONDS,
        check_abuse: bool = False,
    ) -> Reservation:
        """Hold ``amount`` credits for ``ttl_seconds`` (wallet -> holds).

        Raises 402 ``insufficient_credits`` when fewer are available (not a failure
        for the abuse battery's block). With ``idempotency_key`` a retry
        returns the first hold instead of reserving again (same key, other amount or
        feature: 409 ``idempotency_conflict``). With ``check_abuse`` the abuse battery
        runs first with the organization's limits (its plan's ``[plans.<id>.abuse]``,
        with its overrides; asked of the plans service): the reservation endpoint. The
        entitlements decision runs the battery itself and passes False. Credits come
        from lots in spending order: priority, earliest expiry, oldest.
        """
        _require_positive(amount)
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
            raise Unprocessable(
                "idempotency_key must be 1-255 characters", code="invalid_idempotency_key"
            )
        if feature is not None and len(feature) > 100:
            raise Unprocessable("feature must be at most 100 characters")
        if subject is not None and len(subject) > 100:
            raise Unprocessable("subject must be at most 100 characters")
        if isinstance(ttl_seconds, bool) or not 1 <= ttl_seconds <= max_ttl_seconds:
            raise InvalidTtl(f"ttl_seconds must be between 1 and {max_ttl_seconds}")
        # Read before the wallet lock, so the lock is not held over this query.
        abuse_policy = (
            await self._abuse_policy(session, organization_id, now=now) if check_abuse else None
        )
        accounts = await repository.lock_accounts(session, organization_id=organization_id, now=now)
        if idempotency_key is not None:
            existing = await self.held_for_key(
                session,
                organization_id=organization_id,
                idempotency_key=idempotency_key,
                amount=amount,
                feature=feature,
                now=now,
            )
            if existing is not None:
                return existing
        # Read the lots before the battery changes its state: one flush, at commit.
        grants = await repository.spendable_grants_locked(
            session, organization_id=organization_id, now=now
        )
        if abuse_policy is not None:
            await abuse_service.enforce(
                session,
                organization_id=organization_id,
                subject=subject,
                credits=amount,
                now=now,
                policy=abuse_policy,
            )
        available = sum(grant.remaining for grant in grants)
        if available < amount:
            # Not a failure for the battery's block: a customer who tops up spends at once.
            raise InsufficientCredits(
                f"{amount} credits requested, {available} available",
                requested=amount,
                available=available,
            )
        lots: list[list[Any]] = []
        needed = amount
        for grant in grants:
            take = min(needed, grant.remaining)
            grant.remaining -= take
            lots.append([grant.id, take])
            needed -= take
            if needed == 0:
                break
        reservation = Reservation(
            id=new_id("res"),
            organization_id=organization_id,
            amount=amount,
            status=ReservationStatus.HELD.value,
            feature=feature,
            subject=subject,
            idempotency_key=idempotency_key,
            # A list, not a mapping: JSONB does not keep the order of keys.
            allocations={"lots": lots},
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
        session.add(reservation)
        await self._transfer(
            session,
            accounts,
            kind=TransferKind.RESERVE,
            legs={AccountKind.WALLET: -amount, AccountKind.HOLDS: amount},
            organization_id=organization_id,
            now=now,
            reservation_id=reservation.id,
            description=feature,
        )
        return reservation

    async def held_for_key(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        idempotency_key: str,
        amount: int,
        feature: str | None,
        now: datetime,
    ) -> Reservation | None:
        """The hold an earlier :meth:`reserve` made with ``idempotency_key`` (None: none),
        read with the wallet locked, as a write that follows it would (409
        ``idempotency_conflict`` when it was for another amount or feature)."""
        await repository.lock_accounts(session, organization_id=organization_id, now=now)
        existing = await repository.get_reservation_by_key(
            session, organization_id=organization_id, idempotency_key=idempotency_key
        )
        if existing is not None and (existing.amount != amount or existing.feature != feature):
            raise IdempotencyKeyReused("this idempotency key was used for another reservation")
        return existing

    async def commit(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        reservation_id: str,
        now: datetime,
        amount: int | None = None,
        output_units: int | None = None,
        low_balance_threshold: int | None = DEFAULT_LOW_BALANCE_THRESHOLD,
    ) -> CommitResult:
        """Spend ``amount`` (default: all) of a hold and return the rest.

        Errors: 404 ``hold_not_found`` (unknown, or another organization's), 409
        ``hold_not_active`` (released, expired or past its TTL), 422
        ``amount_exceeds_hold``, 422 ``output_too_large`` when ``output_units`` exceeds
        the organization's ``max_output_units`` (its plan's abuse limits and overrides).
        Committing a committed hold again with the same amount (or none) answers the
        first result: retries spend once.
        """
        if amount is not None and (not is_whole(amount) or not 0 <= amount <= MAX_CREDITS):
            raise InvalidAmount(f"amount must be a whole number from 0 to {MAX_CREDITS:,}")
        accounts = await repository.lock_accounts(session, organization_id=organization_id, now=now)
        reservation = await self.get_reservation(
            session, organization_id=organization_id, reservation_id=reservation_id
        )
        if reservation.status == ReservationStatus.COMMITTED.value:
            if amount is None or amount == reservation.committed:
                return CommitResult(
                    reservation, reservation.committed or 0, reservation.released or 0
                )
            raise HoldNotActive("this hold was already committed")
        if reservation.status != ReservationStatus.HELD.value or reservation.expires_at <= now:
            raise HoldNotActive(f"this hold is {self._status(reservation, now)}, not held")
        committed = reservation.amount if amount is None else amount
        if committed > reservation.amount:
            raise AmountExceedsHold(
                f"{committed} credits exceed the {reservation.amount} held",
                held=reservation.amount,
            )
        if output_units is not None:
            try:
                abuse_service.check_output(
                    output_units,
                    policy=await self._abuse_policy(session, organization_id, now=now),
                )
            except OutputTooLarge:
                await abuse_service.record_failure(
                    session, organization_id=organization_id, subject=reservation.subject, now=now
                )
                raise
        rest = reservation.amount - committed
        legs = await self._return_held(session, reservation, amount=rest, now=now)
        legs[AccountKind.HOLDS] = -reservation.amount
        legs[AccountKind.SPENDING] = committed
        reservation.status = ReservationStatus.COMMITTED.value
        reservation.committed = committed
        reservation.released = rest
        reservation.settled_at = now
        await self._transfer(
            session,
            accounts,
            kind=TransferKind.COMMIT,
            legs=legs,
            organization_id=organization_id,
            now=now,
            reservation_id=reservation.id,
            description=reservation.feature,
            low_balance_threshold=low_balance_threshold,
        )
        return CommitResult(reservation, committed, rest)

    async def release(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        reservation_id: str,
        now: datetime,
    ) -> Reservation:
        """Return a whole hold (holds -> wallet); the release counts in the abuse battery.

        Releasing a released or expired hold again changes nothing; a committed one is
        409 ``hold_not_active``; unknown or another organization's is 404.
        """
        accounts = await repository.lock_accounts(session, organization_id=organization_id, now=now)
        reservation = await self.get_reservation(
            session, organization_id=organization_id, reservation_id=reservation_id
        )
        if reservation.status in (
            ReservationStatus.RELEASED.value,
            ReservationStatus.EXPIRED.value,
        ):
            return reservation
        if reservation.status != ReservationStatus.HELD.value:
            raise HoldNotActive(f"this hold is {reservation.status}; it cannot be released")
        await self._end_hold(
            session, accounts, reservation, now=now, status=ReservationStatus.RELEASED
        )
        await abuse_service.record_failure(
            session, organization_id=organization_id, subject=reservation.subject, now=now
        )
        return reservation

    async def expire_hold(
        self, session: AsyncSession, *, organization_id: str, reservation_id: str, now: datetime
    ) -> bool:
        """Release a hold whose TTL ran out (the sweep); True if it was still held."""
        accounts = await repository.lock_accounts(session, organization_id=organization_id, now=now)
        reservation = await repository.get_reservation(
            session, organization_id=organization_id, reservation_id=reservation_id
        )
        if (
            reservation is None
            or reservation.status != ReservationStatus.HELD.value
            or reservation.expires_at > now
        ):
            return False
        await self._end_hold(
            session, accounts, reservation, now=now, status=ReservationStatus.EXPIRED
        )
        await abuse_service.record_failure(
            session, organization_id=organization_id, subject=reservation.subject, now=now
        )
        return True

    async def release_open_holds(
        self, session: AsyncSession, *, organization_id: str, now: datetime
    ) -> int:
        """Release every open hold of the organization; billing calls it when a license
        leaves ``active``. Not counted as failures by the abuse battery. Returns how many."""
        accounts = await repository.lock_accounts(session, organization_id=organization_id, now=now)
        reservations = await repository.list_open_reservations(
            session, organization_id=organization_id
        )
        for reservation in reservations:
            await self._end_hold(
                session, accounts, reservation, now=now, status=ReservationStatus.RELEASED
            )
        return len(reservations)

    # -------------------------------------------------------------- internals

    @staticmethod
    def _status(reservation: Reservation, now: datetime) -> str:
        if reservation.status == ReservationStatus.HELD.value and reservation.expires_at <= now:
            return ReservationStatus.EXPIRED.value
        return reservation.status

    async def _end_hold(
        self,
        session: AsyncSession,
        accounts: Accounts,
        reservation: Reservation,
        *,
        now: datetime,
        status: ReservationStatus,
    ) -> None:
        legs = await self._return_held(session, reservation, amount=reservation.amount, now=now)
        legs[AccountKind.HOLDS] = -reservation.amount
        reservation.status = status.value
        reservation.committed = 0
        reservation.released = reservation.amount
        reservation.settled_at = now
        await self._transfer(
            session,
            accounts,
            kind=TransferKind.RELEASE,
            legs=legs,
            organization_id=reservation.organization_id,
            now=now,
            reservation_id=reservation.id,
            description=status.value,
        )

    async def _return_held(
        self, session: AsyncSession, reservation: Reservation, *, amount: int, now: datetime
    ) -> dict[AccountKind, int]:
        """Give ``amount`` held credits back to their lots, last-allocated first.

        A lot that expired or was reversed while its credits were held does not take them
        back: they go to expiry or refunds. Returns the credit legs of the transfer.
        """
        legs: dict[AccountKind, int] = {}
        if amount == 0:
            return legs
        allocations = [(str(lot[0]), int(lot[1])) for lot in reservation.allocations["lots"]]
        grants = await repository.get_grants_by_ids(
            session, [grant_id for grant_id, _ in allocations]
        )
        left = amount
        for grant_id, taken in reversed(allocations):
            back = min(left, taken)
            left -= back
            grant = grants.get(grant_id)
            if grant is not None and grant.reversed_at is not None:
                target = AccountKind.REFUNDS
            elif grant is None or grant.expired_at is not None:
                target = AccountKind.EXPIRY
            else:
                grant.remaining += back
                repository.remember_lot(session, grant)
                target = AccountKind.WALLET
            legs[target] = legs.get(target, 0) + back
            if left == 0:
                break
        return legs

    async def _transfer(
        self,
        session: AsyncSession,
        accounts: Accounts,
        *,
        kind: TransferKind,
        legs: dict[AccountKind, int],
        organization_id: str,
        now: datetime,
        grant_id: str | None = None,
        reservation_id: str | None = None,
        description: str | None = None,
        low_balance_threshold: int | None = DEFAULT_LOW_BALANCE_THRESHOLD,
    ) -> str:
        """Write one balanced transfer, move the account balances, audit it; returns the
        transfer's id. The rows go in with the transaction's other transfers, as one
        insert each for transfers and entries, when it commits."""
        legs = {account: amount for account, amount in legs.items() if amount != 0}
        if sum(legs.values()) != 0:
            raise LedgerImbalance(f"transfer {kind} does not sum to zero: {legs}")
        wallet = accounts[AccountKind.WALLET]
        holds = accounts[AccountKind.HOLDS]
        before = wallet.balance + holds.balance
        transfer_id = new_id("ctr")
        moved = sum(amount for amount in legs.values() if amount > 0)
        transfer = {
            "id": transfer_id,
            "organization_id": organization_id,
            "kind": kind.value,
            "amount": moved,
            "grant_id": grant_id,
            "reservation_id": reservation_id,
            "description": description[:500] if description else None,
            "occurred_at": now,
        }
        entries = []
        for account_kind, amount in legs.items():
            account = accounts[account_kind]
            account.balance += amount
            entries.append(
                {
                    "id": new_id("cent"),
                    "transfer_id": transfer_id,
                    "account_id": account.id,
                    "organization_id": organization_id,
                    "account_kind": account_kind.value,
                    "transfer_kind": kind.value,
                    "amount": amount,
                    "occurred_at": now,
                }
            )
        await repository.add_transfer(session, transfer, entries)
        # A commit counts what it spent; the part it gave back is not "committed".
        counted = legs.get(AccountKind.SPENDING, 0) if kind is TransferKind.COMMIT else moved
        session.sync_session.info.setdefault(_UNCOUNTED, []).append((kind.value, counted))
        audit_service.record(
            session,
            action=f"credits.{kind.value}",
            target=transfer_id,
            organization_id=organization_id,
            details={
                "amount": moved,
                "entries": {account.value: amount for account, amount in legs.items()},
                "grant_id": grant_id,
                "reservation_id": reservation_id,
            },
            occurred_at=now,
        )
        after = wallet.balance + holds.balance
        if low_balance_threshold is not None and low_balance_threshold > 0:
            await self._watch_low_balance(
                session,
                wallet,
                before=before,
                after=after,
                threshold=low_balance_threshold,
                now=now,
            )
        return transfer_id

    async def _watch_low_balance(
        self,
        session: AsyncSession,
        wallet: CreditAccount,
        *,
        before: int,
        after: int,
        threshold: int,
        now: datetime,
    ) -> None:
        """Publish ``credits.low_balance`` once when the balance drops below ``threshold``;
        again only after it has been back at or above it."""
        if after < threshold <= before and not wallet.low_balance_notified:
            wallet.low_balance_notified = True
            await outbox.publish(
                session,
                "credits.low_balance",
                {"balance": after, "threshold": threshold},
                organization_id=wallet.organization_id,
                occurred_at=now,
            )
        elif after >= threshold and wallet.low_balance_notified:
            wallet.low_balance_notified = False


def _count_committed(session: Session) -> None:
    for kind, amount in session.info.pop(_UNCOUNTED, []):
        CREDITS_MOVED.labels(kind=kind).inc(amount)


def _forget_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # Runs after after_commit; only the outermost transaction's end (a rollback) drops.
    if transaction.parent is None:
        session.info.pop(_UNCOUNTED, None)


event.listen(TollwaySession, "after_commit", _count_committed)
event.listen(TollwaySession, "after_transaction_end", _forget_uncommitted)

ledger_service = LedgerService()
