"""Usage metering: idempotent events, exact per-period counters, quota thresholds.

Meters are declared in the catalog (``count``, ``sum``, ``max``, ``unique`` over a
property) with a period (``day``, ``month``, ``lifetime``; calendar periods in UTC).
An event counts exactly once: its ``(organization, idempotency_key)`` is unique, a
retry with the same body is reported as a duplicate, the same key with another body
is refused (409 ``idempotency_key_reused``). Counters are updated in the same
transaction as the events, so they always equal the events' aggregate. Crossing 80 %
and 100 % of a quota publishes ``usage.threshold_reached`` once per period.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.errors import Conflict, Unprocessable
from tollway.kit.ids import new_id, new_ids
from tollway.kit.numbers import MAX_QUANTITY, MAX_USAGE_PER_PERIOD, is_whole
from tollway.kit.outbox import outbox
from tollway.metering.repository import MeteringRepository
from tollway.plans.catalog import Meter, Period
from tollway.plans.service import EffectivePlan, catalog_service, plans_service

#: session.info key: usage read by :meth:`MeteringService.read_usage_ahead`.
_READ_USAGE = "tollway.metering.read_usage"

MAX_BATCH = 1000
#: How far in the future a client's clock may run before its timestamps are refused.
FUTURE_TOLERANCE = timedelta(seconds=5)
THRESHOLDS = (80, 100)
_LIFETIME_START = datetime(1970, 1, 1, tzinfo=UTC)
_LIFETIME_END = datetime(9999, 1, 1, tzinfo=UTC)


class InvalidQuantity(Unprocessable):
    code = "invalid_quantity"
    title = "Invalid quantity"


class InvalidTimestamp(Unprocessable):
    code = "invalid_timestamp"
    title = "Invalid timestamp"


class TimestampInFuture(Unprocessable):
    code = "timestamp_in_future"
    title = "Timestamp in the future"


class PeriodClosed(Unprocessable):
    code = "period_closed"
    title = "Period closed"


class MissingProperty(Unprocessable):
    code = "missing_property"
    title = "Missing property"


class BatchTooLarge(Unprocessable):
    code = "batch_too_large"
    title = "Batch too large"


class UsageLimitExceeded(Unprocessable):
    code = "usage_limit_exceeded"
    title = "Usage limit exceeded"

    def __init__(self, meter: str) -> None:
        super().__init__(
            f"a meter counts at most {MAX_USAGE_PER_PERIOD:,} units a period; "
            f"this event would take {meter} past it",
            meter=meter,
            maximum=MAX_USAGE_PER_PERIOD,
        )


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    title = "Idempotency key reused"


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
    #: What :meth:`MeteringService.undo` needs to take the consumption back.
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


def _fingerprint(record: UsageRecord) -> str:
    timestamp = (
        record.timestamp.isoformat() if isinstance(record.timestamp, datetime) else record.timestamp
    )
    fields: list[Any] = [record.meter, record.quantity, timestamp, record.properties or {}]
    if record.credits:
        # Only then: the fingerprints of events without credits stay what they were.
        fields.append(record.credits)
    canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class MeteringService:
    def check_record(
        self,
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
                "the event belongs to a period that is closed; only the open period takes "
                "late events",
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

    async def ingest(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        records: list[UsageRecord],
        now: datetime,
        source: str = "api",
    ) -> IngestResult:
        """Record a batch of events (up to 1,000); duplicates are reported, never counted."""
        if not records:
            raise InvalidQuantity("send at least one event")
        if len(records) > MAX_BATCH:
            raise BatchTooLarge(f"at most {MAX_BATCH} events per request", limit=MAX_BATCH)
        rows: list[dict[str, Any]] = []
        by_key: dict[str, tuple[str, Meter, datetime, datetime, int, str | None]] = {}
        in_batch_duplicates: list[str] = []
        periods: dict[str, tuple[datetime, datetime]] = {}
        for index, record in enumerate(records):
            meter, occurred_at, period_start, period_end, unique_value = self.check_record(
                record, now=now, index=index, periods=periods
            )
            fingerprint = _fingerprint(record)
            seen = by_key.get(record.idempotency_key)
            if seen is not None:
                if seen[0] != fingerprint:
                    raise IdempotencyKeyReused(
                        "the batch uses one idempotency_key for two different events",
                        idempotency_key=record.idempotency_key,
                        index=index,
                    )
                in_batch_duplicates.append(record.idempotency_key)
                continue
            by_key[record.idempotency_key] = (
                fingerprint,
                meter,
                period_start,
                period_end,
                record.quantity,
                unique_value,
            )
            rows.append(
                {
                    "organization_id": organization_id,
                    "meter": meter.id,
                    "quantity": record.quantity,
                    "occurred_at": occurred_at,
                    "period_start": period_start,
                    "idempotency_key": record.idempotency_key,
                    "fingerprint": fingerprint,
                    "properties": record.properties,
                    "source": source,
                    "recorded_at": now,
                }
            )
        for row, event_id in zip(rows, new_ids("use", len(rows)), strict=True):
            row["id"] = event_id
        repository = MeteringRepository(session)
        inserted = await repository.insert_events(rows)
        known = [key for key in by_key if key not in inserted]
        if known:
            stored = await repository.get_fingerprints(organization_id, known)
            for key in known:
                if stored.get(key) != by_key[key][0]:
                    raise IdempotencyKeyReused(
                        "this idempotency_key was used for a different event",
                        idempotency_key=key,
                    )
        # Aggregate the new events per (meter, period) and bump each counter once.
        deltas: dict[tuple[str, datetime], int] = defaultdict(int)
        ends: dict[tuple[str, datetime], datetime] = {}
        uniques: dict[tuple[str, datetime], set[str]] = defaultdict(set)
        meters: dict[str, Meter] = {}
        for key in inserted:
            _fp, meter, period_start, period_end, quantity, unique_value = by_key[key]
            slot = (meter.id, period_start)
            meters[meter.id] = meter
            ends[slot] = period_end
            if meter.aggregation == "max":
                deltas[slot] = max(deltas[slot], quantity)
            elif meter.aggregation == "unique":
                assert unique_value is not None
                uniques[slot].add(unique_value)
            else:
                deltas[slot] += quantity
        for (meter_id, period_start), values in uniques.items():
            new_values = await repository.insert_unique_values(
                organization_id=organization_id,
                meter=meter_id,
                period_start=period_start,
                values=values,
            )
            deltas[(meter_id, period_start)] = len(new_values)
        if deltas:
            limits = await self._limits(session, organization_id)
            for (meter_id, period_start), amount in deltas.items():
                if amount == 0:
                    continue
                value = await repository.bump_counter(
                    organization_id=organization_id,
                    meter=meter_id,
                    period_start=period_start,
                    period_end=ends[(meter_id, period_start)],
                    amount=amount,
                    keep_max=meters[meter_id].aggregation == "max",
                    now=now,
                    limit=MAX_USAGE_PER_PERIOD,
                )
                if value is None:
                    raise UsageLimitExceeded(meter_id)
                await self._announce_thresholds(
                    session,
                    organization_id=organization_id,
                    meter=meter_id,
                    period_start=period_start,
                    period_end=ends[(meter_id, period_start)],
                    used=value,
                    limit=limits.get(meter_id),
                    now=now,
                )
        duplicates = known + in_batch_duplicates
        return IngestResult(
            accepted=len(inserted), duplicates=len(duplicates), duplicate_keys=duplicates
        )

    async def consume(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        meter_id: str,
        quantity: int,
        idempotency_key: str,
        limit: int | None,
        hard: bool,
        now: datetime,
        properties: dict[str, Any] | None = None,
        source: str = "authorize",
        credits: int = 0,
    ) -> Consumption:
        """Record one usage event if it fits the quota (the authorize decision's steps 5 and 7).

        With a hard ``limit`` the counter moves only if it stays within the limit, in one
        atomic statement; otherwise the event is taken back and ``allowed`` is False. A
        known ``idempotency_key`` with the same request (``credits`` included) answers as
        the first time did (allowed, not counted again).
        """
        record = UsageRecord(
            meter=meter_id,
            quantity=quantity,
            idempotency_key=idempotency_key,
            properties=properties,
            credits=credits,
        )
        meter, occurred_at, period_start, period_end, unique_value = self.check_record(
            record, now=now
        )
        fingerprint = _fingerprint(record)
        repository = MeteringRepository(session)
        inserted = await repository.insert_events(
            [
                {
                    "id": new_id("use"),
                    "organization_id": organization_id,
                    "meter": meter.id,
                    "quantity": quantity,
                    "occurred_at": occurred_at,
                    "period_start": period_start,
                    "idempotency_key": idempotency_key,
                    "fingerprint": fingerprint,
                    "properties": properties,
                    "source": source,
                    "recorded_at": now,
                }
            ]
        )
        if not inserted:
            replayed = await self._replayed(
                repository,
                organization_id=organization_id,
                record=record,
                meter=meter.id,
                limit=limit,
                period=(period_start, period_end),
            )
            assert replayed is not None  # the insert found the key
            return replayed
        amount = quantity
        if unique_value is not None:
            new_values = await repository.insert_unique_values(
                organization_id=organization_id,
                meter=meter.id,
                period_start=period_start,
                values={unique_value},
            )
            amount = len(new_values)
            if not new_values:
                unique_value = None  # already counted this period: nothing to take back
        # A hard quota bounds the counter; every counter stops at MAX_USAGE_PER_PERIOD.
        by_quota = hard and limit is not None and limit < MAX_USAGE_PER_PERIOD
        value = await repository.bump_counter(
            organization_id=organization_id,
            meter=meter.id,
            period_start=period_start,
            period_end=period_end,
            amount=amount,
            keep_max=meter.aggregation == "max",
            now=now,
            limit=limit if by_quota and limit is not None else MAX_USAGE_PER_PERIOD,
        )
        if value is None and not by_quota:
            raise UsageLimitExceeded(meter.id)
        if value is None:
            # Over the hard limit: take the event back; nothing of this decision stays.
            await repository.delete_event(organization_id, idempotency_key)
            if unique_value is not None:
                await repository.delete_unique_value(
                    organization_id=organization_id,
                    meter=meter.id,
                    period_start=period_start,
                    value=unique_value,
                )
            used = await repository.get_counter_value(
                organization_id=organization_id, meter=meter.id, period_start=period_start
            )
            return Consumption(
                allowed=False,
                duplicate=False,
                meter=meter.id,
                used=used,
                limit=limit,
                period_start=period_start,
                period_end=period_end,
            )
        await self._announce_thresholds(
            session,
            organization_id=organization_id,
            meter=meter.id,
            period_start=period_start,
            period_end=period_end,
            used=value,
            limit=limit,
            now=now,
        )
        return Consumption(
            allowed=True,
            duplicate=False,
            meter=meter.id,
            used=value,
            limit=limit,
            period_start=period_start,
            period_end=period_end,
            amount=0 if meter.aggregation == "max" else amount,
            idempotency_key=idempotency_key,
            unique_value=unique_value,
        )

    async def replay(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        meter_id: str,
        quantity: int,
        idempotency_key: str,
        limit: int | None,
        now: datetime,
        properties: dict[str, Any] | None = None,
        credits: int = 0,
    ) -> Consumption | None:
        """What :meth:`consume` would answer a retry of an earlier request with this
        ``idempotency_key`` (a duplicate, nothing counted), without writing: None when
        the key is new, 409 ``idempotency_key_reused`` when it was another request."""
        record = UsageRecord(
            meter=meter_id,
            quantity=quantity,
            idempotency_key=idempotency_key,
            properties=properties,
            credits=credits,
        )
        meter, _occurred_at, period_start, period_end, _unique = self.check_record(record, now=now)
        return await self._replayed(
            MeteringRepository(session),
            organization_id=organization_id,
            record=record,
            meter=meter.id,
            limit=limit,
            period=(period_start, period_end),
        )

    async def _replayed(
        self,
        repository: MeteringRepository,
        *,
        organization_id: str,
        record: UsageRecord,
        meter: str,
        limit: int | None,
        period: tuple[datetime, datetime],
    ) -> Consumption | None:
        key = record.idempotency_key
        stored = (await repository.get_fingerprints(organization_id, [key])).get(key)
        if stored is None:
            return None
        if stored != _fingerprint(record):
            raise IdempotencyKeyReused(
                "this idempotency_key was used for a different request", idempotency_key=key
            )
        used = await repository.get_counter_value(
            organization_id=organization_id, meter=meter, period_start=period[0]
        )
        return Consumption(
            allowed=True,
            duplicate=True,
            meter=meter,
            used=used,
            limit=limit,
            period_start=period[0],
            period_end=period[1],
        )

    async def consume_many(
        self, session: AsyncSession, requests: list[ConsumeRequest]
    ) -> list[Consumption]:
        """:meth:`consume` for many decisions at once (the group-committed hot path).

        Same outcome as calling :meth:`consume` for each request in order, with a few
        statements for the whole batch instead of a few per decision: the events go in
        with one insert, each counter is locked and read once, the quota is applied in
        order in memory, and each counter is written once. ``count``, ``sum`` and
        ``max`` meters only (``unique`` ones go through :meth:`consume`).
        """
        prepared: list[tuple[ConsumeRequest, Meter, datetime, datetime, str]] = []
        rows: list[dict[str, Any]] = []
        first_fingerprint: dict[tuple[str, str], str] = {}
        period_ends: dict[tuple[str, str, datetime], datetime] = {}
        now = max(request.now for request in requests)
        for request in requests:
            record = UsageRecord(
                meter=request.meter_id,
                quantity=request.quantity,
                idempotency_key=request.idempotency_key,
            )
            meter, occurred_at, period_start, period_end, _unique = self.check_record(
                record, now=request.now
            )
            if meter.aggregation == "unique":
                raise ValueError("consume_many does not take unique meters; use consume()")
            fingerprint = _fingerprint(record)
            prepared.append((request, meter, period_start, period_end, fingerprint))
            period_ends[(request.organization_id, meter.id, period_start)] = period_end
            pair = (request.organization_id, request.idempotency_key)
            if pair in first_fingerprint:
                continue
            first_fingerprint[pair] = fingerprint
            rows.append(
                {
                    "organization_id": request.organization_id,
                    "meter": meter.id,
                    "quantity": request.quantity,
                    "occurred_at": occurred_at,
                    "period_start": period_start,
                    "idempotency_key": request.idempotency_key,
                    "fingerprint": fingerprint,
                    "properties": None,
                    "source": request.source,
                    "recorded_at": now,
                }
            )
        for row, event_id in zip(rows, new_ids("use", len(rows)), strict=True):
            row["id"] = event_id
        repository = MeteringRepository(session)
        inserted = await repository.insert_event_pairs(rows)
        known: dict[str, list[str]] = defaultdict(list)
        for organization_id, key in first_fingerprint:
            if (organization_id, key) not in inserted:
                known[organization_id].append(key)
        for organization_id, keys in known.items():
            stored = await repository.get_fingerprints(organization_id, keys)
            for key in keys:
                if stored.get(key) != first_fingerprint[(organization_id, key)]:
                    raise IdempotencyKeyReused(
                        "this idempotency_key was used for a different request",
                        idempotency_key=key,
                    )
        values = await repository.lock_counters(list(period_ends), period_ends=period_ends, now=now)
        before = dict(values)
        limits: dict[tuple[str, str, datetime], int | None] = {}
        denied: dict[str, list[str]] = defaultdict(list)
        counted: set[tuple[str, str]] = set()
        results: list[Consumption] = []
        for request, meter, period_start, period_end, fingerprint in prepared:
            slot = (request.organization_id, meter.id, period_start)
            pair = (request.organization_id, request.idempotency_key)
            limits[slot] = request.limit
            current = values[slot]
            if pair not in inserted or pair in counted:
                # Recorded before (or earlier in this batch): answer as allowed, count nothing.
                if first_fingerprint[pair] != fingerprint:
                    raise IdempotencyKeyReused(
                        "this idempotency_key was used for a different request",
                        idempotency_key=request.idempotency_key,
                    )
                allowed, duplicate = True, True
            else:
                counted.add(pair)
                if meter.aggregation == "max":
                    proposed = max(current, request.quantity)
                    over = request.quantity > request.limit if request.limit is not None else False
                else:
                    proposed = current + request.quantity
                    over = request.limit is not None and proposed > request.limit
                allowed = not (over and request.hard)
                if allowed and proposed > MAX_USAGE_PER_PERIOD:
                    raise UsageLimitExceeded(meter.id)
                duplicate = False
                if allowed:
                    values[slot] = current = proposed
                else:
                    denied[request.organization_id].append(request.idempotency_key)
            results.append(
                Consumption(
                    allowed=allowed,
                    duplicate=duplicate,
                    meter=meter.id,
                    used=current,
                    limit=request.limit,
                    period_start=period_start,
                    period_end=period_end,
                )
            )
        for organization_id, keys in denied.items():
            await repository.delete_events(organization_id, keys)
        changed = {slot: value for slot, value in values.items() if value != before[slot]}
        await repository.set_counters(changed, now=now)
        for (organization_id, meter_id, period_start), value in changed.items():
            await self._announce_thresholds(
                session,
                organization_id=organization_id,
                meter=meter_id,
                period_start=period_start,
                period_end=period_ends[(organization_id, meter_id, period_start)],
                used=value,
                limit=limits.get((organization_id, meter_id, period_start)),
                now=now,
            )
        return results

    async def undo(
        self, session: AsyncSession, *, organization_id: str, consumption: Consumption
    ) -> None:
        """Take back an allowed consumption (a later step of the decision said no).

        A ``max`` meter keeps its high-water mark: a maximum cannot be un-observed.
        """
        if consumption.duplicate or consumption.idempotency_key is None:
            return
        repository = MeteringRepository(session)
        await repository.delete_event(organization_id, consumption.idempotency_key)
        if consumption.unique_value is not None:
            await repository.delete_unique_value(
                organization_id=organization_id,
                meter=consumption.meter,
                period_start=consumption.period_start,
                value=consumption.unique_value,
            )
        if consumption.amount:
            await repository.subtract_from_counter(
                organization_id=organization_id,
                meter=consumption.meter,
                period_start=consumption.period_start,
                amount=consumption.amount,
            )

    async def usage_summary(
        self, session: AsyncSession, *, organization_id: str, now: datetime
    ) -> UsageSummary:
        """Every meter's use in its open period, with the plan's limit."""
        _assignment, effective = await plans_service.effective_plan(session, organization_id)
        limits = meter_limits(effective)
        catalog = catalog_service.catalog
        slots = {meter.id: period_bounds(now, meter.period) for meter in catalog.meters.values()}
        values = await MeteringRepository(session).list_counters(
            organization_id, [(meter_id, bounds[0]) for meter_id, bounds in slots.items()]
        )
        month_start, month_end = period_bounds(now, "month")
        meters = []
        for meter_id, (start, end) in slots.items():
            used = values.get((meter_id, start), 0)
            limit = limits.get(meter_id)
            meters.append(
                MeterUsage(
                    meter=meter_id,
                    used=used,
                    limit=limit,
                    remaining=None if limit is None else max(0, limit - used),
                    percent=None if not limit else round(100 * used / limit, 2),
                    period_start=start,
                    period_end=end,
                )
            )
        return UsageSummary(period_start=month_start, period_end=month_end, meters=meters)

    async def read_usage_ahead(
        self,
        session: AsyncSession,
        *,
        periods: list[tuple[str, str, datetime, datetime]],
    ) -> None:
        """:meth:`usage_between` of many (organization, meter, start, end), one query per
        meter and period, answered from memory once each later in this transaction (a
        billing sweep's chunk of renewals)."""
        groups: dict[tuple[str, datetime, datetime], list[str]] = defaultdict(list)
        for organization_id, meter_id, start, end in periods:
            groups[(meter_id, start, end)].append(organization_id)
        known: dict[tuple[str, str, datetime, datetime], int] = session.info.setdefault(
            _READ_USAGE, {}
        )
        repository = MeteringRepository(session)
        for (meter_id, start, end), organization_ids in groups.items():
            meter = catalog_service.get_meter(meter_id)
            found = await repository.aggregate_events_by_organization(
                organization_ids=sorted(set(organization_ids)),
                meter=meter.id,
                aggregation=meter.aggregation,
                start=start,
                end=end,
                property_name=meter.property,
            )
            for organization_id in organization_ids:
                known[(organization_id, meter_id, start, end)] = found.get(organization_id, 0)

    async def usage_between(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        meter_id: str,
        start: datetime,
        end: datetime,
    ) -> int:
        """The aggregate of a meter's events in [start, end) (billing's overage lines)."""
        known: dict[tuple[str, str, datetime, datetime], int] | None = session.info.get(_READ_USAGE)
        key = (organization_id, meter_id, start, end)
        if known is not None and key in known:
            return known.pop(key)
        meter = catalog_service.get_meter(meter_id)
        return await MeteringRepository(session).aggregate_events(
            organization_id=organization_id,
            meter=meter.id,
            aggregation=meter.aggregation,
            start=start,
            end=end,
            property_name=meter.property,
        )

    async def _limits(self, session: AsyncSession, organization_id: str) -> dict[str, int | None]:
        _assignment, effective = await plans_service.effective_plan(session, organization_id)
        return meter_limits(effective)

    async def _announce_thresholds(
        self,
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


metering_service = MeteringService()
