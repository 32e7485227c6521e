"""Every query of the payments domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.kit.pagination import PageParams, PageResult, paginate
from tollway.payments.models import (
    CheckoutSession,
    Payment,
    PaymentCustomer,
    PaymentDispute,
    PaymentMethod,
    WebhookEvent,
)

#: Dispute statuses after which the organization gets its access back.
#: Dispute statuses that no longer freeze access: the provider's wins, and ``settled``
#: (a lost dispute an operator marked as paid back, see ``settle_dispute``).
DISPUTE_RESTORES = ("won", "warning_closed", "prevented", "settled")


async def get_customer(
    session: AsyncSession, *, organization_id: str, provider: str
) -> PaymentCustomer | None:
    statement = select(PaymentCustomer).where(
        PaymentCustomer.organization_id == organization_id, PaymentCustomer.provider == provider
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def add(session: AsyncSession, instance: object) -> None:
    session.add(instance)
    await session.flush()


async def list_methods(
    session: AsyncSession, *, organization_id: str, provider: str
) -> list[PaymentMethod]:
    statement = (
        select(PaymentMethod)
        .where(
            PaymentMethod.organization_id == organization_id,
            PaymentMethod.provider == provider,
            PaymentMethod.detached_at.is_(None),
        )
        .order_by(PaymentMethod.id.desc())
    )
    return list((await session.execute(statement)).scalars())


def _default_methods(provider: str) -> Select[PaymentMethod, str]:
    """Live default payment methods with the provider's customer reference, newest first."""
    return (
        select(PaymentMethod, PaymentCustomer.provider_ref)
        .outerjoin(
            PaymentCustomer,
            (PaymentCustomer.organization_id == PaymentMethod.organization_id)
            & (PaymentCustomer.provider == PaymentMethod.provider),
        )
        .where(
            PaymentMethod.provider == provider,
            PaymentMethod.is_default,
            PaymentMethod.detached_at.is_(None),
        )
        .order_by(PaymentMethod.id.desc())
    )


async def get_default_method_and_customer(
    session: AsyncSession, *, organization_id: str, provider: str
) -> tuple[PaymentMethod, str | None] | None:
    """The default payment method and the provider's customer reference, in one query."""
    statement = (
        _default_methods(provider).where(PaymentMethod.organization_id == organization_id).limit(1)
    )
    row = (await session.execute(statement)).first()
    return (row[0], row[1]) if row is not None else None


async def list_default_methods_and_customers(
    session: AsyncSession, *, organization_ids: list[str], provider: str
) -> dict[str, tuple[PaymentMethod, str | None]]:
    """:func:`get_default_method_and_customer` of many organizations, in one query."""
    statement = _default_methods(provider).where(
        PaymentMethod.organization_id.in_(organization_ids)
    )
    found: dict[str, tuple[PaymentMethod, str | None]] = {}
    for method, customer_ref in await session.execute(statement):
        # The newest default first, as get_default_method_and_customer picks it.
        found.setdefault(method.organization_id, (method, customer_ref))
    return found


