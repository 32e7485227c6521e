from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.db import Database
from tollway.entitlements.writer import GroupCommitter
from tollway.errors import Conflict
from tollway.kit.outbox import outbox


async def count_events(database: Database) -> int:
    async with database.transaction(write=False) as session:
        return len(await outbox.list_events(session))


class TestGroupCommit:
    async def test_units_share_transactions_and_answer_after_commit(
        self, app: FastAPI, database: Database
    ) -> None:
        committer = GroupCommitter(database)
        transactions: set[int] = set()

        def unit(number: int) -> Callable[[AsyncSession], Awaitable[int]]:
            async def work(session: AsyncSession) -> int:
                transactions.add(id(session))
                await outbox.publish(session, "test.written", {"n": number})
                return number

            return work

        results = await asyncio.gather(*(committer.run(unit(n)) for n in range(50)))
        assert results == list(range(50))
        assert len(transactions) < 50  # grouped
        assert await count_events(database) == 50  # every write durable once answered

    async def test_a_failing_unit_does_not_sink_its_neighbours(
        self, app: FastAPI, database: Database
    ) -> None:
        committer = GroupCommitter(database)

        async def good(session: AsyncSession) -> str:
            await outbox.publish(session, "test.good", {})
            return "ok"

        async def bad(session: AsyncSession) -> str:
            await outbox.publish(session, "test.bad", {})
            raise Conflict("no", code="boom")

        outcomes = await asyncio.gather(
            committer.run(good), committer.run(bad), committer.run(good), return_exceptions=True
        )
        assert outcomes[0] == outcomes[2] == "ok"
        assert isinstance(outcomes[1], Conflict)
        async with database.transaction(write=False) as session:
            kinds = [event.event_type for event in await outbox.list_events(session)]
        assert sorted(kinds) == ["test.good", "test.good"]

    async def test_a_lone_failure_reaches_its_caller(
        self, app: FastAPI, database: Database
    ) -> None:
        committer = GroupCommitter(database)

        async def bad(session: AsyncSession) -> None:
            raise Conflict("no", code="boom")

        with pytest.raises(Conflict):
            await committer.run(bad)
