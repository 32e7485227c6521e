"""The decision's two steps that belong to the ledger: the abuse battery and credits.

Entitlements owns the order of the checks (DESIGN.md §5); the ledger owns what the
abuse battery remembers and where credits are held. These protocols are the whole
contract between the two; the adapters below connect them to :mod:`tollway.ledger`
(tests may install other implementations on the runtime).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.errors import Conflict
from tollway.ledger.abuse import AbusePolicy, abuse_service
from tollway.ledger.errors import IdempotencyKeyReused, InsufficientCredits
from tollway.ledger.service.holds import hold_service
from tollway.ledger.service.transfers import DEFAULT_HOLD_TTL_SECONDS
from tollway.plans.catalog import AbuseLimits


@dataclass(frozen=True, slots=True)
class AbuseVerdict:
    allowed: bool
    code: str | None = None
    retry_after: int | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class CreditsHold:
    """Credits reserved for one decision; the caller commits or releases it later."""

    reservation_id: str | None
    allowed: bool = True
    code: str | None = None
    detail: str | None = None


class AbuseBattery(Protocol):
    """Step 4 beyond the per-tier rate limit: minimum gap, credits per request, blocks.

    Called only for decisions that spend credits, inside the decision's transaction; an
    allowed call may count the request (and flag fraud), a denied one changes nothing.
    """

    async def evaluate(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        subject: str | None,
        credits: int,
        now: datetime,
        limits: AbuseLimits,
    ) -> AbuseVerdict: ...


class CreditsReserver(Protocol):
    """Step 6: hold ``amount`` credits (``insufficient_credits`` when they are not there).

    ``find`` answers a retry: the hold an earlier decision made with the same
    ``idempotency_key`` (None when there is none), and 409 ``idempotency_key_reused``
    when that decision asked for other credits. It runs before the abuse battery and
    takes the same locks first as a hold would (the ledger's lock order).
    """

    async def find(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        idempotency_key: str,
        amount: int,
        feature: str,
        now: datetime,
    ) -> CreditsHold | None: ...

    async def reserve(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        amount: int,
        now: datetime,
        feature: str,
        idempotency_key: str | None,
        subject: str | None,
    ) -> CreditsHold: ...


def abuse_policy(limits: AbuseLimits) -> AbusePolicy:
    """The ledger's abuse policy for a plan's catalog limits."""
    return AbusePolicy.from_limits(limits)


class LedgerAbuseBattery:
    """Step 4's ledger part: the abuse battery of :mod:`tollway.ledger.abuse`."""

    async def evaluate(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        subject: str | None,
        credits: int,
        now: datetime,
        limits: AbuseLimits,
    ) -> AbuseVerdict:
        decision = await abuse_service.evaluate(
            session,
            organization_id=organization_id,
            subject=subject,
            credits=credits,
            now=now,
            policy=abuse_policy(limits),
        )
        return AbuseVerdict(
            allowed=decision.allowed,
            code=decision.code,
            retry_after=decision.retry_after,
            detail=decision.detail,
        )


class IdempotencyKeyConflict(Conflict):
    code = "idempotency_key_reused"
    title = "Idempotency key reused"


class LedgerCreditsReserver:
    """Step 6 of a decision, :class:`CreditsReserver` over the ledger: a hold in the
    credit ledger, released after ``hold_ttl_seconds`` (``TOLLWAY_CREDITS_HOLD_TTL_SECONDS``)
    unless committed. (Billing's ``LedgerCredits`` is the ledger's other adapter: grants
    and reversals.)"""

    def __init__(self, hold_ttl_seconds: int = DEFAULT_HOLD_TTL_SECONDS) -> None:
        self.hold_ttl_seconds = hold_ttl_seconds

    async def find(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        idempotency_key: str,
        amount: int,
        feature: str,
        now: datetime,
    ) -> CreditsHold | None:
        try:
            reservation = await hold_service.held_for_key(
                session,
                organization_id=organization_id,
                idempotency_key=idempotency_key,
                amount=amount,
                feature=feature,
                now=now,
            )
        except IdempotencyKeyReused as refusal:
            # The code /authorize answers for any other reuse of its idempotency_key.
            raise IdempotencyKeyConflict(refusal.detail, idempotency_key=idempotency_key) from None
        return CreditsHold(reservation.id) if reservation is not None else None

    async def reserve(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        amount: int,
        now: datetime,
        feature: str,
        idempotency_key: str | None,
        subject: str | None,
    ) -> CreditsHold:
        try:
            reservation = await hold_service.reserve(
                session,
                organization_id=organization_id,
                amount=amount,
                now=now,
                ttl_seconds=self.hold_ttl_seconds,
                feature=feature,
                idempotency_key=idempotency_key,
                subject=subject,
            )
        except (InsufficientCredits, IdempotencyKeyReused) as refusal:
            # The decision answers ``allowed: false`` with the ledger's code.
            return CreditsHold(
                reservation_id=None, allowed=False, code=refusal.code, detail=refusal.detail
            )
        return CreditsHold(reservation_id=reservation.id)
