"""What metering reads and answers: usage records, periods, consumption results, and the
rules every path shares (checking a record, its fingerprint, the quota thresholds)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.errors import Unprocessable
from tollway.kit.numbers import MAX_QUANTITY, is_whole
from tollway.kit.outbox import outbox
from tollway.metering.errors import (
    InvalidQuantity,
    InvalidTimestamp,
    MissingProperty,
    PeriodClosed,
    TimestampInFuture,
)
from tollway.metering.repository import MeteringRepository
from tollway.plans.catalog import Meter, Period
from tollway.plans.service.assignments import EffectivePlan
from tollway.plans.service.catalog import catalog_service

MAX_BATCH = 1000
#: How far in the future a client's clock may run before its timestamps are refused.
FUTURE_TOLERANCE = timedelta(seconds=5)
THRESHOLDS = (80, 100)
_LIFETIME_START = datetime(1970, 1, 1, tzinfo=UTC)
_LIFETIME_END = datetime(9999, 1, 1, tzinfo=UTC)


def period_bounds(moment: datetime, period: Period) -> tuple[datetime, datetime]:
    """The UTC calendar period containing ``moment``: [start, end)."""
    moment = moment.astimezone(UTC)
    if period == "lifetime":
        return _LIFETIME_START, _LIFETIME_END
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def parse_timestamp(value: str | datetime | None) -> datetime | None:
    """An ISO 8601 timestamp with an offset (``Z`` allowed); 422 ``invalid_timestamp``."""
    if value is None or isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError as error:
            raise InvalidTimestamp(
                f"{value!r} is not an ISO 8601 timestamp", timestamp=value
            ) from error
    if moment is not None and moment.tzinfo is None:
        raise InvalidTimestamp("timestamps need a UTC offset, e.g. 2026-01-15T12:00:00Z")
    return moment.astimezone(UTC) if moment is not None else None


@dataclass(frozen=True, slots=True)
class UsageRecord:
    meter: str
    quantity: int
    idempotency_key: str
    timestamp: str | datetime | None = None
    properties: dict[str, Any] | None = None
    #: Credits an authorize decision reserved with the event: part of what a retry
    #: with the same key must repeat.
    credits: int = 0


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int
    duplicate_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Consumption:
    """The outcome of consuming quota for one decision."""

    allowed: bool
    duplicate: bool
    meter: str
    used: int
    limit: int | None
    period_start: datetime
    period_end: datetime
    #: What :meth:`UsageCounterService.undo` needs to take the consumption back.
    amount: int = 0
    idempotency_key: str | None = None
    unique_value: str | None = None

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(0, self.limit - self.used)

    @property
    def lifetime(self) -> bool:
        """Whether the meter counts for ever (``period = "lifetime"``): it never resets."""
        return self.period_end >= _LIFETIME_END

    @property
    def reset_at(self) -> datetime | None:
        """When the counter starts again: the period's end, None for a lifetime meter."""
        return None if self.lifetime else self.period_end


@dataclass(frozen=True, slots=True)
class ConsumeRequest:
    organization_id: str
    meter_id: str
    quantity: int
    idempotency_key: str
    limit: int | None
    hard: bool
    now: datetime
    source: str = "authorize"


@dataclass(frozen=True, slots=True)
class MeterUsage:
    meter: str
    used: int
    limit: int | None
    remaining: int | None
    percent: float | None
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True, slots=True)
class UsageSummary:
    period_start: datetime
    period_end: datetime
    meters: list[MeterUsage]


def meter_limits(effective: EffectivePlan) -> dict[str, int | None]:
    """Per meter, the smallest quota of the plan's features on it (None: unlimited)."""
    limits: dict[str, int | None] = {}
    features = catalog_service.catalog.features
    for plan_feature in effective.features.values():
        feature = features.get(plan_feature.feature)
        if feature is None or feature.meter is None:
            continue
        quota = plan_feature.quota
        current = limits.get(feature.meter)
        if feature.meter not in limits or current is None:
            limits[feature.meter] = quota
        elif quota is not None:
            limits[feature.meter] = min(current, quota)
    return limits


def record_fingerprint(record: UsageRecord) -> str:
    timestamp = (
        record.timestamp.isoformat() if isinstance(record.timestamp, datetime) else record.timestamp
    )
    fields: list[Any] = [record.meter, record.quantity, timestamp, record.properties or {}]
    if record.credits:
        # Only then: the fingerprints of events without credits stay what they were.
        fields.append(record.credits)
    canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def check_record(
    record: UsageRecord,
    *,
    now: datetime,
    index: int | None = None,
    periods: dict[str, tuple[datetime, datetime]] | None = None,
) -> tuple[Meter, datetime, datetime, datetime, str | None]:
    """Validate one event: (meter, occurred_at, period_start, period_end, unique value).

    ``periods`` caches the open period per period kind across a batch (same ``now``).
    """
    where: dict[str, Any] = {"index": index} if index is not None else {}
    meter = catalog_service.catalog.meters.get(record.meter)
    if meter is None:
        raise Unprocessable(
            f"there is no meter {record.meter!r}",
            code="unknown_meter",
            meter=record.meter,
            **where,
        )
    if not is_whole(record.quantity) or not 0 < record.quantity <= MAX_QUANTITY:
        raise InvalidQuantity(
            f"quantity must be a whole number from 1 to {MAX_QUANTITY:,}", **where
        )
    occurred_at = parse_timestamp(record.timestamp) or now
    if occurred_at > now + FUTURE_TOLERANCE:
        raise TimestampInFuture(
            "the event's timestamp is in the future", timestamp=occurred_at.isoformat(), **where
        )
    bounds = periods.get(meter.period) if periods is not None else None
    if bounds is None:
        bounds = period_bounds(now, meter.period)
        if periods is not None:
            periods[meter.period] = bounds
    period_start, period_end = bounds
    if occurred_at < period_start:
        raise PeriodClosed(
            "the event belongs to a period that is closed; only the open period takes late events",
            period_start=period_start.isoformat(),
            **where,
        )
    unique_value: str | None = None
    if meter.aggregation == "unique":
        assert meter.property is not None
        raw = (record.properties or {}).get(meter.property)
        if raw is None or isinstance(raw, dict | list) or len(str(raw)) > 255:
            raise MissingProperty(
                f"meter {meter.id!r} counts distinct values of properties.{meter.property}",
                property=meter.property,
                **where,
            )
        unique_value = str(raw)
    return meter, occurred_at, period_start, period_end, unique_value


async def announce_thresholds(
    session: AsyncSession,
    *,
    organization_id: str,
    meter: str,
    period_start: datetime,
    period_end: datetime,
    used: int,
    limit: int | None,
    now: datetime,
) -> None:
    if not limit:
        return
    repository = MeteringRepository(session)
    for percent in THRESHOLDS:
        if used * 100 < percent * limit:
            break
        if await repository.raise_notified_percent(
            organization_id=organization_id,
            meter=meter,
            period_start=period_start,
            percent=percent,
        ):
            await outbox.publish(
                session,
                "usage.threshold_reached",
                {
                    "organization_id": organization_id,
                    "meter": meter,
                    "percent": percent,
                    "used": used,
                    "limit": limit,
                    "period_start": period_start.isoformat(),
                    "period_end": period_end.isoformat(),
                },
                organization_id=organization_id,
                occurred_at=now,
            )
