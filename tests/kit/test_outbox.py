import pytest

from tollway.db import Database
from tollway.kit.outbox import outbox


class Rollback(Exception):
    pass


class TestOutbox:
    async def test_an_event_commits_with_the_work_that_published_it(
        self, database: Database
    ) -> None:
        async with database.transaction() as session:
            await outbox.publish(session, "credits.granted", {"amount": 5}, organization_id="org_x")
        async with database.transaction(write=False) as session:
            events = await outbox.list_undispatched(session)
        assert [(event.event_type, event.payload) for event in events] == [
            ("credits.granted", {"amount": 5})
        ]

    async def test_an_event_vanishes_with_work_that_rolled_back(self, database: Database) -> None:
        with pytest.raises(Rollback):
            async with database.transaction() as session:
                await outbox.publish(session, "credits.granted", {"amount": 5})
                raise Rollback
        async with database.transaction(write=False) as session:
            assert await outbox.list_undispatched(session) == []

    async def test_events_keep_their_order_and_can_be_marked_dispatched(
        self, database: Database
    ) -> None:
        async with database.transaction() as session:
            for number in range(3):
                await outbox.publish(session, "test.ordered", {"n": number})
        async with database.transaction() as session:
            events = await outbox.list_undispatched(session)
            assert [event.payload["n"] for event in events] == [0, 1, 2]
            await outbox.mark_dispatched(session, [events[0].id], at=events[0].occurred_at)
        async with database.transaction(write=False) as session:
            assert [e.payload["n"] for e in await outbox.list_undispatched(session)] == [1, 2]

    async def test_event_types_must_be_noun_dot_verb(self, database: Database) -> None:
        async with database.transaction() as session:
            with pytest.raises(ValueError, match=r"noun\.verb"):
                await outbox.publish(session, "Granted Credits", {})
