"""Every query of the billing domain."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, event, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from tollway.billing.models import (
    DUE_RULES,
    CreditNote,
    DueRule,
    Invoice,
    InvoiceCounter,
    InvoiceLine,
    PackOrder,
    Subscription,
)
from tollway.db import TollwaySession
from tollway.kit.pagination import PageParams, PageResult, paginate
from tollway.kit.session_state import SessionKey


@dataclass
class ReadAhead:
    """Rows :func:`read_ahead` loaded for the rest of a transaction (held strongly: the
    identity map keeps clean rows only weakly). The reads below answer from it; the
    rows are live objects, so what the transaction changes in them is what they see."""

    #: locked invoices by ID
    invoices: dict[str, Invoice] = field(default_factory=dict)
    #: locked subscriptions by ID
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    #: by subscription: its invoices that were open (their status is read when asked),
    #: and those this transaction adds
    open_invoices: dict[str, list[Invoice]] = field(default_factory=dict)
    #: by organization: all its subscriptions, and those this transaction adds
    organization_subscriptions: dict[str, list[Subscription]] = field(default_factory=dict)


@dataclass
class _HeldCounter:
    """An invoice counter this transaction locked, and the last number it gave."""

    row: InvoiceCounter
    last_number: int


#: What :func:`read_ahead` loaded in this transaction.
_READ_AHEAD: SessionKey[ReadAhead] = SessionKey("tollway.billing.read_ahead")
#: The counters this transaction holds by series; written just before the commit.
_HELD_COUNTERS: SessionKey[dict[str, _HeldCounter]] = SessionKey("tollway.billing.held_counters")


def _read_ahead(session: AsyncSession) -> ReadAhead | None:
    return _READ_AHEAD.get(session)


async def read_ahead(session: AsyncSession, *, invoice_ids: list[str]) -> ReadAhead:
    """Lock the invoices ``invoice_ids`` and their subscriptions and read what paying
    them needs (the subscriptions' other open invoices, the organizations' other
    subscriptions) in four queries, for a chunk of payment events."""
    held = _READ_AHEAD.setdefault(session, ReadAhead)
    wanted = sorted(set(invoice_ids) - held.invoices.keys())
    if not wanted:
        return held
    statement = select(Invoice).where(Invoice.id.in_(wanted)).order_by(Invoice.id)
    invoices = list((await session.execute(statement.with_for_update())).scalars())
    held.invoices.update((invoice.id, invoice) for invoice in invoices)
    subscription_ids = sorted(
        {invoice.subscription_id for invoice in invoices if invoice.subscription_id}
        - held.subscriptions.keys()
    )
    if not subscription_ids:
        return held
    locked = select(Subscription).where(Subscription.id.in_(subscription_ids))
    subscriptions = list(
        (await session.execute(locked.order_by(Subscription.id).with_for_update())).scalars()
    )
    held.subscriptions.update((sub.id, sub) for sub in subscriptions)
    organization_ids = sorted(
        {sub.organization_id for sub in subscriptions} - held.organization_subscriptions.keys()
    )
    if organization_ids:
        others = select(Subscription).where(Subscription.organization_id.in_(organization_ids))
        for organization_id in organization_ids:
            held.organization_subscriptions[organization_id] = []
        for sub in (await session.execute(others)).scalars():
            held.organization_subscriptions[sub.organization_id].append(sub)
    open_statement = select(Invoice).where(
        Invoice.subscription_id.in_([sub.id for sub in subscriptions]), Invoice.status == "open"
    )
    for sub in subscriptions:
        held.open_invoices[sub.id] = []
    for invoice in (await session.execute(open_statement)).scalars():
        assert invoice.subscription_id is not None
        held.open_invoices[invoice.subscription_id].append(invoice)
    return held


async def add(session: AsyncSession, instance: object, *, flush: bool = True) -> None:
    """Add ``instance``; ``flush=False`` leaves the INSERT to the transaction's next
    flush (the unit of work orders rows by their foreign keys)."""
    session.add(instance)
    held = _read_ahead(session)
    if held is not None:
        if isinstance(instance, Invoice) and instance.subscription_id in held.open_invoices:
            held.open_invoices[instance.subscription_id].append(instance)
        if (
            isinstance(instance, Subscription)
            and instance.organization_id in held.organization_subscriptions
        ):
            held.organization_subscriptions[instance.organization_id].append(instance)
    if flush:
        await session.flush()


async def get_current_subscription(
    session: AsyncSession, *, organization_id: str, for_update: bool = False
) -> Subscription | None:
    statement = select(Subscription).where(
        Subscription.organization_id == organization_id, Subscription.is_current
    )
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalars().first()


async def get_subscription(
    session: AsyncSession, subscription_id: str, *, for_update: bool = False
) -> Subscription | None:
    held = _read_ahead(session)
    if held is not None and subscription_id in held.subscriptions:
        return held.subscriptions[subscription_id]
    statement = select(Subscription).where(Subscription.id == subscription_id)
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def allotment_period_taken(
    session: AsyncSession,
    *,
    organization_id: str,
    period_start: datetime,
    except_subscription_id: str,
) -> bool:
    """Whether another subscription of the organization had its allotment for a period
    starting at ``period_start``."""
    held = _read_ahead(session)
    if held is not None and organization_id in held.organization_subscriptions:
        return any(
            sub.id != except_subscription_id and sub.allotment_granted_for == period_start
            for sub in held.organization_subscriptions[organization_id]
        )
    statement = select(func.count()).where(
        Subscription.organization_id == organization_id,
        Subscription.id != except_subscription_id,
        Subscription.allotment_granted_for == period_start,
    )
    return int((await session.execute(statement)).scalar_one()) > 0


async def has_trialed(session: AsyncSession, *, organization_id: str) -> bool:
    statement = select(func.count()).where(
        Subscription.organization_id == organization_id, Subscription.trial_end.is_not(None)
    )
    return int((await session.execute(statement)).scalar_one()) > 0


def list_due(rule: DueRule, now: datetime, *, limit: int) -> Select[Any]:
    """The IDs of subscriptions for which ``rule``'s work is due, earliest first."""
    return select(Subscription.id).where(rule.where(now)).order_by(rule.moment).limit(limit)


