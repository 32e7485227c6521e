"""What billing needs from the catalog (plans), the credit ledger and metering.

Billing calls those domains through these two protocols only, so it never reads
their tables. A test may install other implementations with :func:`use_catalog` /
:func:`use_credits`; :func:`tollway.billing.adapters.catalog` and
:func:`~tollway.billing.adapters.credits` answer the one in use (else the adapters over
``tollway.plans``, ``tollway.metering`` and ``tollway.ledger``). This module imports
nothing of billing: the adapters import it, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

LicenseState = Literal["active", "grace", "restricted", "canceled"]
Degradation = Literal["immediate", "after_grace", "never"]


@dataclass(frozen=True, slots=True)
class MeterPrice:
    """Overage: usage above ``included`` costs ``unit_amount_minor`` per ``per_units``."""

    meter: str
    included: int
    unit_amount_minor: int
    per_units: int = 1


@dataclass(frozen=True, slots=True)
class PlanTerms:
    id: str
    name: str
    amount_minor: int
    currency: str
    interval: Literal["month", "year"]
    trial_days: int
    monthly_tokens: int
    #: feature -> degradation policy when payment fails
    features: dict[str, Degradation] = field(default_factory=dict)
    meter_prices: tuple[MeterPrice, ...] = ()
    #: up to this many unspent allotment tokens carry over into the next period
    rollover_cap: int = 0
    #: the catalog version these prices come from (the subscription keeps it)
    catalog_version: int | None = None
    #: a trial of this plan grants its monthly tokens (for the trial only)
    trial_credits: bool = True

    @property
    def is_free(self) -> bool:
        return self.amount_minor == 0


@dataclass(frozen=True, slots=True)
class TaxRate:
    country: str
    #: basis points: 2000 = 20 %
    rate_bp: int
    inclusive: bool
    name: str = "Tax"


@dataclass(frozen=True, slots=True)
class DunningPolicy:
    #: days between attempts: the first retry 2 days after the failure, then 5, 7, 7
    retry_days: tuple[int, ...] = (2, 5, 7, 7)
    grace_days: int = 14
    #: what happens after the last retry fails
    final_status: Literal["unpaid", "canceled"] = "unpaid"


@dataclass(frozen=True, slots=True)
class TokenPack:
    id: str
    tokens: int
    amount_minor: int
    currency: str
    name: str = ""


class Catalog(Protocol):
    """The plans domain, as billing sees it."""

    @property
    def default_plan_id(self) -> str:
        """The plan every organization starts on (Free)."""
        ...

    async def get_plan(
        self, session: AsyncSession, plan_id: str, *, version: int | None = None
    ) -> PlanTerms | None:
        """The plan priced as catalog ``version`` set it (None: the active version)."""
        ...

    async def tax_rate(self, session: AsyncSession, country: str | None) -> TaxRate | None: ...

    async def dunning_policy(self, session: AsyncSession) -> DunningPolicy: ...

    async def get_token_pack(self, session: AsyncSession, pack_id: str) -> TokenPack | None: ...

    async def assign_plan(
        self,
        session: AsyncSession,
        organization_id: str,
        plan_id: str,
        *,
        license_state: LicenseState,
        grace_ends_at: datetime | None,
    ) -> None:
        """Tell entitlements the organization's plan and license state."""
        ...

    async def features(self, session: AsyncSession, organization_id: str) -> dict[str, bool]:
        """Which features the organization may use now (plan x license state)."""
        ...

    async def assignment(
        self, session: AsyncSession, organization_id: str
    ) -> tuple[str, LicenseState, datetime | None]:
        """The plan, license state and grace end entitlements enforce for the organization
        (the default plan when nothing was assigned); a read, never a write."""
        ...

    async def usage(
        self,
        session: AsyncSession,
        organization_id: str,
        meter: str,
        *,
        period_start: datetime,
        period_end: datetime,
    ) -> int:
        """Metered usage in the period, for overage lines."""
        ...

    async def prepare_usage(
        self, session: AsyncSession, periods: list[tuple[str, str, datetime, datetime]]
    ) -> None:
        """Read ahead, in a few queries, the :meth:`usage` of these (organization,
        meter, period start, period end) that this transaction will ask for."""
        ...


class Credits(Protocol):
    """The credit ledger, as billing sees it; every grant is idempotent."""

    async def grant_allotment(
        self,
        session: AsyncSession,
        organization_id: str,
        *,
        amount: int,
        period_start: datetime,
        period_end: datetime,
        rollover_cap: int | None,
    ) -> None:
        """A plan's tokens for one period (once per organization and ``period_start``)."""
        ...

    async def prepare_allotments(
        self, session: AsyncSession, periods: list[tuple[str, datetime]]
    ) -> None:
        """Read ahead, in a few queries, what the :meth:`grant_allotment` calls of
        these (organization, period start) pairs in this transaction will need."""
        ...

    async def grant(
        self,
        session: AsyncSession,
        organization_id: str,
        *,
        amount: int,
        source: Literal["allotment", "purchase"],
        reference: str,
        expires_at: datetime | None,
        now: datetime,
        reason: str,
    ) -> None:
        """Extra credits (an upgrade's difference, a token pack), once per ``reference``."""
        ...

    async def release_open_holds(
        self, session: AsyncSession, organization_id: str, *, now: datetime
    ) -> int: ...

    async def reverse_allotments(
        self,
        session: AsyncSession,
        organization_id: str,
        *,
        granted_from: datetime,
        expiring_by: datetime,
        now: datetime,
        reason: str,
    ) -> int:
        """Take back the unspent allotments granted since ``granted_from`` that expire by
        ``expiring_by`` (a trial's); returns how many credits."""
        ...

    async def reverse_unspent(
        self,
        session: AsyncSession,
        organization_id: str,
        *,
        reference: str,
        now: datetime,
        amount: int | None = None,
    ) -> int:
        """Take back what is left of the purchase ``reference`` (all of it and close the
        lot, or at most ``amount`` credits of it); returns how much."""
        ...


_catalog: Catalog | None = None
_credits: Credits | None = None


def use_catalog(implementation: Catalog | None) -> None:
    """Install ``implementation`` as the catalog (None: the plans adapter again)."""
    global _catalog
    _catalog = implementation


def use_credits(implementation: Credits | None) -> None:
    """Install ``implementation`` as the credits (None: the ledger adapter again)."""
    global _credits
    _credits = implementation


def chosen_catalog() -> Catalog | None:
    """The catalog :func:`use_catalog` installed, if any."""
    return _catalog


def chosen_credits() -> Credits | None:
    """The credits :func:`use_credits` installed, if any."""
    return _credits
