"""Every query of the ledger domain.

Lock order (PostgreSQL): the organization's wallet account row first, then grants,
reservations and abuse state. Every write path of the ledger takes the wallet lock
before it reads what it will change, so two transactions of one organization never
interleave and never deadlock; different organizations never wait for each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.errors import NotFound
from tollway.kit.ids import new_id
from tollway.kit.pagination import PageParams, PageResult, paginate
from tollway.ledger.models import (
    AbuseState,
    AccountKind,
    CreditAccount,
    CreditEntry,
    CreditGrant,
    CreditTransfer,
    FraudFlag,
    Reservation,
    ReservationStatus,
)


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


#: session.info keys: what :func:`lock_many_accounts` and :func:`read_allotments` read
#: ahead for the rest of the transaction.
_LOCKED = "tollway.ledger.locked_accounts"
_ALLOTMENTS = "tollway.ledger.allotments"


async def lock_many_accounts(session: AsyncSession, *, organization_ids: list[str]) -> None:
    """:func:`lock_accounts` for many organizations in one statement (a billing sweep's
    chunk): the wallets are locked in organization order, which is the order any other
    transaction taking several of them takes them too. Organizations whose accounts do
    not all exist yet are left to :func:`lock_accounts`."""
    wanted = sorted(set(organization_ids))
    if not wanted:
        return
    if _is_postgres(session):
        await session.execute(
            select(CreditAccount.id)
            .where(
                CreditAccount.organization_id.in_(wanted),
                CreditAccount.kind == AccountKind.WALLET.value,
            )
            .order_by(CreditAccount.organization_id)
            .with_for_update()
        )
    statement = (
        select(CreditAccount)
        .where(CreditAccount.organization_id.in_(wanted))
        .execution_options(populate_existing=True)
    )
    found: dict[str, dict[str, CreditAccount]] = {}
    for account in (await session.execute(statement)).scalars():
        found.setdefault(account.organization_id, {})[account.kind] = account
    # Held (strongly) until the transaction ends: the locks are held as long.
    locked: dict[str, dict[str, CreditAccount]] = session.info.setdefault(_LOCKED, {})
    for organization_id, accounts in found.items():
        if len(accounts) == len(AccountKind):
            locked[organization_id] = accounts


async def lock_accounts(
    session: AsyncSession, *, organization_id: str, now: datetime
) -> dict[str, CreditAccount]:
    """The organization's accounts by kind, created at first use, with the wallet row
    locked (``SELECT ... FOR UPDATE`` on PostgreSQL) until the transaction ends."""
    held = session.info.get(_LOCKED)
    if held is not None and organization_id in held:
        accounts: dict[str, CreditAccount] = held[organization_id]
        return accounts
    for _attempt in range(2):
        if _is_postgres(session):
            await session.execute(
                select(CreditAccount.id)
                .where(
                    CreditAccount.organization_id == organization_id,
                    CreditAccount.kind == AccountKind.WALLET.value,
                )
                .with_for_update()
            )
        accounts = await _load_accounts(session, organization_id)
        if len(accounts) == len(AccountKind):
            return accounts
        try:
            async with session.begin_nested():
                for kind in AccountKind:
                    if kind.value not in accounts:
                        session.add(
                            CreditAccount(
                                id=new_id("cacc"),
                                organization_id=organization_id,
                                kind=kind.value,
                                balance=0,
                                low_balance_notified=False,
                                created_at=now,
                            )
                        )
        except IntegrityError:
            # A concurrent transaction created them first (lock and read theirs), or the
            # organization does not exist (the second attempt fails the same way).
            continue
        # Rows this transaction inserted are its own until it commits: no lock needed.
        return await _load_accounts(session, organization_id)
    raise NotFound(f"no organization {organization_id}", code="organization_not_found")


async def _load_accounts(session: AsyncSession, organization_id: str) -> dict[str, CreditAccount]:
    statement = (
        select(CreditAccount)
        .where(CreditAccount.organization_id == organization_id)
        .execution_options(populate_existing=True)
    )
    return {account.kind: account for account in (await session.execute(statement)).scalars()}


async def get_accounts(session: AsyncSession, *, organization_id: str) -> dict[str, CreditAccount]:
    return await _load_accounts(session, organization_id)


def add_transfer(
    session: AsyncSession, transfer: CreditTransfer, entries: list[CreditEntry]
) -> None:
    session.add(transfer)
    session.add_all(entries)


def _spendable(organization_id: str, now: datetime) -> Select[Any]:
    return select(CreditGrant).where(
        CreditGrant.organization_id == organization_id,
        CreditGrant.expired_at.is_(None),
        CreditGrant.reversed_at.is_(None),
        CreditGrant.remaining > 0,
        or_(CreditGrant.expires_at.is_(None), CreditGrant.expires_at > now),
    )


async def list_spendable_grants(
    session: AsyncSession, *, organization_id: str, now: datetime
) -> list[CreditGrant]:
    """Lots that can be spent now, in spending order: priority, earliest expiry, oldest."""
    statement = _spendable(organization_id, now).order_by(
        CreditGrant.priority,
        # Lots without an expiry come after every expiring lot of the same priority.
        CreditGrant.expires_at.is_(None),
        CreditGrant.expires_at,
        CreditGrant.created_at,
        CreditGrant.id,
    )
    return list((await session.execute(statement)).scalars())


async def list_active_grants(
    session: AsyncSession, *, organization_id: str, now: datetime
) -> list[CreditGrant]:
    statement = _spendable(organization_id, now).order_by(CreditGrant.id)
    return list((await session.execute(statement)).scalars())


async def get_grants_by_ids(session: AsyncSession, ids: Sequence[str]) -> dict[str, CreditGrant]:
    if not ids:
        return {}
    statement = select(CreditGrant).where(CreditGrant.id.in_(list(ids)))
    return {grant.id: grant for grant in (await session.execute(statement)).scalars()}


async def get_grant(
    session: AsyncSession, *, organization_id: str, grant_id: str
) -> CreditGrant | None:
    statement = select(CreditGrant).where(
        CreditGrant.id == grant_id, CreditGrant.organization_id == organization_id
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def get_grant_by_reference(
    session: AsyncSession, *, organization_id: str, source: str, reference: str
) -> CreditGrant | None:
    statement = select(CreditGrant).where(
        CreditGrant.organization_id == organization_id,
        CreditGrant.source == source,
        CreditGrant.reference == reference,
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def read_allotments(session: AsyncSession, *, periods: list[tuple[str, datetime]]) -> None:
    """:func:`get_allotment` of many (organization, period start) pairs in one query,
    answered from memory for the rest of the transaction (call with the accounts
    locked, so no other transaction grants them meanwhile)."""
    if not periods:
        return
    organization_ids = sorted({organization_id for organization_id, _start in periods})
    starts = sorted({start for _organization_id, start in periods})
    statement = select(CreditGrant).where(
        CreditGrant.organization_id.in_(organization_ids),
        CreditGrant.period_start.in_(starts),
    )
    found = {
        (grant.organization_id, grant.period_start): grant
        for grant in (await session.execute(statement)).scalars()
    }
    known: dict[tuple[str, datetime], CreditGrant | None] = session.info.setdefault(_ALLOTMENTS, {})
    for key in periods:
        known[key] = found.get(key)


def allotment_added(session: AsyncSession, grant: CreditGrant) -> None:
    """Keep :func:`read_allotments`' answers true after this transaction granted one."""
    known = session.info.get(_ALLOTMENTS)
    if known is not None and grant.period_start is not None:
        known[(grant.organization_id, grant.period_start)] = grant


