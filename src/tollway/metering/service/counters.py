"""Usage counters: quota consumption on the decision path (consume, replay, undo) and
the usage read back per period."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.kit.ids import new_id, new_ids
from tollway.kit.numbers import MAX_USAGE_PER_PERIOD
from tollway.metering.errors import IdempotencyKeyReused, UsageLimitExceeded
from tollway.metering.repository import MeteringRepository
from tollway.metering.service.records import (
    ConsumeRequest,
    Consumption,
    MeterUsage,
    UsageRecord,
    UsageSummary,
    announce_thresholds,
    check_record,
    meter_limits,
    period_bounds,
    record_fingerprint,
)
from tollway.plans.catalog import Meter
from tollway.plans.service.assignments import plans_service
from tollway.plans.service.catalog import catalog_service

#: session.info key: usage read by :meth:`UsageCounterService.read_usage_ahead`.
_READ_USAGE = "tollway.metering.read_usage"


class UsageCounterService:
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
        meter, occurred_at, period_start, period_end, unique_value = check_record(record, now=now)
        fingerprint = record_fingerprint(record)
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
        await announce_thresholds(
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
        meter, _occurred_at, period_start, period_end, _unique = check_record(record, now=now)
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
        if stored != record_fingerprint(record):
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
            meter, occurred_at, period_start, period_end, _unique = check_record(
                record, now=request.now
            )
            if meter.aggregation == "unique":
                raise ValueError("consume_many does not take unique meters; use consume()")
            fingerprint = record_fingerprint(record)
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
            await announce_thresholds(
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


usage_counter_service = UsageCounterService()
