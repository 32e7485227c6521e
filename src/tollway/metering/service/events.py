"""Usage events: a batch of records ingested, each counted exactly once."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.kit.ids import new_ids
from tollway.kit.numbers import MAX_USAGE_PER_PERIOD
from tollway.metering.errors import (
    BatchTooLarge,
    IdempotencyKeyReused,
    InvalidQuantity,
    UsageLimitExceeded,
)
from tollway.metering.repository import MeteringRepository
from tollway.metering.service.records import (
    MAX_BATCH,
    IngestResult,
    UsageRecord,
    announce_thresholds,
    check_record,
    meter_limits,
    record_fingerprint,
)
from tollway.plans.catalog import Meter
from tollway.plans.service.assignments import plans_service


class UsageEventService:
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
            meter, occurred_at, period_start, period_end, unique_value = check_record(
                record, now=now, index=index, periods=periods
            )
            fingerprint = record_fingerprint(record)
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
                await announce_thresholds(
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

    async def _limits(self, session: AsyncSession, organization_id: str) -> dict[str, int | None]:
        _assignment, effective = await plans_service.effective_plan(session, organization_id)
        return meter_limits(effective)


usage_event_service = UsageEventService()