async def next_due_at(session: AsyncSession, *, after: datetime | None = None) -> datetime | None:
    """The earliest moment a billing sweep has work (:data:`DUE_RULES`); with ``after``,
    the earliest one later than that (work due earlier that is still there failed, and
    must not hold time back)."""
    moments: list[datetime] = []
    for rule in DUE_RULES:
        query = select(func.min(rule.moment)).where(rule.waiting())
        if after is not None:
            query = query.where(rule.moment > after - rule.delay)
        first = (await session.execute(query)).scalar_one_or_none()
        if first is not None:
            moments.append(first + rule.delay)
    return min(moments) if moments else None


async def get_invoice(
    session: AsyncSession,
    invoice_id: str,
    *,
    organization_id: str | None = None,
    for_update: bool = False,
) -> Invoice | None:
    held = _read_ahead(session)
    if held is not None and organization_id is None and invoice_id in held.invoices:
        return held.invoices[invoice_id]
    statement = select(Invoice).where(Invoice.id == invoice_id)
    if organization_id is not None:
        statement = statement.where(Invoice.organization_id == organization_id)
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def list_lines(session: AsyncSession, *, invoice_id: str) -> list[InvoiceLine]:
    statement = (
        select(InvoiceLine)
        .where(InvoiceLine.invoice_id == invoice_id)
        .order_by(InvoiceLine.position)
    )
    return list((await session.execute(statement)).scalars())


async def list_open_invoices(session: AsyncSession, *, subscription_id: str) -> list[Invoice]:
    held = _read_ahead(session)
    if held is not None and subscription_id in held.open_invoices:
        return sorted(
            (
                invoice
                for invoice in held.open_invoices[subscription_id]
                if invoice.status == "open"
            ),
            key=lambda invoice: invoice.id,
        )
    statement = (
        select(Invoice)
        .where(Invoice.subscription_id == subscription_id, Invoice.status == "open")
        .order_by(Invoice.id)
    )
    return list((await session.execute(statement)).scalars())


async def list_invoices(
    session: AsyncSession, *, organization_id: str, params: PageParams
) -> PageResult[Invoice]:
    statement = select(Invoice).where(
        Invoice.organization_id == organization_id, Invoice.status != "draft"
    )
    return await paginate(session, statement, id_column=Invoice.id, params=params)


async def next_number(session: AsyncSession, *, series: str) -> int:
    """Take the next number of ``series``, holding its counter row until commit.

    The row lock makes concurrent finalizations queue, and because the number is
    taken in the invoice's own transaction a rollback gives it back: no gaps.
    """
    held = _HELD_COUNTERS.setdefault(session, dict)
    if series in held:
        # Already locked by this transaction (a sweep renewing a chunk): no round trip;
        # the row gets the final figure once, just before the commit.
        held[series].last_number += 1
        return held[series].last_number
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(
        insert(InvoiceCounter)
        .values(series=series, last_number=0)
        .on_conflict_do_nothing(index_elements=["series"])
    )
    statement = select(InvoiceCounter).where(InvoiceCounter.series == series).with_for_update()
    counter = (await session.execute(statement)).scalar_one()
    held[series] = _HeldCounter(row=counter, last_number=counter.last_number + 1)
    return counter.last_number + 1


async def get_pack_order_by_invoice(session: AsyncSession, *, invoice_id: str) -> PackOrder | None:
    statement = select(PackOrder).where(PackOrder.invoice_id == invoice_id).with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def list_credit_notes(session: AsyncSession, *, invoice_id: str) -> list[CreditNote]:
    statement = (
        select(CreditNote).where(CreditNote.invoice_id == invoice_id).order_by(CreditNote.id)
    )
    return list((await session.execute(statement)).scalars())


def _write_counters(session: Session) -> None:
    held = _HELD_COUNTERS.pop(session)
    if not held:
        return
    for counter in held.values():
        counter.row.last_number = counter.last_number
    session.flush()


def _forget_counters(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        _HELD_COUNTERS.pop(session)


event.listen(TollwaySession, "before_commit", _write_counters)
event.listen(TollwaySession, "after_transaction_end", _forget_counters)
