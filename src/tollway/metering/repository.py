"""Every query of the metering domain.

Events go in with ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: the unique key
(organization, idempotency key) decides which events are new, also between two
concurrent requests on PostgreSQL (the second waits for the first to commit). The
counters are bumped with one upsert per (meter, period), optionally conditional on
staying within a quota, which keeps concurrent decisions exact without a read-modify-write.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.metering.models import UsageCounter, UsageEvent, UsageUniqueValue

#: Rows per multi-row INSERT: far below SQLite's 32,766 and PostgreSQL's 32,767 parameters.
INSERT_CHUNK = 1000


class MeteringRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"

    def _insert(self, model: Any) -> Any:
        return pg_insert(model) if self.postgres else sqlite_insert(model)

    async def insert_events(self, rows: list[dict[str, Any]]) -> set[str]:
        """Insert the events whose key is new; returns the keys actually inserted."""
        inserted: set[str] = set()
        for start in range(0, len(rows), INSERT_CHUNK):
            statement = (
                self._insert(UsageEvent)
                .values(rows[start : start + INSERT_CHUNK])
                .on_conflict_do_nothing(index_elements=["organization_id", "idempotency_key"])
                .returning(UsageEvent.idempotency_key)
            )
            inserted.update((await self.session.execute(statement)).scalars())
        return inserted

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
        statement = (
            self._insert(UsageUniqueValue)
            .values(rows)
            .on_conflict_do_nothing()
            .returning(UsageUniqueValue.value)
        )
        return set((await self.session.execute(statement)).scalars())

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
        table = UsageCounter.__table__
        statement = self._insert(UsageCounter).values(
            organization_id=organization_id,
            meter=meter,
            period_start=period_start,
            period_end=period_end,
            value=amount,
            notified_percent=0,
            updated_at=now,
        )
        if keep_max:
            bigger = func.greatest if self.postgres else func.max
            new_value: Any = bigger(table.c.value, statement.excluded.value)
        else:
            new_value = table.c.value + statement.excluded.value
        statement = statement.on_conflict_do_update(
            index_elements=["organization_id", "meter", "period_start"],
            set_={"value": new_value, "updated_at": statement.excluded.updated_at},
            where=(new_value <= limit) if limit is not None else None,
        ).returning(UsageCounter.value)
        value = (await self.session.execute(statement)).scalar_one_or_none()
        return int(value) if value is not None else None

    async def add_to_counters(self, rows: list[dict[str, Any]], *, keep_max: bool) -> list[Any]:
        """Unconditional multi-row bump (batch ingestion); returns (meter, period_start, value)."""
        if not rows:
            return []
        table = UsageCounter.__table__
        statement = self._insert(UsageCounter).values(rows)
        if keep_max:
            bigger = func.greatest if self.postgres else func.max
            new_value: Any = bigger(table.c.value, statement.excluded.value)
        else:
            new_value = table.c.value + statement.excluded.value
        statement = statement.on_conflict_do_update(
            index_elements=["organization_id", "meter", "period_start"],
            set_={"value": new_value, "updated_at": statement.excluded.updated_at},
        ).returning(UsageCounter.meter, UsageCounter.period_start, UsageCounter.value)
        return list(await self.session.execute(statement))

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
        where = and_(
            UsageEvent.organization_id == organization_id,
            UsageEvent.meter == meter,
            UsageEvent.occurred_at >= start,
            UsageEvent.occurred_at < end,
        )
        if aggregation == "max":
            column: Any = func.max(UsageEvent.quantity)
        elif aggregation == "unique":
            assert property_name is not None
            column = func.count(func.distinct(UsageEvent.properties[property_name].as_string()))
        else:
            column = func.sum(UsageEvent.quantity)
        value = (await self.session.execute(select(column).where(where))).scalar()
        return int(value or 0)
