"""Every query of the metering domain.

Events go in with ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: the unique key
(organization, idempotency key) decides which events are new, also between two
concurrent requests on PostgreSQL (the second waits for the first to commit). The
counters are bumped with one upsert per (meter, period), optionally conditional on
staying within a quota, which keeps concurrent decisions exact without a read-modify-write.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Table, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.metering.models import UsageCounter, UsageEvent, UsageUniqueValue

#: Keys per ``IN (...)`` lookup: far below SQLite's and PostgreSQL's parameter limits.
INSERT_CHUNK = 1000

_events = cast(Table, UsageEvent.__table__)
_counters = cast(Table, UsageCounter.__table__)
_uniques = cast(Table, UsageUniqueValue.__table__)


def _insert_for(postgres: bool, table: Any) -> Any:
    return pg_insert(table) if postgres else sqlite_insert(table)


# The hot statements are built once per dialect and variant and executed with parameters
# (many rows go through SQLAlchemy's "insertmanyvalues"), so SQLAlchemy compiles each
# once instead of on every decision.


@functools.cache
def _insert_events_statement(postgres: bool) -> Any:
    return (
        _insert_for(postgres, _events)
        .on_conflict_do_nothing(index_elements=["organization_id", "idempotency_key"])
        .returning(_events.c.idempotency_key)
    )


@functools.cache
def _insert_event_pairs_statement(postgres: bool) -> Any:
    return (
        _insert_for(postgres, _events)
        .on_conflict_do_nothing(index_elements=["organization_id", "idempotency_key"])
        .returning(_events.c.organization_id, _events.c.idempotency_key)
    )


@functools.cache
def _ensure_counter_statement(postgres: bool) -> Any:
    return _insert_for(postgres, _counters).on_conflict_do_nothing(
        index_elements=["organization_id", "meter", "period_start"]
    )


# Expanding parameters: one compiled form serves any number of counters.
_LOCK_COUNTERS = (
    select(
        _counters.c.organization_id,
        _counters.c.meter,
        _counters.c.period_start,
        _counters.c.value,
    )
    .where(
        _counters.c.organization_id.in_(bindparam("organization_ids", expanding=True)),
        _counters.c.meter.in_(bindparam("meters", expanding=True)),
        _counters.c.period_start.in_(bindparam("period_starts", expanding=True)),
    )
    .order_by(_counters.c.organization_id, _counters.c.meter, _counters.c.period_start)
    .with_for_update()
)


def _aggregate(aggregation: str, property_name: str | None) -> Any:
    """A meter's aggregate over usage events: sum, max or count of distinct values."""
    if aggregation == "max":
        return func.max(UsageEvent.quantity)
    if aggregation == "unique":
        assert property_name is not None
        return func.count(func.distinct(UsageEvent.properties[property_name].as_string()))
    return func.sum(UsageEvent.quantity)


def _in_period(meter: str, start: datetime, end: datetime) -> tuple[Any, ...]:
    return (
        UsageEvent.meter == meter,
        UsageEvent.occurred_at >= start,
        UsageEvent.occurred_at < end,
    )


_SET_COUNTER = (
    update(_counters)
    .where(
        _counters.c.organization_id == bindparam("slot_organization_id"),
        _counters.c.meter == bindparam("slot_meter"),
        _counters.c.period_start
        == bindparam("slot_period_start", type_=_counters.c.period_start.type),
    )
    .values(
        value=bindparam("new_value", type_=BigInteger()),
        updated_at=bindparam("new_updated_at", type_=_counters.c.updated_at.type),
    )
)


@functools.cache
def _insert_uniques_statement(postgres: bool) -> Any:
    return _insert_for(postgres, _uniques).on_conflict_do_nothing().returning(_uniques.c.value)


@functools.cache
def _bump_statement(postgres: bool, keep_max: bool, limited: bool) -> Any:
    columns = ("organization_id", "meter", "period_start", "period_end", "value", "updated_at")
    values: dict[str, Any] = {
        name: bindparam(name, type_=_counters.c[name].type) for name in columns
    }
    statement = _insert_for(postgres, _counters).values({**values, "notified_percent": 0})
    if keep_max:
        bigger = func.greatest if postgres else func.max
        new_value: Any = bigger(_counters.c.value, statement.excluded.value)
    else:
        new_value = _counters.c.value + statement.excluded.value
    return statement.on_conflict_do_update(
        index_elements=["organization_id", "meter", "period_start"],
        set_={"value": new_value, "updated_at": statement.excluded.updated_at},
        where=(new_value <= bindparam("limit", type_=BigInteger())) if limited else None,
    ).returning(_counters.c.value)


class MeteringRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"

    async def insert_events(self, rows: list[dict[str, Any]]) -> set[str]:
        """Insert the events whose key is new; returns the keys actually inserted."""
        if not rows:
            return set()
        result = await self.session.execute(_insert_events_statement(self.postgres), rows)
        return set(result.scalars())

    async def insert_event_pairs(self, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
        """Insert events of several organizations; returns the new (organization, key) pairs."""
        if not rows:
            return set()
        connection = await self.session.connection()
        result = await connection.execute(_insert_event_pairs_statement(self.postgres), rows)
        return {(str(org), str(key)) for org, key in result}

    async def lock_counters(
        self,
        slots: list[tuple[str, str, datetime]],
        *,
        period_ends: dict[Any, datetime],
        now: datetime,
    ) -> dict[tuple[str, str, datetime], int]:
        """The current values of the given counters, locked for this transaction.

        Missing counters are created (at 0) first, so that there is always a row to lock:
        two transactions can then never both start from "no row" (PostgreSQL). Rows are
        locked in one sorted order, so two batches cannot deadlock on each other.
        """
        ordered = sorted(set(slots))
        connection = await self.session.connection()
        parameters = {
            "organization_ids": sorted({org for org, _m, _p in ordered}),
            "meters": sorted({meter for _o, meter, _p in ordered}),
            "period_starts": sorted({start for _o, _m, start in ordered}),
        }
        wanted = set(ordered)
        values = {
            (org, meter, start): int(value)
            for org, meter, start, value in await connection.execute(_LOCK_COUNTERS, parameters)
            if (org, meter, start) in wanted
        }
        missing = [slot for slot in ordered if slot not in values]
        if missing:
            await connection.execute(
                _ensure_counter_statement(self.postgres),
                [
                    {
                        "organization_id": org,
                        "meter": meter,
                        "period_start": start,
                        "period_end": period_ends[(org, meter, start)],
                        "value": 0,
                        "notified_percent": 0,
                        "updated_at": now,
                    }
                    for org, meter, start in missing
                ],
            )
            return await self.lock_counters(slots, period_ends=period_ends, now=now)
        return values

    async def set_counters(
        self, values: dict[tuple[str, str, datetime], int], *, now: datetime
    ) -> None:
        if not values:
            return
        connection = await self.session.connection()
        await connection.execute(
            _SET_COUNTER,
            [
                {
                    "slot_organization_id": org,
                    "slot_meter": meter,
                    "slot_period_start": start,
                    "new_value": value,
                    "new_updated_at": now,
                }
                for (org, meter, start), value in values.items()
            ],
        )

    async def delete_events(self, organization_id: str, keys: list[str]) -> None:
        if keys:
            await self.session.execute(
                delete(UsageEvent).where(
                    UsageEvent.organization_id == organization_id,
                    UsageEvent.idempotency_key.in_(keys),
                )
            )

    async def get_fingerprints(self, organization_id: str, keys: Iterable[str]) -> dict[str, str]:
        wanted = list(keys)
        found: dict[str, str] = {}
        for start in range(0, len(wanted), INSERT_CHUNK):
            statement = select(UsageEvent.idempotency_key, UsageEvent.fingerprint).where(
                UsageEvent.organization_id == organization_id,
                UsageEvent.idempotency_key.in_(wanted[start : start + INSERT_CHUNK]),
            )
            rows = await self.session.execute(statement)
            found.update({str(key): str(value) for key, value in rows})
        return found

    async def delete_event(self, organization_id: str, idempotency_key: str) -> None:
        await self.session.execute(
            delete(UsageEvent).where(
                UsageEvent.organization_id == organization_id,
                UsageEvent.idempotency_key == idempotency_key,
            )
        )

    async def insert_unique_values(
        self, *, organization_id: str, meter: str, period_start: datetime, values: set[str]
    ) -> set[str]:
        """Remember distinct values; returns those not seen before this period."""
        if not values:
            return set()
        rows = [
            {
                "organization_id": organization_id,
                "meter": meter,
                "period_start": period_start,
                "value": value,
            }
            for value in values
        ]
        result = await self.session.execute(_insert_uniques_statement(self.postgres), rows)
        return set(result.scalars())

    async def delete_unique_value(
        self, *, organization_id: str, meter: str, period_start: datetime, value: str
    ) -> None:
        await self.session.execute(
            delete(UsageUniqueValue).where(
                UsageUniqueValue.organization_id == organization_id,
                UsageUniqueValue.meter == meter,
                UsageUniqueValue.period_start == period_start,
                UsageUniqueValue.value == value,
            )
        )

    async def bump_counter(
        self,
        *,
        organization_id: str,
        meter: str,
        period_start: datetime,
        period_end: datetime,
        amount: int,
        keep_max: bool,
        now: datetime,
        limit: int | None = None,
    ) -> int | None:
        """Add ``amount`` (or keep the maximum) and return the new value.

        With ``limit`` the change happens only if the new value stays within it, as one
        atomic statement (the row lock on PostgreSQL, the single writer on SQLite);
        None means it would have crossed the limit and nothing changed.
        """
        if limit is not None and amount > limit:
            return None
        parameters: dict[str, Any] = {
            "organization_id": organization_id,
            "meter": meter,
            "period_start": period_start,
            "period_end": period_end,
            "value": amount,
            "updated_at": now,
        }
        if limit is not None:
            parameters["limit"] = limit
        statement = _bump_statement(self.postgres, keep_max, limit is not None)
        value = (await self.session.execute(statement, parameters)).scalar_one_or_none()
        return int(value) if value is not None else None

    async def subtract_from_counter(
        self, *, organization_id: str, meter: str, period_start: datetime, amount: int
    ) -> None:
        await self.session.execute(
            update(UsageCounter)
            .where(
                UsageCounter.organization_id == organization_id,
                UsageCounter.meter == meter,
                UsageCounter.period_start == period_start,
            )
            .values(value=UsageCounter.value - amount)
        )

    async def raise_notified_percent(
        self, *, organization_id: str, meter: str, period_start: datetime, percent: int
    ) -> bool:
        """Record that ``percent`` was announced; False if it (or more) already was."""
        result = await self.session.execute(
            update(UsageCounter)
            .where(
                UsageCounter.organization_id == organization_id,
                UsageCounter.meter == meter,
                UsageCounter.period_start == period_start,
                UsageCounter.notified_percent < percent,
            )
            .values(notified_percent=percent)
            .returning(UsageCounter.meter)
        )
        return result.first() is not None

    async def get_counter_value(
        self, *, organization_id: str, meter: str, period_start: datetime
    ) -> int:
        value = (
            await self.session.execute(
                select(UsageCounter.value).where(
                    UsageCounter.organization_id == organization_id,
                    UsageCounter.meter == meter,
                    UsageCounter.period_start == period_start,
                )
            )
        ).scalar_one_or_none()
        return int(value) if value is not None else 0

    async def list_counters(
        self, organization_id: str, keys: list[tuple[str, datetime]]
    ) -> dict[tuple[str, datetime], int]:
        """Counter values for the given (meter, period_start) pairs."""
        if not keys:
            return {}
        statement = select(UsageCounter.meter, UsageCounter.period_start, UsageCounter.value).where(
            UsageCounter.organization_id == organization_id,
            UsageCounter.meter.in_({meter for meter, _ in keys}),
            UsageCounter.period_start.in_({start for _, start in keys}),
        )
        wanted = set(keys)
        return {
            (meter, start): int(value)
            for meter, start, value in await self.session.execute(statement)
            if (meter, start) in wanted
        }

    async def aggregate_events_by_organization(
        self,
        *,
        organization_ids: list[str],
        meter: str,
        aggregation: str,
        start: datetime,
        end: datetime,
        property_name: str | None = None,
    ) -> dict[str, int]:
        """:meth:`aggregate_events` of many organizations over one period, in one query
        (organizations without events are absent)."""
        statement = (
            select(UsageEvent.organization_id, _aggregate(aggregation, property_name))
            .where(
                UsageEvent.organization_id.in_(organization_ids),
                *_in_period(meter, start, end),
            )
            .group_by(UsageEvent.organization_id)
        )
        return {
            str(organization_id): int(value or 0)
            for organization_id, value in await self.session.execute(statement)
        }

    async def aggregate_events(
        self,
        *,
        organization_id: str,
        meter: str,
        aggregation: str,
        start: datetime,
        end: datetime,
        property_name: str | None = None,
    ) -> int:
        """The aggregate of the events in [start, end) (billing's usage for a period)."""
        statement = select(_aggregate(aggregation, property_name)).where(
            UsageEvent.organization_id == organization_id, *_in_period(meter, start, end)
        )
        value = (await self.session.execute(statement)).scalar()
        return int(value or 0)
