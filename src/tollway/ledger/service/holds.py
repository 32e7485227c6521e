"""Holds: credits reserved for a call, then committed (spent) or released."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.errors import Unprocessable
from tollway.kit.ids import new_id
from tollway.kit.numbers import MAX_CREDITS, is_whole
from tollway.kit.pagination import PageParams, PageResult
from tollway.ledger import repository
from tollway.ledger.abuse import AbusePolicy, abuse_service
from tollway.ledger.errors import (
    AmountExceedsHold,
    HoldNotActive,
    HoldNotFound,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidAmount,
    InvalidTtl,
    OutputTooLarge,
)
from tollway.ledger.models import AccountKind, Reservation, ReservationStatus, TransferKind
from tollway.ledger.service.transfers import (
    DEFAULT_HOLD_TTL_SECONDS,
    DEFAULT_LOW_BALANCE_THRESHOLD,
    DEFAULT_MAX_HOLD_TTL_SECONDS,
    Accounts,
    require_positive,
    transfer_service,
)
from tollway.plans.service.assignments import plans_service


@dataclass(frozen=True, slots=True)
class CommitResult:
    reservation: Reservation
    committed: int
    released: int


class HoldService:
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
        require_positive(amount)
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
        await transfer_service.transfer(
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
        await transfer_service.transfer(
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
        await transfer_service.transfer(
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


hold_service = HoldService()
