from __future__ import annotations

from typing import Annotated

from fastapi import Body

from tollway.kit.routing import ClockDep, SessionDep, api_router
from tollway.metering.auth import UsageReader, UsageWriter
from tollway.metering.schemas import (
    IngestOut,
    MeterUsageOut,
    UsageBatchIn,
    UsageIn,
    UsageOut,
)
from tollway.metering.service.counters import usage_counter_service
from tollway.metering.service.events import usage_event_service
from tollway.metering.service.records import UsageRecord

router = api_router(tags=["usage"])


@router.post("/api/v1/billing/usage", response_model=IngestOut)
async def record_usage(
    body: Annotated[UsageIn, Body()],
    principal: UsageWriter,
    session: SessionDep,
    clock: ClockDep,
) -> IngestOut:
    """Record one usage event or a batch (``{"events": [...]}``, up to 1,000).

    Each event counts once per ``idempotency_key``: a retry reports it in
    ``duplicates``; the same key with a different event is 409
    ``idempotency_key_reused`` and nothing of the batch is kept. Every accepted event
    is committed before the answer. 422 codes: ``unknown_meter``, ``invalid_quantity``,
    ``invalid_timestamp``, ``timestamp_in_future``, ``period_closed``,
    ``missing_property``, ``batch_too_large`` (with the event's ``index``)."""
    events = body.events if isinstance(body, UsageBatchIn) else [body]
    result = await usage_event_service.ingest(
        session,
        organization_id=principal.organization_id,
        records=[
            UsageRecord(
                meter=event.meter,
                quantity=event.quantity,
                idempotency_key=event.idempotency_key,
                timestamp=event.timestamp,
                properties=event.properties,
            )
            for event in events
        ],
        now=clock.now(),
    )
    return IngestOut(
        accepted=result.accepted,
        duplicates=result.duplicates,
        duplicate_keys=result.duplicate_keys,
    )


@router.get("/api/v1/billing/usage", response_model=UsageOut)
async def get_usage(
    principal: UsageReader,
    session: SessionDep,
    clock: ClockDep,
) -> UsageOut:
    """Use of every meter in its open period, against the plan's limit (``null``:
    unlimited); ``period_start``/``period_end`` give the current calendar month."""
    summary = await usage_counter_service.usage_summary(
        session, organization_id=principal.organization_id, now=clock.now()
    )
    return UsageOut(
        period_start=summary.period_start,
        period_end=summary.period_end,
        meters=[
            MeterUsageOut(
                meter=usage.meter,
                used=usage.used,
                limit=usage.limit,
                remaining=usage.remaining,
                percent=usage.percent,
                period_start=usage.period_start,
                period_end=usage.period_end,
            )
            for usage in summary.meters
        ],
    )
