from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from tollway.audit.models import AuditChainHead, AuditEntry
from tollway.kit.pagination import PageParams, PageResult, paginate

HEAD_ID = 1


def lock_head(session: Session) -> AuditChainHead:
    """The chain head, locked until commit (a no-op lock on SQLite, which has one writer)."""
    statement = select(AuditChainHead).where(AuditChainHead.id == HEAD_ID).with_for_update()
    head = session.execute(statement).scalar_one_or_none()
    if head is None:
        head = AuditChainHead(id=HEAD_ID)
        session.add(head)
        session.flush()
    return head


async def get_head(session: AsyncSession) -> AuditChainHead | None:
    statement = select(AuditChainHead).where(AuditChainHead.id == HEAD_ID)
    return (await session.execute(statement)).scalar_one_or_none()


async def iterate_entries(session: AsyncSession, *, batch: int = 1000) -> AsyncIterator[AuditEntry]:
    last_seq = 0
    while True:
        statement = (
            select(AuditEntry)
            .where(AuditEntry.seq > last_seq)
            .order_by(AuditEntry.seq)
            .limit(batch)
        )
        rows = list((await session.execute(statement)).scalars())
        if not rows:
            return
        for row in rows:
            yield row
        last_seq = rows[-1].seq


async def list_entries(
    session: AsyncSession,
    *,
    params: PageParams,
    organization_id: str | None = None,
    action: str | None = None,
) -> PageResult[AuditEntry]:
    statement = select(AuditEntry)
    if organization_id is not None:
        statement = statement.where(AuditEntry.organization_id == organization_id)
    if action is not None:
        statement = statement.where(AuditEntry.action == action)
    return await paginate(session, statement, id_column=AuditEntry.id, params=params)
