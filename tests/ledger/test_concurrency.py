"""Holds under concurrency: available never drops below zero."""

from __future__ import annotations

import asyncio

import pytest

from tests.ledger.conftest import assert_books_balance
from tollway.config import Settings
from tollway.db import Database
from tollway.errors import TollwayError
from tollway.kit.clock import ManualClock
from tollway.ledger.service.grants import grant_service
from tollway.ledger.service.holds import hold_service
from tollway.ledger.service.transfers import transfer_service


async def race(databases: list[Database], clock: ManualClock, organization_id: str) -> int:
    """200 reserves of 1 credit at once, each in its own transaction and task."""

    async def one(index: int) -> bool:
        database = databases[index % len(databases)]
        try:
            async with database.transaction() as session:
                await hold_service.reserve(
                    session, organization_id=organization_id, amount=1, now=clock.now()
                )
        except TollwayError as error:
            if error.code != "insufficient_credits":
                raise
            return False
        return True

    results = await asyncio.gather(*(one(index) for index in range(200)))
    return sum(results)


async def fund(database: Database, clock: ManualClock, organization_id: str, amount: int) -> None:
    async with database.transaction() as session:
        await grant_service.grant(
            session,
            organization_id=organization_id,
            amount=amount,
            source="admin",
            now=clock.now(),
            reason="race",
        )


async def figures(database: Database, clock: ManualClock, organization_id: str) -> tuple[int, int]:
    async with database.transaction(write=False) as session:
        balance = await transfer_service.balance(
            session, organization_id=organization_id, now=clock.now()
        )
    return balance.reserved, balance.available


class TestParallelReserves:
    async def test_200_reserves_of_1_against_50_exactly_50_succeed(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await fund(database, clock, organization_id, 50)
        assert await race([database], clock, organization_id) == 50
        assert await figures(database, clock, organization_id) == (50, 0)
        await assert_books_balance(database, organization_id)

    @pytest.mark.postgres_only
    async def test_two_processes_racing_on_postgres_still_hold_exactly_50(
        self, database: Database, settings: Settings, clock: ManualClock, organization_id: str
    ) -> None:
        await fund(database, clock, organization_id, 50)
        other = Database(settings)  # a second engine and pool, as another process has
        try:
            assert await race([database, other], clock, organization_id) == 50
        finally:
            await other.dispose()
        assert await figures(database, clock, organization_id) == (50, 0)
        await assert_books_balance(database, organization_id)
