import asyncio

import pytest
import structlog
from sqlalchemy import update

from tollway.audit.models import AuditEntry
from tollway.audit.service import audit_service
from tollway.db import Database


class Rollback(Exception):
    pass


async def append(database: Database, action: str, **details: object) -> None:
    async with database.transaction() as session:
        audit_service.record(
            session, action=action, target="org_1", organization_id="org_1", details=details
        )


class TestAuditChain:
    async def test_entries_chain_and_verify(self, database: Database) -> None:
        for number in range(5):
            await append(database, "credits.granted", amount=number)
        async with database.transaction(write=False) as session:
            report = await audit_service.verify(session)
        assert report.ok
        assert report.entries == 5

    async def test_an_entry_exists_only_if_its_transaction_commits(
        self, database: Database
    ) -> None:
        with pytest.raises(Rollback):
            async with database.transaction() as session:
                audit_service.record(session, action="role.changed", target="usr_1")
                raise Rollback
        await append(database, "role.changed")
        async with database.transaction(write=False) as session:
            report = await audit_service.verify(session)
        assert report.ok
        assert report.entries == 1

    async def test_editing_a_row_breaks_the_chain_at_that_row(self, database: Database) -> None:
        for number in range(3):
            await append(database, "credits.granted", amount=number)
        async with database.transaction() as session:
            second = (
                await session.execute(
                    update(AuditEntry)
                    .where(AuditEntry.seq == 2)
                    .values(details={"amount": 1000})
                    .returning(AuditEntry.seq)
                )
            ).scalar_one()
        async with database.transaction(write=False) as session:
            report = await audit_service.verify(session)
        assert not report.ok
        assert report.broken_at_seq == second

    async def test_concurrent_appends_keep_one_unbroken_chain(self, database: Database) -> None:
        await asyncio.gather(*(append(database, "key.created", n=n) for n in range(20)))
        async with database.transaction(write=False) as session:
            report = await audit_service.verify(session)
        assert report.ok, report.reason
        assert report.entries == 20

    async def test_the_request_context_names_actor_and_request(self, database: Database) -> None:
        with structlog.contextvars.bound_contextvars(actor="user:usr_9", request_id="req-9"):
            async with database.transaction() as session:
                entry = audit_service.record(session, action="key.revoked", target="key_1")
        assert (entry.actor, entry.request_id) == ("user:usr_9", "req-9")


@pytest.mark.postgres_only
class TestAuditOnPostgres:
    async def test_two_engines_appending_at_once_keep_the_chain(self, database: Database) -> None:
        other = Database(database.settings)
        try:
            await asyncio.gather(
                *(append(database, "a.one", n=n) for n in range(10)),
                *(append(other, "a.two", n=n) for n in range(10)),
            )
        finally:
            await other.dispose()
        async with database.transaction(write=False) as session:
            report = await audit_service.verify(session)
        assert report.ok, report.reason
        assert report.entries == 20
