"""The catalog as data: plans, features, meters, token packs, taxes and billing policy.

A catalog is a TOML document (``src/tollway/plans/catalog.toml`` by default, or
``TOLLWAY_CATALOG_PATH``). :func:`parse_catalog` checks it completely and turns it
into frozen dataclasses, so nothing downstream meets a half-valid catalog; every key
is described in ``docs/catalog.md``. Floats are refused wherever a number means money
or a rate: amounts are integers in minor units, percentages are decimal strings.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from tollway.errors import Unprocessable
from tollway.kit.money import Money, normalize_currency

DEFAULT_CATALOG_PATH = Path(__file__).with_name("catalog.toml")

Aggregation = Literal["count", "sum", "max", "unique"]
Period = Literal["day", "month", "lifetime"]
Degradation = Literal["immediate", "after_grace", "never"]
Enforcement = Literal["hard", "soft"]
Interval = Literal["month", "year"]
FinalDunningPolicy = Literal["unpaid", "canceled"]

AGGREGATIONS: tuple[Aggregation, ...] = ("count", "sum", "max", "unique")
PERIODS: tuple[Period, ...] = ("day", "month", "lifetime")
DEGRADATIONS: tuple[Degradation, ...] = ("immediate", "after_grace", "never")
ENFORCEMENTS: tuple[Enforcement, ...] = ("hard", "soft")
INTERVALS: tuple[Interval, ...] = ("month", "year")


class CatalogError(Unprocessable):
    code = "invalid_catalog"
    title = "Invalid catalog"


@dataclass(frozen=True, slots=True)
class Meter:
    id: str
    aggregation: Aggregation
    period: Period
    property: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Feature:
    id: str
    degradation: Degradation
    meter: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Overage:
    """The price of use above a soft quota: ``unit_amount_minor`` (in the plan's currency)
    per started block of ``per_units`` units of the feature's meter, billed in arrears."""

    unit_amount_minor: int
    per_units: int = 1


@dataclass(frozen=True, slots=True)
class PlanFeature:
    """A feature as one plan grants it: its quota (None: unlimited), rate limit and the
    price of use above a soft quota."""

    feature: str
    quota: int | None = None
    enforcement: Enforcement = "hard"
    rate_limit_per_minute: int | None = None
    overage: Overage | None = None


@dataclass(frozen=True, slots=True)
class AbuseLimits:
    """The abuse battery's thresholds for one plan; the ledger's abuse service reads them."""

    requests_per_minute: int = 30
    min_interval_seconds: int = 3
    max_credits_per_request: int = 10
    max_output_units: int = 2000
    fraud_credits_per_hour: int = 500
    max_failures: int = 5
    failure_window_seconds: int = 900
    block_seconds: int = 900


@dataclass(frozen=True, slots=True)
class PlanPrice:
    amount_minor: int
    currency: str
    interval: Interval

    @property
    def money(self) -> Money:
        return Money(self.amount_minor, self.currency)


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    name: str
    price: PlanPrice
    trial_days: int
    monthly_tokens: int
    token_rollover_cap: int
    #: whether a trial of the plan grants its monthly tokens (they last the trial only)
    trial_credits: bool
    rate_limit_per_minute: int | None
    features: dict[str, PlanFeature]
    abuse: AbuseLimits


@dataclass(frozen=True, slots=True)
class TokenPack:
    id: str
    name: str
    tokens: int
    price: Money


@dataclass(frozen=True, slots=True)
class TaxRate:
    country: str
    name: str
    percent: Decimal
    inclusive: bool


@dataclass(frozen=True, slots=True)
class Catalog:
    default_plan: str
    grace_days: int
    dunning_schedule_days: tuple[int, ...]
    final_dunning_policy: FinalDunningPolicy
    commission_percent: Decimal
    meters: dict[str, Meter]
    features: dict[str, Feature]
    plans: dict[str, Plan]
    token_packs: dict[str, TokenPack]
    tax_rates: dict[str, TaxRate]
    #: The parsed TOML document (JSON-compatible), stored with each catalog version.
    document: dict[str, Any] = field(repr=False, compare=False)
    digest: str = ""


def catalog_digest(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_catalog_file(path: Path) -> Catalog:
    """Read and check a catalog file (``CatalogError`` when it is not a valid catalog)."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CatalogError(f"cannot read the catalog file {path}: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise CatalogError(f"{path} is not valid TOML: {error}") from error
    return parse_catalog(document)


def parse_catalog(document: dict[str, Any]) -> Catalog:
    """Check a catalog document completely; the first problem found is reported."""
    reader = _Reader(document, "catalog")
    billing = reader.table("billing")
    marketplace = reader.table("marketplace")

    meters = {
        meter_id: _meter(meter_id, _Reader(body, f"meters.{meter_id}"))
        for meter_id, body in reader.table("meters").items()
    }
    features = {
        feature_id: _feature(feature_id, _Reader(body, f"features.{feature_id}"), meters)
        for feature_id, body in reader.table("features").items()
    }
    plans = {
        plan_id: _plan(plan_id, _Reader(body, f"plans.{plan_id}"), features)
        for plan_id, body in reader.table("plans").items()
    }
    if not plans:
        raise CatalogError("the catalog declares no plans")
    default_plan = reader.string("default_plan", default="free")
    if default_plan not in plans:
        raise CatalogError(f"default_plan {default_plan!r} is not one of the plans")
    token_packs = {
        pack_id: _token_pack(pack_id, _Reader(body, f"token_packs.{pack_id}"))
        for pack_id, body in reader.table("token_packs").items()
    }
    tax_rates = {
        country.upper(): _tax_rate(country, _Reader(body, f"tax_rates.{country}"))
        for country, body in reader.table("tax_rates").items()
    }
    billing_reader = _Reader(billing, "billing")
    schedule = billing_reader.value("dunning_schedule_days", default=[2, 5, 7, 7])
    if (
        not isinstance(schedule, list)
        or not schedule
        or not all(isinstance(days, int) and not isinstance(days, bool) for days in schedule)
        or any(days < 1 for days in schedule)
    ):
        raise CatalogError("billing.dunning_schedule_days must be a list of positive integers")
    final_policy = billing_reader.choice(
        "final_dunning_policy", ("unpaid", "canceled"), default="unpaid"
    )
    commission = _Reader(marketplace, "marketplace").decimal("commission_percent", default="15")
    if not Decimal(0) <= commission <= Decimal(100):
        raise CatalogError("marketplace.commission_percent must be between 0 and 100")
    return Catalog(
        default_plan=default_plan,
        grace_days=billing_reader.integer("grace_days", default=14, minimum=0),
        dunning_schedule_days=tuple(schedule),
        final_dunning_policy=final_policy,  # type: ignore[arg-type]  # checked by choice()
        commission_percent=commission,
        meters=meters,
        features=features,
        plans=plans,
        token_packs=token_packs,
        tax_rates=tax_rates,
        document=document,
        digest=catalog_digest(document),
    )


def _meter(meter_id: str, reader: _Reader) -> Meter:
    _check_id(meter_id, "meter")
    aggregation = reader.choice("aggregation", AGGREGATIONS, default="count")
    prop = reader.optional_string("property")
    if aggregation == "unique" and not prop:
        raise CatalogError(f"meters.{meter_id}: a unique meter needs a property")
    return Meter(
        id=meter_id,
        aggregation=aggregation,  # type: ignore[arg-type]  # checked by choice()
        period=reader.choice("period", PERIODS, default="month"),  # type: ignore[arg-type]
        property=prop,
        description=reader.string("description", default=""),
    )


def _feature(feature_id: str, reader: _Reader, meters: dict[str, Meter]) -> Feature:
    _check_id(feature_id, "feature")
    meter = reader.optional_string("meter")
    if meter is not None and meter not in meters:
        raise CatalogError(f"features.{feature_id}: meter {meter!r} is not declared")
    return Feature(
        id=feature_id,
        degradation=reader.choice("degradation", DEGRADATIONS, default="never"),  # type: ignore[arg-type]
        meter=meter,
        description=reader.string("description", default=""),
    )


def _plan(plan_id: str, reader: _Reader, features: dict[str, Feature]) -> Plan:
    _check_id(plan_id, "plan")
    price = _Reader(reader.table("price"), f"plans.{plan_id}.price")
    plan_features: dict[str, PlanFeature] = {}
    for feature_id, body in reader.table("features").items():
        if feature_id not in features:
            raise CatalogError(f"plans.{plan_id}.features: {feature_id!r} is not declared")
        entry = _Reader(body, f"plans.{plan_id}.features.{feature_id}")
        if not entry.boolean("enabled", default=True):
            continue
        quota = entry.optional_integer("quota", minimum=0)
        if quota is not None and features[feature_id].meter is None:
            raise CatalogError(
                f"plans.{plan_id}.features.{feature_id}: a quota needs a feature with a meter"
            )
        enforcement = entry.choice("enforcement", ENFORCEMENTS, default="hard")
        overage: Overage | None = None
        if "overage" in entry.table_:
            where = f"plans.{plan_id}.features.{feature_id}"
            if quota is None:
                raise CatalogError(f"{where}: overage needs a quota (the included units)")
            if enforcement != "soft":
                # A hard quota denies use above it, so there would be nothing to bill.
                raise CatalogError(f'{where}: overage needs enforcement = "soft"')
            blocks = _Reader(entry.value("overage"), f"{where}.overage")
            overage = Overage(
                unit_amount_minor=blocks.integer("unit_amount", minimum=0),
                per_units=blocks.integer("per_units", default=1, minimum=1),
            )
        plan_features[feature_id] = PlanFeature(
            feature=feature_id,
            quota=quota,
            enforcement=enforcement,  # type: ignore[arg-type]  # checked by choice()
            rate_limit_per_minute=entry.optional_integer("rate_limit_per_minute", minimum=1),
            overage=overage,
        )
    abuse = _Reader(reader.table("abuse"), f"plans.{plan_id}.abuse")
    defaults = AbuseLimits()
    return Plan(
        id=plan_id,
        name=reader.string("name", default=plan_id.title()),
        price=PlanPrice(
            amount_minor=price.integer("amount", default=0, minimum=0),
            currency=price.currency("currency"),
            interval=price.choice("interval", INTERVALS, default="month"),  # type: ignore[arg-type]
        ),
        trial_days=reader.integer("trial_days", default=0, minimum=0),
        monthly_tokens=reader.integer("monthly_tokens", default=0, minimum=0),
        token_rollover_cap=reader.integer("token_rollover_cap", default=0, minimum=0),
        trial_credits=reader.boolean("trial_credits", default=True),
        rate_limit_per_minute=reader.optional_integer("rate_limit_per_minute", minimum=1),
        features=plan_features,
        abuse=AbuseLimits(
            **{
                name: abuse.integer(name, default=getattr(defaults, name), minimum=0)
                for name in AbuseLimits.__slots__
            }
        ),
    )


def _token_pack(pack_id: str, reader: _Reader) -> TokenPack:
    _check_id(pack_id, "token pack")
    price = _Reader(reader.table("price"), f"token_packs.{pack_id}.price")
    return TokenPack(
        id=pack_id,
        name=reader.string("name", default=pack_id),
        tokens=reader.integer("tokens", minimum=1),
        price=Money(price.integer("amount", minimum=0), price.currency("currency")),
    )


def _tax_rate(country: str, reader: _Reader) -> TaxRate:
    if len(country) != 2 or not country.isalpha():
        raise CatalogError(f"tax_rates.{country}: the key must be an ISO 3166-1 alpha-2 code")
    percent = reader.decimal("percent")
    if not Decimal(0) <= percent <= Decimal(100):
        raise CatalogError(f"tax_rates.{country}.percent must be between 0 and 100")
    return TaxRate(
        country=country.upper(),
        name=reader.string("name", default="Tax"),
        percent=percent,
        inclusive=reader.boolean("inclusive", default=False),
    )


def _check_id(value: str, what: str) -> None:
    if not value or len(value) > 64 or not all(c.isalnum() or c in "._-" for c in value):
        raise CatalogError(f"{what} id {value!r} must be 1-64 letters, digits, '.', '_' or '-'")


_MISSING: Any = object()


class _Reader:
    """Typed access to one TOML table, with errors that name the key."""

    def __init__(self, table: Any, where: str) -> None:
        if not isinstance(table, dict):
            raise CatalogError(f"{where} must be a table")
        self.table_ = table
        self.where = where

    def value(self, key: str, *, default: Any = _MISSING) -> Any:
        if key in self.table_:
            return self.table_[key]
        if default is _MISSING:
            raise CatalogError(f"{self.where}.{key} is required")
        return default

    def table(self, key: str) -> dict[str, Any]:
        value = self.value(key, default={})
        if not isinstance(value, dict):
            raise CatalogError(f"{self.where}.{key} must be a table")
        return value

    def string(self, key: str, *, default: Any = _MISSING) -> str:
        value = self.value(key, default=default)
        if not isinstance(value, str):
            raise CatalogError(f"{self.where}.{key} must be a string")
        return value

    def optional_string(self, key: str) -> str | None:
        return None if key not in self.table_ else self.string(key)

    def choice(self, key: str, choices: tuple[str, ...], *, default: Any = _MISSING) -> str:
        value = self.string(key, default=default)
        if value not in choices:
            raise CatalogError(f"{self.where}.{key} must be one of {', '.join(choices)}")
        return value

    def integer(self, key: str, *, default: Any = _MISSING, minimum: int | None = None) -> int:
        value = self.value(key, default=default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise CatalogError(f"{self.where}.{key} must be an integer")
        if minimum is not None and value < minimum:
            raise CatalogError(f"{self.where}.{key} must be at least {minimum}")
        return value

    def optional_integer(self, key: str, *, minimum: int | None = None) -> int | None:
        return None if key not in self.table_ else self.integer(key, minimum=minimum)

    def boolean(self, key: str, *, default: Any = _MISSING) -> bool:
        value = self.value(key, default=default)
        if not isinstance(value, bool):
            raise CatalogError(f"{self.where}.{key} must be true or false")
        return value

    def decimal(self, key: str, *, default: Any = _MISSING) -> Decimal:
        value = self.value(key, default=default)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise CatalogError(f"{self.where}.{key} must be an integer or a decimal string")
        try:
            return Decimal(value)
        except InvalidOperation as error:
            raise CatalogError(f"{self.where}.{key} is not a decimal number") from error

    def currency(self, key: str) -> str:
        try:
            return normalize_currency(self.string(key, default="usd"))
        except ValueError as error:
            raise CatalogError(f"{self.where}.{key}: {error}") from error
