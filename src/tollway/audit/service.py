"""Append-only, hash-chained audit log.

``audit_service.record(session, action=..., target=...)`` queues an entry on the
caller's transaction; the entries are chained and inserted just before that
transaction commits (a ``before_commit`` hook), so the chain head stays locked only
for the commit itself, and an entry exists exactly when the change it describes
does. ``tollway audit verify`` recomputes the chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from tollway.audit import repository
from tollway.audit.models import GENESIS_HASH, AuditEntry
from tollway.db import TollwaySession
from tollway.kit.clock import utcnow
from tollway.kit.ids import new_id
from tollway.kit.pagination import PageParams, PageResult

_PENDING = "tollway.audit.pending"


def entry_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


@dataclass(slots=True)
class PendingEntry:
    """An entry queued on a transaction, chained and inserted when it commits."""

    id: str
    occurred_at: datetime
    actor: str
    action: str
    target: str | None
    organization_id: str | None
    request_id: str | None
    details: dict[str, Any]


#: The fields of an entry that its hash covers, in the order the chain has always used.
_HASHED = (
    "id",
    "occurred_at",
    "actor",
    "action",
    "target",
    "organization_id",
    "request_id",
    "details",
)


def _fields(entry: AuditEntry | PendingEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in _HASHED}


def _hashed_fields(entry: AuditEntry | PendingEntry) -> dict[str, Any]:
    fields = _fields(entry)
    fields["occurred_at"] = entry.occurred_at.isoformat()
    return fields


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    entries: int
    broken_at_seq: int | None = None
    reason: str | None = None
    problems: list[str] = field(default_factory=list)


class AuditService:
    def record(
        self,
        session: AsyncSession,
        *,
        action: str,
        target: str | None = None,
        organization_id: str | None = None,
        actor: str | None = None,
        details: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> PendingEntry:
        """Queue an entry that is written with, and only with, this transaction's commit.

        ``actor`` and the request id default to what the request bound to the log
        context (``actor``, ``request_id``); outside a request the actor is ``system``.
        """
        context = structlog.contextvars.get_contextvars()
        entry = PendingEntry(
            id=new_id("aud"),
            occurred_at=occurred_at or utcnow(),
            actor=actor or str(context.get("actor") or "system"),
            action=action,
            target=target,
            organization_id=organization_id,
            request_id=context.get("request_id"),
            details=details or {},
        )
        session.sync_session.info.setdefault(_PENDING, []).append(entry)
        return entry

    async def verify(self, session: AsyncSession) -> ChainReport:
        prev_hash = GENESIS_HASH
        count = 0
        async for entry in repository.iterate_entries(session):
            count += 1
            if entry.prev_hash != prev_hash:
                return ChainReport(False, count, entry.seq, "prev_hash does not link")
            if entry_hash(prev_hash, _hashed_fields(entry)) != entry.hash:
                return ChainReport(False, count, entry.seq, "hash does not match the row")
            prev_hash = entry.hash
        head = await repository.get_head(session)
        if head is not None and head.last_hash != prev_hash:
            return ChainReport(False, count, None, "chain head does not match the last row")
        return ChainReport(True, count)

    async def list_entries(
        self,
        session: AsyncSession,
        *,
        params: PageParams,
        organization_id: str | None = None,
        action: str | None = None,
    ) -> PageResult[AuditEntry]:
        return await repository.list_entries(
            session, params=params, organization_id=organization_id, action=action
        )


def _seal_pending(session: Session) -> None:
    pending: list[PendingEntry] = session.info.pop(_PENDING, [])
    if not pending:
        return
    prev_hash = repository.lock_head(session)
    rows: list[dict[str, Any]] = []
    for entry in pending:
        chained = entry_hash(prev_hash, _hashed_fields(entry))
        rows.append({**_fields(entry), "prev_hash": prev_hash, "hash": chained})
        prev_hash = chained
    repository.append_entries(session, rows, last_hash=prev_hash)


def _drop_pending(session: Session, transaction: SessionTransaction) -> None:
    # Only the outermost transaction's end discards entries; a savepoint rolling
    # back leaves the entries of the enclosing work alone.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


event.listen(TollwaySession, "before_commit", _seal_pending)
event.listen(TollwaySession, "after_transaction_end", _drop_pending)

audit_service = AuditService()
