"""The catalog in memory, its versions in the database, and each organization's plan.

``catalog_service`` answers catalog questions without I/O (``get_plan``,
``token_packs``, ``tax_rate``, ``dunning_schedule`` ...) from the active catalog held
in process; ``get_plan_price`` reads the price snapshot of a catalog version, so a
subscription keeps the price it started with after the catalog changes.

``plans_service`` keeps the organization → plan assignment and its license state
(``plan_of`` / ``assign_plan``; billing writes it) and per-organization overrides.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import structlog
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from tollway.audit.service import audit_service
from tollway.db import Database, TollwaySession
from tollway.errors import NotFound, Unprocessable
from tollway.kit.cache import TTLCache
from tollway.kit.clock import utcnow
from tollway.kit.outbox import outbox
from tollway.plans.catalog import (
    DEFAULT_CATALOG_PATH,
    AbuseLimits,
    Catalog,
    Feature,
    Meter,
    Plan,
    PlanFeature,
    PlanPrice,
    TaxRate,
    TokenPack,
    load_catalog_file,
    parse_catalog,
)
from tollway.plans.models import PlanPriceSnapshot
from tollway.plans.repository import CatalogRepository, PlansRepository

log = structlog.get_logger("tollway.plans")

LicenseState = Literal["active", "grace", "restricted", "canceled"]
LICENSE_STATES: tuple[LicenseState, ...] = ("active", "grace", "restricted", "canceled")

#: session.info key: price rows read in this transaction.
_PRICE_ROWS = "tollway.plans.price_rows"

#: How often a process looks for a catalog loaded by another process.
CATALOG_REFRESH = timedelta(seconds=1)


class UnknownPlan(NotFound):
    code = "unknown_plan"
    title = "No such plan"


class OrganizationNotFound(NotFound):
    code = "organization_not_found"
    title = "No such organization"


class UnknownFeature(Unprocessable):
    code = "unknown_feature"
    title = "No such feature"


class UnknownMeter(Unprocessable):
    code = "unknown_meter"
    title = "No such meter"


class InvalidLicenseState(Unprocessable):
    code = "invalid_license_state"
    title = "Invalid license state"


class InvalidOverride(Unprocessable):
    code = "invalid_override"
    title = "Invalid override"


class CatalogService:
    """The active catalog of this process, and the numbered versions in the database."""

    def __init__(self) -> None:
        self._catalog: Catalog | None = None
        self._version: int | None = None
        self._checked_at: datetime | None = None

    # -- the active catalog -------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            # Before start-up synchronised it (a script, a unit test): the shipped file.
            self._catalog = load_catalog_file(DEFAULT_CATALOG_PATH)
        return self._catalog

    @property
    def current_version(self) -> int | None:
        """The database version number of the active catalog (None before start-up)."""
        return self._version

    def use(self, catalog: Catalog, *, version: int | None, now: datetime | None = None) -> None:
        self._catalog = catalog
        self._version = version
        self._checked_at = now

    async def start(self, database: Database, *, path: Path | None, now: datetime) -> int | None:
        """At start-up: load the configured catalog file and make it the active version."""
        catalog = load_catalog_file(path or DEFAULT_CATALOG_PATH)
        try:
            async with database.transaction() as session:
                version: int | None = await self.store(
                    session, catalog, source=str(path or "builtin:catalog.toml"), now=now
                )
        except DBAPIError as error:
            # A database without the catalog tables (migrations pending): serve the
            # catalog from memory so /ready can say what is wrong; prices get stored
            # at the next start.
            log.warning("catalog.not_stored", error=str(error.orig)[:200])
            version = None
        self.use(catalog, version=version, now=now)
        log.info("catalog.loaded", version=version, plans=sorted(catalog.plans))
        return version

    async def store(
        self, session: AsyncSession, catalog: Catalog, *, source: str, now: datetime
    ) -> int:
        """Make ``catalog`` the newest version unless it already is; returns its number."""
        repository = CatalogRepository(session)
        for _attempt in range(5):
            latest = await repository.get_latest_version()
            if latest is not None and latest.digest == catalog.digest:
                return latest.version
            version = 1 if latest is None else latest.version + 1
            prices = [
                {
                    "plan_id": plan.id,
                    "name": plan.name,
                    "amount_minor": plan.price.amount_minor,
                    "currency": plan.price.currency,
                    "interval": plan.price.interval,
                    "trial_days": plan.trial_days,
                    "monthly_tokens": plan.monthly_tokens,
                    "overage": _overage_document(catalog, plan),
                }
                for plan in catalog.plans.values()
            ]
            if await repository.add_version(
                version=version,
                digest=catalog.digest,
                source=source[:500],
                document=catalog.document,
                loaded_at=now,
                prices=prices,
            ):
                if latest is None:
                    # The first catalog of a new database is its initial state, not a change.
                    return version
                audit_service.record(
                    session,
                    action="catalog.loaded",
                    target=f"catalog:{version}",
                    details={"source": source[:500], "digest": catalog.digest},
                    occurred_at=now,
                )
                await outbox.publish(
                    session,
                    "catalog.updated",
                    {"version": version, "plans": sorted(catalog.plans)},
                    occurred_at=now,
                )
                return version
        raise RuntimeError("could not number the catalog version after 5 attempts")

    async def refresh(self, session: AsyncSession, *, now: datetime, force: bool = False) -> None:
        """Adopt a catalog another process stored (at most one look per second)."""
        checked_at = self._checked_at
        if (
            not force
            and checked_at is not None
            and checked_at <= now < checked_at + CATALOG_REFRESH
        ):
            return
        self._checked_at = now
        repository = CatalogRepository(session)
        latest = await repository.get_latest_version_number()
        if latest is None or latest == self._version:
            return
        row = await repository.get_by_version(latest)
        assert row is not None
        self.use(parse_catalog(row.document), version=row.version, now=now)
        log.info("catalog.refreshed", version=row.version)

    # -- questions other domains ask ----------------------------------------------------

    def list_plans(self) -> list[Plan]:
        return list(self.catalog.plans.values())

    def get_plan(self, plan_id: str) -> Plan:
        plan = self.catalog.plans.get(plan_id)
        if plan is None:
            raise UnknownPlan(f"there is no plan {plan_id!r}", plan=plan_id)
        return plan

    def default_plan(self) -> Plan:
        return self.get_plan(self.catalog.default_plan)

    async def get_plan_price(
        self, session: AsyncSession, plan_id: str, version: int | None = None
    ) -> PlanPrice:
        """The price of ``plan_id`` as catalog ``version`` set it (default: the active one).

        Billing stores the version a subscription started on and asks with it, so a
        catalog change never silently re-prices existing subscriptions.
        """
        if version is None:
            version = self._version
        if version is not None:
            snapshot = await CatalogRepository(session).get_price(plan_id=plan_id, version=version)
            if snapshot is not None:
                return PlanPrice(
                    amount_minor=snapshot.amount_minor,
                    currency=snapshot.currency,
                    interval=snapshot.interval,  # type: ignore[arg-type]  # written from a PlanPrice
                )
            if version != self._version:
                raise UnknownPlan(
                    f"catalog version {version} has no plan {plan_id!r}",
                    plan=plan_id,
                    version=version,
                )
        return self.get_plan(plan_id).price

    async def priced_plan(
        self, session: AsyncSession, plan_id: str, version: int | None = None
    ) -> PricedPlan:
        """What ``plan_id`` costs as catalog ``version`` priced it (default: the active
        version): base price, trial, monthly tokens and overage prices, with the active
        catalog's plan for everything that is not a price (features, rollover).

        Billing keeps the version a subscription was priced at and asks with it, so a
        catalog change never silently re-prices existing subscriptions, overage included.
        """
        if version is None:
            version = self._version
        snapshot = (
            await self._price_snapshot(session, plan_id=plan_id, version=version)
            if version is not None
            else None
        )
        current = self.catalog.plans.get(plan_id)
        if snapshot is not None:
            return PricedPlan(
                plan_id=plan_id,
                name=snapshot.name,
                price=PlanPrice(
                    amount_minor=snapshot.amount_minor,
                    currency=snapshot.currency,
                    interval=snapshot.interval,  # type: ignore[arg-type]  # written from a PlanPrice
                ),
                trial_days=snapshot.trial_days,
                monthly_tokens=snapshot.monthly_tokens,
                overage=tuple(
                    MeterOverage(
                        feature=feature_id,
                        meter=str(body["meter"]),
                        included=int(body["included"]),
                        unit_amount_minor=int(body["unit_amount"]),
                        per_units=int(body["per_units"]),
                    )
                    for feature_id, body in sorted((snapshot.overage or {}).items())
                ),
                catalog_version=version,
                plan=current,
            )
        if current is None or (version is not None and version != self._version):
            raise UnknownPlan(
                f"catalog version {version} has no plan {plan_id!r}",
                plan=plan_id,
                version=version,
            )
        return PricedPlan(
            plan_id=plan_id,
            name=current.name,
            price=current.price,
            trial_days=current.trial_days,
            monthly_tokens=current.monthly_tokens,
            overage=_overage_prices(self.catalog, current),
            catalog_version=version,
            plan=current,
        )

    async def _price_snapshot(
        self, session: AsyncSession, *, plan_id: str, version: int
    ) -> PlanPriceSnapshot | None:
        """A version's price row, read once per transaction: a version's prices never
        change, and a billing sweep prices a hundred renewals in one transaction (the
        identity map alone would not keep the row: it holds clean rows weakly)."""
        held: dict[tuple[int, str], PlanPriceSnapshot] = session.info.setdefault(_PRICE_ROWS, {})
        key = (version, plan_id)
        row = held.get(key)
        if row is None:
            row = await CatalogRepository(session).get_price(plan_id=plan_id, version=version)
            if row is not None:
                held[key] = row
        return row

    def token_packs(self) -> list[TokenPack]:
        return list(self.catalog.token_packs.values())

    def get_token_pack(self, pack_id: str) -> TokenPack:
        pack = self.catalog.token_packs.get(pack_id)
        if pack is None:
            raise NotFound(f"there is no token pack {pack_id!r}", code="unknown_token_pack")
        return pack

    def tax_rate(self, country: str | None) -> TaxRate | None:
        """The tax rate for an ISO country code, or None when the catalog sets none."""
        if not country:
            return None
        return self.catalog.tax_rates.get(country.upper())

    def dunning_schedule(self) -> tuple[int, ...]:
        """Days between payment retries after a failure (default 2, 5, 7, 7)."""
        return self.catalog.dunning_schedule_days

    def grace_days(self) -> int:
        return self.catalog.grace_days

    def final_dunning_policy(self) -> str:
        """``unpaid`` or ``canceled``: what a subscription becomes when dunning ends."""
        return self.catalog.final_dunning_policy

    def commission_percent(self) -> Decimal:
        return self.catalog.commission_percent

    def get_meter(self, meter_id: str) -> Meter:
        meter = self.catalog.meters.get(meter_id)
        if meter is None:
            raise UnknownMeter(f"there is no meter {meter_id!r}", meter=meter_id)
        return meter

    def get_feature(self, feature_id: str) -> Feature:
        feature = self.catalog.features.get(feature_id)
        if feature is None:
            raise UnknownFeature(f"there is no feature {feature_id!r}", feature=feature_id)
        return feature


@dataclass(frozen=True, slots=True)
class MeterOverage:
    """Use of ``meter`` above ``included`` units a period costs ``unit_amount_minor`` per
    started block of ``per_units`` (the plan's soft quota and ``overage`` price)."""

    feature: str
    meter: str
    included: int
    unit_amount_minor: int
    per_units: int


@dataclass(frozen=True, slots=True)
class PricedPlan:
    """A plan's prices as one catalog version set them (see ``priced_plan``)."""

    plan_id: str
    name: str
    price: PlanPrice
    trial_days: int
    monthly_tokens: int
    overage: tuple[MeterOverage, ...]
    #: The version these prices come from (None: no catalog stored yet).
    catalog_version: int | None
    #: The plan in the active catalog (None when the catalog dropped it).
    plan: Plan | None


def _overage_prices(catalog: Catalog, plan: Plan) -> tuple[MeterOverage, ...]:
    prices = []
    for feature_id, granted in sorted(plan.features.items()):
        meter = catalog.features[feature_id].meter
        if granted.overage is None or granted.quota is None or meter is None:
            continue
        prices.append(
            MeterOverage(
                feature=feature_id,
                meter=meter,
                included=granted.quota,
                unit_amount_minor=granted.overage.unit_amount_minor,
                per_units=granted.overage.per_units,
            )
        )
    return tuple(prices)


def _overage_document(catalog: Catalog, plan: Plan) -> dict[str, Any] | None:
    prices = _overage_prices(catalog, plan)
    if not prices:
        return None
    return {
        price.feature: {
            "meter": price.meter,
            "included": price.included,
            "unit_amount": price.unit_amount_minor,
            "per_units": price.per_units,
        }
        for price in prices
    }


catalog_service = CatalogService()


@dataclass(frozen=True, slots=True)
class PlanAssignment:
    organization_id: str
    plan_id: str
    license_state: LicenseState
    grace_ends_at: datetime | None = None
    catalog_version: int | None = None


@dataclass(frozen=True, slots=True)
class EffectivePlan:
    """A plan after an organization's overrides: what it may do, feature by feature."""

    plan: Plan
    features: dict[str, PlanFeature]
    rate_limit_per_minute: int | None
    #: The abuse battery's thresholds: the plan's, with the organization's ``abuse`` override.
    abuse: AbuseLimits


# -- invalidation hooks: caches in this process forget an organization on commit ---------

_CHANGED = "tollway.plans.changed_organizations"
_listeners: list[weakref.WeakMethod[Callable[[str], None]]] = []


def on_plan_change(listener: Callable[[str], None]) -> None:
    """Call the bound method ``listener(organization_id)`` after a transaction that
    changed that organization's plan or overrides commits (held weakly: a cache that
    is gone stops listening)."""
    _listeners.append(weakref.WeakMethod(listener))


@event.listens_for(TollwaySession, "after_commit")
def _after_commit(session: Session) -> None:
    changed: set[str] | None = session.info.pop(_CHANGED, None)
    if not changed:
        return
    alive = [reference for reference in _listeners if reference() is not None]
    _listeners[:] = alive
    for reference in alive:
        listener = reference()
        if listener is not None:
            for organization_id in changed:
                listener(organization_id)


@event.listens_for(TollwaySession, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_CHANGED, None)


def _mark_changed(session: AsyncSession, organization_id: str) -> None:
    session.sync_session.info.setdefault(_CHANGED, set()).add(organization_id)


class PlansService:
    def __init__(self) -> None:
        #: The ledger asks for abuse limits on every reservation: read at most once a
        #: second per organization, and forgotten here when a change commits.
        self._abuse_limits: TTLCache[str, AbuseLimits] = TTLCache()
        #: ``/auth/me`` names the plan on every call: the same once-a-second reading.
        self._plan_ids: TTLCache[str, str] = TTLCache()
        on_plan_change(self._forget)

    def _forget(self, organization_id: str) -> None:
        self._abuse_limits.discard(organization_id)
        self._plan_ids.discard(organization_id)

    async def plan_id(self, session: AsyncSession, organization_id: str, *, now: datetime) -> str:
        """The organization's plan id, read at most once a second per process (every
        process sees a change within a second, the one that made it at once)."""

        async def load() -> str:
            return (await self.plan_of(session, organization_id)).plan_id

        return await self._plan_ids.get_or_load(organization_id, now=now, load=load)

    async def plan_of(self, session: AsyncSession, organization_id: str) -> PlanAssignment:
        """The organization's plan and license state; the default plan when none is set."""
        row = await PlansRepository(session).get_by_organization_id(organization_id)
        if row is None:
            return PlanAssignment(
                organization_id=organization_id,
                plan_id=catalog_service.catalog.default_plan,
                license_state="active",
            )
        return _assignment(row.organization_id, row.plan_id, row)

    async def assign_plan(
        self,
        session: AsyncSession,
        organization_id: str,
        plan_id: str,
        *,
        license_state: LicenseState = "active",
        grace_ends_at: datetime | None = None,
        catalog_version: int | None = None,
        now: datetime | None = None,
    ) -> PlanAssignment:
        """Put an organization on a plan, with its license state (billing's entry point).

        Setting the same values again changes nothing and records nothing (handlers
        set state, they never toggle). Caches in every process see the change within
        a second; this process at once, when the transaction commits.
        """
        catalog_service.get_plan(plan_id)
        if license_state not in LICENSE_STATES:
            raise InvalidLicenseState(
                f"license_state must be one of {', '.join(LICENSE_STATES)}",
                license_state=license_state,
            )
        repository = PlansRepository(session)
        before = await repository.get_by_organization_id(organization_id)
        previous = (
            (before.plan_id, before.license_state, before.grace_ends_at, before.catalog_version)
            if before is not None
            else None
        )
        wanted = (plan_id, license_state, grace_ends_at, catalog_version)
        if previous == wanted:
            return PlanAssignment(
                organization_id, plan_id, license_state, grace_ends_at, catalog_version
            )
        moment = now or utcnow()
        stored = await repository.upsert_assignment(
            {
                "organization_id": organization_id,
                "plan_id": plan_id,
                "license_state": license_state,
                "grace_ends_at": grace_ends_at,
                "catalog_version": catalog_version,
                "updated_at": moment,
            }
        )
        if not stored:
            raise OrganizationNotFound(f"there is no organization {organization_id!r}")
        details = {
            "plan": plan_id,
            "license_state": license_state,
            "grace_ends_at": grace_ends_at.isoformat() if grace_ends_at else None,
            "previous_plan": previous[0] if previous else None,
            "previous_license_state": previous[1] if previous else None,
        }
        audit_service.record(
            session,
            action="plan.assigned",
            target=f"organization:{organization_id}",
            organization_id=organization_id,
            details=details,
            occurred_at=moment,
        )
        await outbox.publish(
            session,
            "organization.plan_changed",
            {"organization_id": organization_id, **details},
            organization_id=organization_id,
            occurred_at=moment,
        )
        _mark_changed(session, organization_id)
        return PlanAssignment(
            organization_id, plan_id, license_state, grace_ends_at, catalog_version
        )

    async def get_overrides(self, session: AsyncSession, organization_id: str) -> dict[str, Any]:
        row = await PlansRepository(session).get_overrides(organization_id)
        return dict(row.overrides) if row is not None else {}

    async def set_overrides(
        self,
        session: AsyncSession,
        organization_id: str,
        overrides: dict[str, Any],
        *,
        now: datetime,
    ) -> dict[str, Any]:
        """Replace an organization's custom limits (an empty document removes them)."""
        check_overrides(overrides)
        if not await PlansRepository(session).upsert_overrides(
            organization_id=organization_id, overrides=overrides, now=now
        ):
            raise OrganizationNotFound(f"there is no organization {organization_id!r}")
        audit_service.record(
            session,
            action="plan.overrides_set",
            target=f"organization:{organization_id}",
            organization_id=organization_id,
            details={"overrides": overrides},
            occurred_at=now,
        )
        _mark_changed(session, organization_id)
        return overrides

    async def effective_plan(
        self, session: AsyncSession, organization_id: str
    ) -> tuple[PlanAssignment, EffectivePlan]:
        """The organization's assignment and its plan with overrides applied (one query)."""
        row, override_row = await PlansRepository(session).get_plan_and_overrides(organization_id)
        if row is None:
            assignment = PlanAssignment(
                organization_id=organization_id,
                plan_id=catalog_service.catalog.default_plan,
                license_state="active",
            )
        else:
            assignment = _assignment(organization_id, row.plan_id, row)
        plan = catalog_service.catalog.plans.get(assignment.plan_id)
        if plan is None:
            # The catalog dropped the plan this organization is on: fall back to the
            # default rather than lock the customer out; billing migrates them.
            log.warning("plans.unknown_assigned_plan", organization_id=organization_id)
            plan = catalog_service.default_plan()
        overrides = override_row.overrides if override_row is not None else {}
        return assignment, apply_overrides(plan, overrides)

    async def abuse_limits(
        self, session: AsyncSession, organization_id: str, *, now: datetime
    ) -> AbuseLimits:
        """The abuse battery's thresholds for an organization: its plan's
        (``[plans.<id>.abuse]``) with its ``abuse`` override applied. Cached for a
        second, like the entitlements: every process sees a change within a second,
        the one that made it at once."""

        async def load() -> AbuseLimits:
            _, effective = await self.effective_plan(session, organization_id)
            return effective.abuse

        return await self._abuse_limits.get_or_load(organization_id, now=now, load=load)


def _assignment(organization_id: str, plan_id: str, row: Any) -> PlanAssignment:
    return PlanAssignment(
        organization_id=organization_id,
        plan_id=plan_id,
        license_state=row.license_state,
        grace_ends_at=row.grace_ends_at,
        catalog_version=row.catalog_version,
    )


_FEATURE_OVERRIDE_KEYS = frozenset({"enabled", "quota", "enforcement", "rate_limit_per_minute"})
_ABUSE_OVERRIDE_KEYS = frozenset(AbuseLimits.__slots__)


def check_overrides(overrides: dict[str, Any]) -> None:
    """Refuse overrides that name unknown features or carry values of the wrong kind."""
    unknown_keys = set(overrides) - {"features", "rate_limit_per_minute", "abuse"}
    if unknown_keys:
        raise InvalidOverride(f"unknown override keys: {', '.join(sorted(unknown_keys))}")
    abuse = overrides.get("abuse", {})
    if not isinstance(abuse, dict) or set(abuse) - _ABUSE_OVERRIDE_KEYS:
        raise InvalidOverride(f"abuse takes {', '.join(sorted(_ABUSE_OVERRIDE_KEYS))}")
    for name, value in abuse.items():
        if not _is_int(value) or value < 0:
            raise InvalidOverride(f"abuse.{name} must be a non-negative integer")
    limit = overrides.get("rate_limit_per_minute")
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise InvalidOverride("rate_limit_per_minute must be a positive integer or null")
    features = overrides.get("features", {})
    if not isinstance(features, dict):
        raise InvalidOverride("features must be an object")
    for feature_id, body in features.items():
        feature = catalog_service.get_feature(feature_id)
        if not isinstance(body, dict) or set(body) - _FEATURE_OVERRIDE_KEYS:
            raise InvalidOverride(
                f"features.{feature_id} takes {', '.join(sorted(_FEATURE_OVERRIDE_KEYS))}"
            )
        if "enabled" in body and not isinstance(body["enabled"], bool):
            raise InvalidOverride(f"features.{feature_id}.enabled must be true or false")
        quota = body.get("quota")
        if quota is not None and (not _is_int(quota) or quota < 0 or feature.meter is None):
            raise InvalidOverride(
                f"features.{feature_id}.quota must be a non-negative integer on a metered feature"
            )
        if body.get("enforcement", "hard") not in ("hard", "soft"):
            raise InvalidOverride(f"features.{feature_id}.enforcement must be hard or soft")
        rate = body.get("rate_limit_per_minute")
        if rate is not None and (not _is_int(rate) or rate < 1):
            raise InvalidOverride(f"features.{feature_id}.rate_limit_per_minute must be positive")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def apply_overrides(plan: Plan, overrides: dict[str, Any]) -> EffectivePlan:
    features = dict(plan.features)
    for feature_id, body in (overrides.get("features") or {}).items():
        if feature_id not in catalog_service.catalog.features:
            continue  # the catalog dropped it since the override was written
        if body.get("enabled") is False:
            features.pop(feature_id, None)
            continue
        base = features.get(feature_id, PlanFeature(feature=feature_id))
        changes: dict[str, Any] = {
            key: body[key]
            for key in ("quota", "enforcement", "rate_limit_per_minute")
            if key in body
        }
        features[feature_id] = replace(base, **changes)
    rate_limit = overrides.get("rate_limit_per_minute", plan.rate_limit_per_minute)
    abuse = {
        name: value
        for name, value in (overrides.get("abuse") or {}).items()
        if name in _ABUSE_OVERRIDE_KEYS
    }
    return EffectivePlan(
        plan=plan,
        features=features,
        rate_limit_per_minute=rate_limit,
        abuse=replace(plan.abuse, **abuse) if abuse else plan.abuse,
    )


plans_service = PlansService()