async def get_allotment(
    session: AsyncSession, *, organization_id: str, period_start: datetime
) -> CreditGrant | None:
    known = session.info.get(_ALLOTMENTS)
    if known is not None and (organization_id, period_start) in known:
        grant: CreditGrant | None = known[(organization_id, period_start)]
        return grant
    statement = select(CreditGrant).where(
        CreditGrant.organization_id == organization_id,
        CreditGrant.period_start == period_start,
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def list_due_grant_ids(
    session: AsyncSession, *, now: datetime, limit: int
) -> list[tuple[str, str]]:
    """(organization_id, grant_id) of lots whose expiry has passed and was not yet booked."""
    statement = (
        select(CreditGrant.organization_id, CreditGrant.id)
        .where(
            CreditGrant.expired_at.is_(None),
            CreditGrant.reversed_at.is_(None),
            CreditGrant.expires_at.is_not(None),
            CreditGrant.expires_at <= now,
        )
        .order_by(CreditGrant.expires_at)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in await session.execute(statement)]


async def get_reservation(
    session: AsyncSession, *, organization_id: str, reservation_id: str
) -> Reservation | None:
    statement = select(Reservation).where(
        Reservation.id == reservation_id, Reservation.organization_id == organization_id
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def get_reservation_by_key(
    session: AsyncSession, *, organization_id: str, idempotency_key: str
) -> Reservation | None:
    statement = select(Reservation).where(
        Reservation.organization_id == organization_id,
        Reservation.idempotency_key == idempotency_key,
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def list_open_reservations(
    session: AsyncSession, *, organization_id: str
) -> list[Reservation]:
    statement = (
        select(Reservation)
        .where(
            Reservation.organization_id == organization_id,
            Reservation.status == ReservationStatus.HELD.value,
        )
        .order_by(Reservation.id)
    )
    return list((await session.execute(statement)).scalars())


async def list_due_reservation_ids(
    session: AsyncSession, *, now: datetime, limit: int
) -> list[tuple[str, str]]:
    """(organization_id, reservation_id) of holds whose TTL has run out."""
    statement = (
        select(Reservation.organization_id, Reservation.id)
        .where(Reservation.status == ReservationStatus.HELD.value, Reservation.expires_at <= now)
        .order_by(Reservation.expires_at)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in await session.execute(statement)]


async def list_entries(
    session: AsyncSession, *, organization_id: str, params: PageParams
) -> PageResult[CreditEntry]:
    statement = select(CreditEntry).where(CreditEntry.organization_id == organization_id)
    return await paginate(session, statement, id_column=CreditEntry.id, params=params)


async def list_transfers(session: AsyncSession, *, organization_id: str) -> list[CreditTransfer]:
    statement = (
        select(CreditTransfer)
        .where(CreditTransfer.organization_id == organization_id)
        .order_by(CreditTransfer.id)
    )
    return list((await session.execute(statement)).scalars())


async def sum_entries_by_transfer(session: AsyncSession, *, organization_id: str) -> dict[str, int]:
    statement = (
        select(CreditEntry.transfer_id, func.sum(CreditEntry.amount))
        .where(CreditEntry.organization_id == organization_id)
        .group_by(CreditEntry.transfer_id)
    )
    return {row[0]: int(row[1]) for row in await session.execute(statement)}


async def sum_entries_by_account(session: AsyncSession, *, organization_id: str) -> dict[str, int]:
    statement = (
        select(CreditEntry.account_kind, func.sum(CreditEntry.amount))
        .where(CreditEntry.organization_id == organization_id)
        .group_by(CreditEntry.account_kind)
    )
    return {row[0]: int(row[1]) for row in await session.execute(statement)}


async def get_abuse_state(
    session: AsyncSession, *, organization_id: str, subject: str, now: datetime
) -> AbuseState:
    """The subject's abuse state, created at first use and locked on PostgreSQL."""
    statement = select(AbuseState).where(
        and_(AbuseState.organization_id == organization_id, AbuseState.subject == subject)
    )
    if _is_postgres(session):
        statement = statement.with_for_update()
    state = (await session.execute(statement)).scalar_one_or_none()
    if state is not None:
        return state
    state = AbuseState(
        id=new_id("abs"),
        organization_id=organization_id,
        subject=subject,
        minute_requests=0,
        hour_credits=0,
        hour_flagged=False,
        failures={"at": []},
    )
    try:
        async with session.begin_nested():
            session.add(state)
    except IntegrityError:
        state = (await session.execute(statement)).scalar_one()
    return state


def add_fraud_flag(session: AsyncSession, flag: FraudFlag) -> None:
    session.add(flag)


async def list_fraud_flags(
    session: AsyncSession, *, params: PageParams, organization_id: str | None = None
) -> PageResult[FraudFlag]:
    statement = select(FraudFlag)
    if organization_id is not None:
        statement = statement.where(FraudFlag.organization_id == organization_id)
    return await paginate(session, statement, id_column=FraudFlag.id, params=params)
