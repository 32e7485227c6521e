"""Transfers: the one place that writes entries and moves account balances, and the
balance read over them (the rules of double entry are in :mod:`tollway.ledger.service`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from tollway.audit.service import audit_service
from tollway.db import TollwaySession
from tollway.kit.ids import new_id
from tollway.kit.numbers import MAX_CREDITS, is_whole
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams, PageResult
from tollway.ledger import repository
from tollway.ledger.errors import InvalidAmount
from tollway.ledger.models import (
    AccountKind,
    CreditAccount,
    CreditEntry,
    CreditGrant,
    GrantSource,
    TransferKind,
)
from tollway.observability.metrics import CREDITS_MOVED

DEFAULT_HOLD_TTL_SECONDS = 30
DEFAULT_MAX_HOLD_TTL_SECONDS = 3600
DEFAULT_LOW_BALANCE_THRESHOLD = 10

#: Lower is spent first: credits that lapse soonest or cost nothing go before paid ones.
DEFAULT_PRIORITY: dict[GrantSource, int] = {
    GrantSource.ALLOTMENT: 10,
    GrantSource.PROMO: 20,
    GrantSource.ADMIN: 30,
    GrantSource.PURCHASE: 40,
}

Accounts = dict[str, CreditAccount]

#: Transfers of the open transaction, counted in the metrics once it commits.
_UNCOUNTED = "tollway.ledger.uncounted"


class LedgerImbalance(AssertionError):
    """A transfer whose entries do not sum to zero: a bug, never written."""


@dataclass(frozen=True, slots=True)
class Balance:
    balance: int
    reserved: int
    available: int
    grants: list[CreditGrant] = field(default_factory=list)


def require_positive(amount: int, what: str = "amount") -> None:
    if not is_whole(amount) or not 0 < amount <= MAX_CREDITS:
        raise InvalidAmount(
            f"{what} must be a whole number of credits from 1 to {MAX_CREDITS:,}",
            maximum=MAX_CREDITS,
        )


class TransferService:
    async def balance(
        self, session: AsyncSession, *, organization_id: str, now: datetime
    ) -> Balance:
        """Balance, reserved and available credits, with the live lots in spending order."""
        accounts = await repository.get_accounts(session, organization_id=organization_id)
        grants = await repository.list_spendable_grants(
            session, organization_id=organization_id, now=now
        )
        holds = accounts.get(AccountKind.HOLDS.value)
        reserved = holds.balance if holds is not None else 0
        available = sum(grant.remaining for grant in grants)
        return Balance(
            balance=available + reserved, reserved=reserved, available=available, grants=grants
        )

    async def list_entries(
        self, session: AsyncSession, *, organization_id: str, params: PageParams
    ) -> PageResult[CreditEntry]:
        """The organization's ledger entries, newest first."""
        return await repository.list_entries(
            session, organization_id=organization_id, params=params
        )

    async def transfer(
        self,
        session: AsyncSession,
        accounts: Accounts,
        *,
        kind: TransferKind,
        legs: dict[AccountKind, int],
        organization_id: str,
        now: datetime,
        grant_id: str | None = None,
        reservation_id: str | None = None,
        description: str | None = None,
        low_balance_threshold: int | None = DEFAULT_LOW_BALANCE_THRESHOLD,
    ) -> str:
        """Write one balanced transfer, move the account balances, audit it; returns the
        transfer's id. The rows go in with the transaction's other transfers, as one
        insert each for transfers and entries, when it commits."""
        legs = {account: amount for account, amount in legs.items() if amount != 0}
        if sum(legs.values()) != 0:
            raise LedgerImbalance(f"transfer {kind} does not sum to zero: {legs}")
        wallet = accounts[AccountKind.WALLET]
        holds = accounts[AccountKind.HOLDS]
        before = wallet.balance + holds.balance
        transfer_id = new_id("ctr")
        moved = sum(amount for amount in legs.values() if amount > 0)
        transfer = {
            "id": transfer_id,
            "organization_id": organization_id,
            "kind": kind.value,
            "amount": moved,
            "grant_id": grant_id,
            "reservation_id": reservation_id,
            "description": description[:500] if description else None,
            "occurred_at": now,
        }
        entries = []
        for account_kind, amount in legs.items():
            account = accounts[account_kind]
            account.balance += amount
            entries.append(
                {
                    "id": new_id("cent"),
                    "transfer_id": transfer_id,
                    "account_id": account.id,
                    "organization_id": organization_id,
                    "account_kind": account_kind.value,
                    "transfer_kind": kind.value,
                    "amount": amount,
                    "occurred_at": now,
                }
            )
        await repository.add_transfer(session, transfer, entries)
        # A commit counts what it spent; the part it gave back is not "committed".
        counted = legs.get(AccountKind.SPENDING, 0) if kind is TransferKind.COMMIT else moved
        session.sync_session.info.setdefault(_UNCOUNTED, []).append((kind.value, counted))
        audit_service.record(
            session,
            action=f"credits.{kind.value}",
            target=transfer_id,
            organization_id=organization_id,
            details={
                "amount": moved,
                "entries": {account.value: amount for account, amount in legs.items()},
                "grant_id": grant_id,
                "reservation_id": reservation_id,
            },
            occurred_at=now,
        )
        after = wallet.balance + holds.balance
        if low_balance_threshold is not None and low_balance_threshold > 0:
            await self._watch_low_balance(
                session,
                wallet,
                before=before,
                after=after,
                threshold=low_balance_threshold,
                now=now,
            )
        return transfer_id

    async def _watch_low_balance(
        self,
        session: AsyncSession,
        wallet: CreditAccount,
        *,
        before: int,
        after: int,
        threshold: int,
        now: datetime,
    ) -> None:
        """Publish ``credits.low_balance`` once when the balance drops below ``threshold``;
        again only after it has been back at or above it."""
        if after < threshold <= before and not wallet.low_balance_notified:
            wallet.low_balance_notified = True
            await outbox.publish(
                session,
                "credits.low_balance",
                {"balance": after, "threshold": threshold},
                organization_id=wallet.organization_id,
                occurred_at=now,
            )
        elif after >= threshold and wallet.low_balance_notified:
            wallet.low_balance_notified = False


def _count_committed(session: Session) -> None:
    for kind, amount in session.info.pop(_UNCOUNTED, []):
        CREDITS_MOVED.labels(kind=kind).inc(amount)


def _forget_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # Runs after after_commit; only the outermost transaction's end (a rollback) drops.
    if transaction.parent is None:
        session.info.pop(_UNCOUNTED, None)


event.listen(TollwaySession, "after_commit", _count_committed)
event.listen(TollwaySession, "after_transaction_end", _forget_uncommitted)


transfer_service = TransferService()
