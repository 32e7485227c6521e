"""Grants: credit lots coming in (issuance, allotments, purchases), their expiry and
their reversal when a purchase is refunded."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.errors import Unprocessable
from tollway.kit.ids import new_id
from tollway.kit.numbers import MAX_BALANCE
from tollway.kit.outbox import outbox
from tollway.ledger import repository
from tollway.ledger.errors import (
    BalanceLimitExceeded,
    GrantNotFound,
    InvalidAmount,
    InvalidExpiry,
    InvalidGrantSource,
)
from tollway.ledger.models import AccountKind, CreditGrant, GrantSource, TransferKind
from tollway.ledger.service.transfers import (
    DEFAULT_LOW_BALANCE_THRESHOLD,
    DEFAULT_PRIORITY,
    require_positive,
    transfer_service,
)


class GrantService:
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
        require_positive(amount)
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
        await transfer_service.transfer(
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
            await transfer_service.transfer(
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
            require_positive(amount)
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
            await transfer_service.transfer(
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


grant_service = GrantService()
