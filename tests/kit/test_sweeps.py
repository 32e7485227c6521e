"""Sweeps: registered, run in rounds, isolated from each other's failures, and on
PostgreSQL claiming rows that no other worker holds."""

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from tollway.db import Database
from tollway.kit import sweeps
from tollway.kit.clock import ManualClock
from tollway.kit.outbox import OutboxEvent, outbox
from tollway.kit.sweeps import SweepContext, Sweeper, claim_due, register_sweep


@pytest.fixture
def isolated_registry() -> Iterator[None]:
    saved = dict(sweeps._SWEEPS)
    sweeps._SWEEPS.clear()
    yield
    sweeps._SWEEPS.clear()
    sweeps._SWEEPS.update(saved)


@pytest.mark.usefixtures("isolated_registry")
class TestSweeper:
    async def test_a_failing_sweep_does_not_stop_the_others(
        self, database: Database, clock: ManualClock
    ) -> None:
        ran: list[str] = []

        @register_sweep("a.broken")
        async def broken(_context: SweepContext) -> int:
            raise RuntimeError("boom")

        @register_sweep("b.working")
        async def working(_context: SweepContext) -> int:
            ran.append("b")
            return 1

        sweeper = Sweeper(SweepContext(database, clock, database.settings))
        await sweeper.tick()
        assert ran == ["b"]

    async def test_a_sweep_waits_for_its_interval(
        self, database: Database, clock: ManualClock
    ) -> None:
        ran: list[int] = []

        @register_sweep("slow", interval_seconds=3600)
        async def slow(_context: SweepContext) -> int:
            ran.append(1)
            return 0

        sweeper = Sweeper(SweepContext(database, clock, database.settings))
        await sweeper.tick()
        await sweeper.tick()
        assert ran == [1]

    async def test_stop_ends_run_forever(self, database: Database, clock: ManualClock) -> None:
        sweeper = Sweeper(SweepContext(database, clock, database.settings))
        task = asyncio.create_task(sweeper.run_forever())
        sweeper.stop()
        await asyncio.wait_for(task, timeout=5)
        assert task.done()


@pytest.mark.postgres_only
class TestClaimDue:
    async def test_two_workers_never_claim_the_same_rows(self, database: Database) -> None:
        async with database.transaction() as session:
            for number in range(10):
                await outbox.publish(session, "test.due", {"n": number})
        other = Database(database.settings)
        try:
            statement = select(OutboxEvent).order_by(OutboxEvent.seq).limit(5)
            async with database.transaction() as first, other.transaction() as second:
                mine = (await first.execute(claim_due(statement, database))).scalars().all()
                theirs = (await second.execute(claim_due(statement, other))).scalars().all()
                assert len(mine) == len(theirs) == 5
                assert {row.id for row in mine}.isdisjoint({row.id for row in theirs})
        finally:
            await other.dispose()
