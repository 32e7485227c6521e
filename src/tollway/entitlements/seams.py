"""The decision's two steps that belong to the ledger: the abuse battery and credits.

Entitlements owns the order of the checks (DESIGN.md §5); the ledger owns what the
abuse battery remembers and where credits are held. These protocols are the whole
contract between the two. Until the ledger is installed the defaults below stand
in: no abuse battery, and no credits (a request for credits is denied with
``credits_unavailable``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

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
    """Step 6: hold ``amount`` credits (``insufficient_credits`` when they are not there)."""

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


class NoAbuseBattery:
    """No abuse battery installed: every request passes step 4's ledger part."""

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
        return AbuseVerdict(allowed=True)


class NoCredits:
    """No credit ledger installed: a decision that needs credits cannot be allowed."""

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
        return CreditsHold(
            reservation_id=None,
            allowed=False,
            code="credits_unavailable",
            detail="this Tollway has no credit ledger; ask for credits: 0",
        )
