"""The transactional outbox: events written in the same transaction as the change.

``outbox.publish(session, "subscription.updated", {...})`` adds a row that commits or
rolls back with the caller's work, so an event is never sent for a change that did
not happen, nor lost for one that did. Delivery (outgoing webhooks) reads undelivered
rows in order and marks them; it belongs to the webhooks domain.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import Identity, Index, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from tollway.kit.clock import utcnow
from tollway.kit.ids import new_id
from tollway.kit.models import Base, SequenceKey

_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class OutboxEvent(Base):
    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_events_undispatched", "dispatched_at", "seq"),)

    # The sequence gives a total order for delivery; the ID is what consumers see.
    seq: Mapped[int] = mapped_column(SequenceKey, Identity(), primary_key=True)
    # The client-made ID lets one INSERT write many rows and still match each to the
    # sequence number the database gave it (SQLAlchemy's "insertmanyvalues" sentinel).
    id: Mapped[str] = mapped_column(String(40), unique=True, nullable=False, insert_sentinel=True)
    event_type: Mapped[str] = mapped_column(String(100), nullable=False)
    organization_id: Mapped[str | None] = mapped_column(String(40), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(nullable=False)
    dispatched_at: Mapped[datetime | None] = mapped_column()


class Outbox:
    async def publish(
        self,
        session: AsyncSession,
        event_type: str,
        payload: dict[str, Any],
        *,
        organization_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> OutboxEvent:
        """Record ``event_type`` (``noun.verb``: ``credits.low_balance``) in this transaction."""
        if not _EVENT_TYPE.match(event_type):
            raise ValueError(f"event type must look like 'noun.verb', got {event_type!r}")
        event = OutboxEvent(
            id=new_id("evt"),
            event_type=event_type,
            organization_id=organization_id,
            payload=payload,
            occurred_at=occurred_at or utcnow(),
        )
        # Not flushed here: the row goes out with the transaction's next flush (a query's
        # autoflush or the commit), batched with the other events of the transaction, in
        # the order they were published (the unit of work keeps insertion order).
        session.add(event)
        return event

    async def list_undispatched(
        self, session: AsyncSession, *, limit: int = 100
    ) -> list[OutboxEvent]:
        statement = (
            select(OutboxEvent)
            .where(OutboxEvent.dispatched_at.is_(None))
            .order_by(OutboxEvent.seq)
            .limit(limit)
        )
        return list((await session.execute(statement)).scalars())

    async def list_events(
        self,
        session: AsyncSession,
        *,
        event_type: str | None = None,
        organization_id: str | None = None,
    ) -> list[OutboxEvent]:
        statement = select(OutboxEvent).order_by(OutboxEvent.seq)
        if event_type is not None:
            statement = statement.where(OutboxEvent.event_type == event_type)
        if organization_id is not None:
            statement = statement.where(OutboxEvent.organization_id == organization_id)
        return list((await session.execute(statement)).scalars())

    async def mark_dispatched(
        self, session: AsyncSession, event_ids: list[str], *, at: datetime
    ) -> None:
        if event_ids:
            await session.execute(
                update(OutboxEvent).where(OutboxEvent.id.in_(event_ids)).values(dispatched_at=at)
            )


outbox = Outbox()
