"""Every query of the ledger domain.

Lock order (PostgreSQL): see :mod:`tollway.ledger.service`. The organization's wallet
row comes first; :func:`get_abuse_state` takes it itself before the abuse row, so no
caller can take them the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, event, func, insert, inspect, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from tollway.db import TollwaySession
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
    GrantSource,
    Reservation,
    ReservationStatus,
)

#: What a write transaction has locked and read (Session.info): its accounts, spendable
#: lots and abuse states, as live objects. The holds of a group-committed round share
#: them, so after the first none of them queries, and the round's changes are written
#: by one flush at commit instead of one per hold.
_MEMO = "tollway.ledger.transaction_memo"


def _memo(session: AsyncSession, part: str) -> dict[Any, Any]:
    memo: dict[Any, Any] = session.sync_session.info.setdefault(_MEMO, {}).setdefault(part, {})
    return memo


def _forget_memo(session: Session, transaction: SessionTransaction) -> None:
    # The transaction or a savepoint ended (a savepoint rolled back releases its locks and
    # expires what it changed); the inner "subtransaction" of a flush did not.
    if transaction.parent is None or transaction.nested:
        session.info.pop(_MEMO, None)


event.listen(TollwaySession, "after_transaction_end", _forget_memo)


def _is_live(objects: Iterable[Any]) -> bool:
    return not any(inspect(item).expired for item in objects)


def _pending(session: AsyncSession, kind: type[Any], ids: Iterable[str]) -> bool:
    """Whether an object of ``kind`` with one of ``ids`` was added and not yet written."""
    wanted = set(ids)
    return any(isinstance(item, kind) and item.id in wanted for item in session.sync_session.new)


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


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
    # Kept as lock_accounts keeps what it locked: for the rest of the transaction.
    locked = _memo(session, "accounts")
    for organization_id, accounts in found.items():
        if len(accounts) == len(AccountKind):
            locked[organization_id] = accounts


async def lock_accounts(
    session: AsyncSession, *, organization_id: str, now: datetime
) -> dict[str, CreditAccount]:
    """The organization's accounts by kind, created at first use, with the wallet row
    locked (``SELECT ... FOR UPDATE`` on PostgreSQL) until the transaction ends.

    Locked once per transaction: a second call (the next hold of a group-committed round)
    gets the same objects, which hold every change made since, without a query. Any
    transaction or savepoint ending forgets them (a savepoint rolled back releases its
    locks and expires what it changed)."""
    memo = _memo(session, "accounts")
    held: dict[str, CreditAccount] | None = memo.get(organization_id)
    if held is not None and _is_live(held.values()):
        return held
    accounts = await _lock_accounts(session, organization_id=organization_id, now=now)
    memo[organization_id] = accounts
    return accounts


async def _lock_accounts(
    session: AsyncSession, *, organization_id: str, now: datetime
) -> dict[str, CreditAccount]:
    for _attempt in range(2):
        if _is_postgres(session):
            await session.execute(_LOCK_WALLET, {"organization_id": organization_id})
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
    found = await session.execute(_ACCOUNTS, {"organization_id": organization_id})
    return {account.kind: account for account in found.scalars()}


async def get_accounts(session: AsyncSession, *, organization_id: str) -> dict[str, CreditAccount]:
    return await _load_accounts(session, organization_id)


#: Transfer and entry rows of the open transaction not yet written (Session.info).
_QUEUED = "tollway.ledger.queued_transfers"
_transfers = cast(Table, CreditTransfer.__table__)
_entries = cast(Table, CreditEntry.__table__)
_INSERT_TRANSFERS = insert(_transfers)
_INSERT_ENTRIES = insert(_entries)


async def add_transfer(
    session: AsyncSession, transfer: dict[str, Any], entries: list[dict[str, Any]]
) -> None:
    """Add a transfer and its entries. They are written with the transaction's other
    transfers just before it commits (or before the ledger reads transfers or entries):
    two inserts for a whole group-committed round. Inside a savepoint they are written
    at once, so that rolling the savepoint back takes them too."""
    if session.sync_session.in_nested_transaction():
        connection = await session.connection()
        await connection.execute(_INSERT_TRANSFERS, [transfer])
        await connection.execute(_INSERT_ENTRIES, entries)
        return
    transfers, rows = session.sync_session.info.setdefault(_QUEUED, ([], []))
    transfers.append(transfer)
    rows.extend(entries)


def _write_queued(session: Session) -> None:
    queued = session.info.pop(_QUEUED, None)
    if queued is None:
        return
    transfers, entries = queued
    connection = session.connection()
    connection.execute(_INSERT_TRANSFERS, transfers)
    connection.execute(_INSERT_ENTRIES, entries)


async def _write_queued_transfers(session: AsyncSession) -> None:
    if _QUEUED in session.sync_session.info:
        await session.run_sync(_write_queued)


def _drop_queued(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_QUEUED, None)


event.listen(TollwaySession, "before_commit", _write_queued)
event.listen(TollwaySession, "after_transaction_end", _drop_queued)


def _spendable(organization_id: Any, now: Any) -> Select[Any]:
    """Lots that can be spent at ``now`` (values or bind parameters)."""
    return select(CreditGrant).where(
        CreditGrant.organization_id == organization_id,
        CreditGrant.expired_at.is_(None),
        CreditGrant.reversed_at.is_(None),
        CreditGrant.remaining > 0,
        or_(CreditGrant.expires_at.is_(None), CreditGrant.expires_at > now),
    )


# The write paths' lookups, built once: building and keying a statement costs more than
# running it.
_LOCK_WALLET = (
    select(CreditAccount.id)
    .where(
        CreditAccount.organization_id == bindparam("organization_id"),
        CreditAccount.kind == AccountKind.WALLET.value,
    )
    .with_for_update()
)
_ACCOUNTS = (
    select(CreditAccount)
    .where(CreditAccount.organization_id == bindparam("organization_id"))
    .execution_options(populate_existing=True)
)
_SPENDABLE_IN_ORDER = _spendable(bindparam("organization_id"), bindparam("now")).order_by(
    CreditGrant.priority,
    # Lots without an expiry come after every expiring lot of the same priority.
    CreditGrant.expires_at.is_(None),
    CreditGrant.expires_at,
    CreditGrant.created_at,
    CreditGrant.id,
)
_GRANTS_BY_ID = select(CreditGrant).where(CreditGrant.id.in_(bindparam("ids", expanding=True)))
_RESERVATION = select(Reservation).where(
    Reservation.id == bindparam("reservation_id"),
    Reservation.organization_id == bindparam("organization_id"),
)
_ABUSE_STATE = select(AbuseState).where(
    AbuseState.organization_id == bindparam("organization_id"),
    AbuseState.subject == bindparam("subject"),
)
_ABUSE_STATE_LOCKED = _ABUSE_STATE.with_for_update()


async def list_spendable_grants(
    session: AsyncSession, *, organization_id: str, now: datetime
) -> list[CreditGrant]:
    """Lots that can be spent now, in spending order: priority, earliest expiry, oldest."""
    found = await session.execute(
        _SPENDABLE_IN_ORDER, {"organization_id": organization_id, "now": now}
    )
    return list(found.scalars())


def _is_spendable(grant: CreditGrant, now: datetime) -> bool:
    return (
        grant.expired_at is None
        and grant.reversed_at is None
        and grant.remaining > 0
        and (grant.expires_at is None or grant.expires_at > now)
    )


def _spending_order(grant: CreditGrant) -> tuple[Any, ...]:
    # As list_spendable_grants orders: lots without an expiry after the expiring ones.
    expires_at = grant.expires_at
    return (
        grant.priority,
        expires_at is None,
        expires_at or grant.created_at,
        grant.created_at,
        grant.id,
    )


async def spendable_grants_locked(
    session: AsyncSession, *, organization_id: str, now: datetime
) -> list[CreditGrant]:
    """:func:`list_spendable_grants` for a write holding the wallet lock: read once per
    transaction, then taken from the lots as this transaction changed them."""
    memo = _memo(session, "lots")
    lots: list[CreditGrant] | None = memo.get(organization_id)
    if lots is None or not _is_live(lots):
        lots = await list_spendable_grants(session, organization_id=organization_id, now=now)
        memo[organization_id] = lots
    return sorted((grant for grant in lots if _is_spendable(grant, now)), key=_spending_order)


def remember_lot(session: AsyncSession, grant: CreditGrant) -> None:
    """A lot that is new or got credits back in this transaction: spendable again."""
    lots: list[CreditGrant] | None = _memo(session, "lots").get(grant.organization_id)
    if lots is not None and grant not in lots:
        lots.append(grant)


async def list_active_grants(
    session: AsyncSession, *, organization_id: str, now: datetime
) -> list[CreditGrant]:
    statement = _spendable(organization_id, now).order_by(CreditGrant.id)
    return list((await session.execute(statement)).scalars())


async def get_grants_by_ids(session: AsyncSession, ids: Sequence[str]) -> dict[str, CreditGrant]:
    """Lots by id, as this transaction sees them (its unwritten changes included)."""
    if not ids:
        return {}
    found: dict[str, CreditGrant] = {}
    for lots in _memo(session, "lots").values():
        found.update((grant.id, grant) for grant in lots if grant.id in ids)
    missing = [grant_id for grant_id in ids if grant_id not in found]
    if missing:
        rows = await _execute_seeing_own(
            session, _GRANTS_BY_ID, {"ids": missing}, CreditGrant, missing
        )
        found.update((grant.id, grant) for grant in rows.scalars())
    return found


async def _execute_seeing_own(
    session: AsyncSession,
    statement: Any,
    parameters: dict[str, Any],
    kind: type[Any],
    ids: Sequence[str],
) -> Any:
    """Run a lookup by id without flushing the transaction's other changes first: the
    rows it finds come from the identity map with those changes. Only an object of the
    ids added and not yet written needs the flush."""
    if _pending(session, kind, ids):
        return await session.execute(statement, parameters)
    with session.sync_session.no_autoflush:
        return await session.execute(statement, parameters)


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
    known: dict[tuple[str, datetime], CreditGrant | None] = _memo(session, "allotments")
    for key in periods:
        known[key] = found.get(key)


def allotment_added(session: AsyncSession, grant: CreditGrant) -> None:
    """Keep :func:`read_allotments`' answers true after this transaction granted one."""
    known = _memo(session, "allotments")
    if grant.period_start is not None and known:
        known[(grant.organization_id, grant.period_start)] = grant