async def get_method(
    session: AsyncSession, *, method_id: str, organization_id: str
) -> PaymentMethod | None:
    statement = select(PaymentMethod).where(
        PaymentMethod.id == method_id,
        PaymentMethod.organization_id == organization_id,
        PaymentMethod.detached_at.is_(None),
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def clear_default(session: AsyncSession, *, organization_id: str) -> None:
    await session.execute(
        update(PaymentMethod)
        .where(PaymentMethod.organization_id == organization_id, PaymentMethod.is_default)
        .values(is_default=False)
    )


async def get_payment(
    session: AsyncSession, payment_id: str, *, for_update: bool = False
) -> Payment | None:
    statement = select(Payment).where(Payment.id == payment_id)
    if for_update:
        statement = statement.with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def get_payment_by_provider_ref(
    session: AsyncSession, *, provider: str, provider_ref: str
) -> Payment | None:
    statement = select(Payment).where(
        Payment.provider == provider, Payment.provider_ref == provider_ref
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def list_payments_for(
    session: AsyncSession, *, purpose: str, reference_id: str
) -> list[Payment]:
    statement = (
        select(Payment)
        .where(Payment.purpose == purpose, Payment.reference_id == reference_id)
        .order_by(Payment.id)
    )
    return list((await session.execute(statement)).scalars())


async def get_checkout_by_ref(
    session: AsyncSession, *, provider: str, provider_ref: str
) -> CheckoutSession | None:
    statement = select(CheckoutSession).where(
        CheckoutSession.provider == provider, CheckoutSession.provider_ref == provider_ref
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def insert_event(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert the event; False when (provider, event_id) is already there.

    ``ON CONFLICT DO NOTHING`` on the unique (provider, event_id): a concurrent
    duplicate waits for the first insert's transaction and then inserts nothing.
    """
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    # The row depends on nothing pending in the session: no autoflush (a billing chunk
    # stores an event per charge and would otherwise write its rows one charge at a time).
    with session.no_autoflush:
        result = await session.execute(
            insert(WebhookEvent)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        )
    return bool(getattr(result, "rowcount", 0))


async def insert_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """:func:`insert_event` of many rows in one statement (duplicates are skipped)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    with session.no_autoflush:
        await session.execute(
            insert(WebhookEvent).on_conflict_do_nothing(index_elements=["provider", "event_id"]),
            rows,
        )


async def get_event(session: AsyncSession, *, provider: str, event_id: str) -> WebhookEvent | None:
    statement = select(WebhookEvent).where(
        WebhookEvent.provider == provider, WebhookEvent.event_id == event_id
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def get_event_by_id(session: AsyncSession, row_id: str) -> WebhookEvent | None:
    return await session.get(WebhookEvent, row_id)


def due_events(now: datetime, *, limit: int) -> Select[Any]:
    """The IDs of due events, in the order they are applied."""
    return (
        select(WebhookEvent.id)
        .where(WebhookEvent.status == "pending", WebhookEvent.next_attempt_at <= now)
        .order_by(WebhookEvent.next_attempt_at, WebhookEvent.id)
        .limit(limit)
    )


async def list_events(
    session: AsyncSession, *, params: PageParams, status: str | None
) -> PageResult[WebhookEvent]:
    statement = select(WebhookEvent)
    if status is not None:
        statement = statement.where(WebhookEvent.status == status)
    return await paginate(session, statement, id_column=WebhookEvent.id, params=params)


async def get_customer_by_ref(
    session: AsyncSession, *, provider: str, provider_ref: str
) -> PaymentCustomer | None:
    statement = select(PaymentCustomer).where(
        PaymentCustomer.provider == provider, PaymentCustomer.provider_ref == provider_ref
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def delete_customer(session: AsyncSession, customer_id: str) -> None:
    await session.execute(delete(PaymentCustomer).where(PaymentCustomer.id == customer_id))


async def get_method_by_ref(
    session: AsyncSession, *, provider: str, provider_ref: str
) -> PaymentMethod | None:
    """A saved card by the provider's reference, detached ones included."""
    statement = select(PaymentMethod).where(
        PaymentMethod.provider == provider, PaymentMethod.provider_ref == provider_ref
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def count_payments_in_scope(session: AsyncSession, *, scope: str) -> int:
    statement = select(func.count()).where(Payment.idempotency_scope == scope)
    return int((await session.execute(statement)).scalar_one())


async def list_payments_by_ids_or_keys(
    session: AsyncSession, *, payment_ids: list[str], keys: list[str]
) -> list[Payment]:
    """The payments with these IDs or idempotency keys, locked, in ID order."""
    statement = (
        select(Payment)
        .where(or_(Payment.id.in_(payment_ids), Payment.idempotency_key.in_(keys)))
        .order_by(Payment.id)
        .with_for_update()
    )
    return list((await session.execute(statement)).scalars())


async def count_payments_in_scopes(session: AsyncSession, *, scopes: list[str]) -> dict[str, int]:
    """:func:`count_payments_in_scope` of many scopes in one query (absent: none)."""
    if not scopes:
        return {}
    statement = (
        select(Payment.idempotency_scope, func.count())
        .where(Payment.idempotency_scope.in_(scopes))
        .group_by(Payment.idempotency_scope)
    )
    return {str(scope): int(count) for scope, count in await session.execute(statement)}


async def get_payment_by_key(session: AsyncSession, idempotency_key: str) -> Payment | None:
    statement = select(Payment).where(Payment.idempotency_key == idempotency_key).with_for_update()
    return (await session.execute(statement)).scalar_one_or_none()


async def get_dispute(session: AsyncSession, dispute_id: str) -> PaymentDispute | None:
    return await session.get(PaymentDispute, dispute_id)


async def list_disputes(
    session: AsyncSession, *, params: PageParams, status: str | None, organization_id: str | None
) -> PageResult[PaymentDispute]:
    statement = select(PaymentDispute)
    if status is not None:
        statement = statement.where(PaymentDispute.status == status)
    if organization_id is not None:
        statement = statement.where(PaymentDispute.organization_id == organization_id)
    return await paginate(session, statement, id_column=PaymentDispute.id, params=params)


async def get_dispute_by_ref(
    session: AsyncSession, *, provider: str, provider_ref: str
) -> PaymentDispute | None:
    statement = select(PaymentDispute).where(
        PaymentDispute.provider == provider, PaymentDispute.provider_ref == provider_ref
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def has_freezing_dispute(session: AsyncSession, *, organization_id: str) -> bool:
    """An open dispute, or one closed against us, freezes the organization's access."""
    statement = (
        select(PaymentDispute.id)
        .where(
            PaymentDispute.organization_id == organization_id,
            or_(
                PaymentDispute.closed_at.is_(None),
                PaymentDispute.status.not_in(DISPUTE_RESTORES),
            ),
        )
        .limit(1)
    )
    return (await session.execute(statement)).first() is not None
