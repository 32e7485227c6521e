"""The catalog: the active one in process, its versions and price snapshots in the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.db import Database
from tollway.errors import NotFound
from tollway.kit.outbox import outbox
from tollway.plans.catalog import (
    DEFAULT_CATALOG_PATH,
    Catalog,
    Feature,
    Meter,
    Plan,
    PlanPrice,
    TaxRate,
    TokenPack,
    load_catalog_file,
    parse_catalog,
)
from tollway.plans.errors import UnknownFeature, UnknownMeter, UnknownPlan
from tollway.plans.models import PlanPriceSnapshot
from tollway.plans.repository import CatalogRepository

log = structlog.get_logger("tollway.plans")

#: session.info key: price rows read in this transaction.
_PRICE_ROWS = "tollway.plans.price_rows"

#: How often a process looks for a catalog loaded by another process.
CATALOG_REFRESH = timedelta(seconds=1)


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