async def get_allotment(
    session: AsyncSession, *, organization_id: str, period_start: datetime
) -> CreditGrant | None:
    known = _memo(session, "allotments")
    if (organization_id, period_start) in known:
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
    found = await _execute_seeing_own(
        session,
        _RESERVATION,
        {"reservation_id": reservation_id, "organization_id": organization_id},
        Reservation,
        [reservation_id],
    )
    reservation: Reservation | None = found.scalar_one_or_none()
    return reservation


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


async def list_reservations(
    session: AsyncSession, *, organization_id: str, params: PageParams, status: str | None
) -> PageResult[Reservation]:
    statement = select(Reservation).where(Reservation.organization_id == organization_id)
    if status is not None:
        statement = statement.where(Reservation.status == status)
    return await paginate(session, statement, id_column=Reservation.id, params=params)


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
    await _write_queued_transfers(session)
    statement = select(CreditEntry).where(CreditEntry.organization_id == organization_id)
    return await paginate(session, statement, id_column=CreditEntry.id, params=params)


async def list_transfers(session: AsyncSession, *, organization_id: str) -> list[CreditTransfer]:
    await _write_queued_transfers(session)
    statement = (
        select(CreditTransfer)
        .where(CreditTransfer.organization_id == organization_id)
        .order_by(CreditTransfer.id)
    )
    return list((await session.execute(statement)).scalars())


