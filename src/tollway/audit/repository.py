from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from tollway.audit.models import GENESIS_HASH, AuditChainHead, AuditEntry
from tollway.kit.pagination import PageParams, PageResult, paginate

HEAD_ID = 1
_entries = cast(Table, AuditEntry.__table__)
_head = cast(Table, AuditChainHead.__table__)


_LOCK_HEAD = select(_head.c.last_hash).where(_head.c.id == HEAD_ID).with_for_update()
_INSERT_ENTRIES = insert(_entries)
_MOVE_HEAD = (
    update(_head)
    .where(_head.c.id == HEAD_ID)
    .values(
        last_seq=select(func.max(_entries.c.seq)).scalar_subquery(),
        last_hash=bindparam("last_hash"),
    )
)


def lock_head(session: Session) -> str:
    """The chain head's last hash, locked until commit (a no-op lock on SQLite, which has
    one writer). Reading it flushes the transaction's pending work."""
    last_hash = session.execute(_LOCK_HEAD).scalar_one_or_none()
    if last_hash is None:
        session.execute(insert(_head).values(id=HEAD_ID, last_seq=0, last_hash=GENESIS_HASH))
        return GENESIS_HASH
    return str(last_hash)


def append_entries(session: Session, rows: list[dict[str, Any]], *, last_hash: str) -> None:
    """Insert chained entries and move the head to the last of them. The head is locked,
    so the newest ``seq`` is the last of these rows."""
    session.execute(_INSERT_ENTRIES, rows)
    session.execute(_MOVE_HEAD, {"last_hash": last_hash})


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