async def sum_entries_by_transfer(session: AsyncSession, *, organization_id: str) -> dict[str, int]:
    await _write_queued_transfers(session)
    statement = (
        select(CreditEntry.transfer_id, func.sum(CreditEntry.amount))
        .where(CreditEntry.organization_id == organization_id)
        .group_by(CreditEntry.transfer_id)
    )
    return {row[0]: int(row[1]) for row in await session.execute(statement)}


async def sum_entries_by_account(session: AsyncSession, *, organization_id: str) -> dict[str, int]:
    await _write_queued_transfers(session)
    statement = (
        select(CreditEntry.account_kind, func.sum(CreditEntry.amount))
        .where(CreditEntry.organization_id == organization_id)
        .group_by(CreditEntry.account_kind)
    )
    return {row[0]: int(row[1]) for row in await session.execute(statement)}


async def get_abuse_state(
    session: AsyncSession, *, organization_id: str, subject: str, now: datetime
) -> AbuseState:
    """The subject's abuse state, created at first use and locked on PostgreSQL; read
    once per transaction. The organization's wallet is locked first (the lock order
    of the module docstring), whoever asks."""
    await lock_accounts(session, organization_id=organization_id, now=now)
    memo = _memo(session, "abuse")
    known: AbuseState | None = memo.get((organization_id, subject))
    if known is not None and _is_live([known]):
        return known
    state = await _get_abuse_state(
        session, organization_id=organization_id, subject=subject, now=now
    )
    memo[(organization_id, subject)] = state
    return state


async def _get_abuse_state(
    session: AsyncSession, *, organization_id: str, subject: str, now: datetime
) -> AbuseState:
    statement = _ABUSE_STATE_LOCKED if _is_postgres(session) else _ABUSE_STATE
    parameters = {"organization_id": organization_id, "subject": subject}
    state = (await session.execute(statement, parameters)).scalar_one_or_none()
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
        state = (await session.execute(statement, parameters)).scalar_one()
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


async def list_live_allotments(
    session: AsyncSession, *, organization_id: str, granted_from: datetime, expiring_by: datetime
) -> list[CreditGrant]:
    """Allotment lots granted since ``granted_from`` that expire by ``expiring_by`` and
    still hold credits (not expired, not reversed): a trial's."""
    statement = (
        select(CreditGrant)
        .where(
            CreditGrant.organization_id == organization_id,
            CreditGrant.source == GrantSource.ALLOTMENT.value,
            CreditGrant.created_at >= granted_from,
            CreditGrant.expires_at <= expiring_by,
            CreditGrant.expired_at.is_(None),
            CreditGrant.reversed_at.is_(None),
        )
        .order_by(CreditGrant.created_at, CreditGrant.id)
    )
    return list((await session.execute(statement)).scalars())
