"""Ledger tables: accounts, transfers and their entries, grants, reservations, abuse state.

Every movement of credits is a :class:`CreditTransfer` whose :class:`CreditEntry` rows sum
to zero. Each organization has one account of every :class:`AccountKind`; the balances
on the account rows are the running sums of their entries (kept for fast reads, checked
by the tests against the entries).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tollway.kit.models import Base, id_column


class AccountKind(StrEnum):
    #: Credits the organization may spend (not held).
    WALLET = "wallet"
    #: Credits reserved by open holds.
    HOLDS = "holds"
    #: Where allotment, admin and promo grants come from (runs negative).
    ISSUANCE = "issuance"
    #: Where purchased credits come from (runs negative).
    PURCHASES = "purchases"
    #: Credits consumed by committed holds.
    SPENDING = "spending"
    #: Credits that lapsed at their grant's expiry.
    EXPIRY = "expiry"
    #: Unspent credits of a refunded purchase.
    REFUNDS = "refunds"


class TransferKind(StrEnum):
    GRANT = "grant"
    RESERVE = "reserve"
    COMMIT = "commit"
    RELEASE = "release"
    EXPIRE = "expire"
    REVERSE = "reverse"


class GrantSource(StrEnum):
    ALLOTMENT = "allotment"
    PURCHASE = "purchase"
    ADMIN = "admin"
    PROMO = "promo"


class ReservationStatus(StrEnum):
    HELD = "held"
    COMMITTED = "committed"
    RELEASED = "released"
    #: Released by the sweep because nobody committed it within its TTL.
    EXPIRED = "expired"


class CreditAccount(Base):
    __tablename__ = "credit_accounts"
    __table_args__ = (UniqueConstraint("organization_id", "kind"),)

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    balance: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    #: Wallet only: a low-balance event was published and the balance has not risen
    #: back above the threshold since.
    low_balance_notified: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False)


class CreditTransfer(Base):
    __tablename__ = "credit_transfers"

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    #: The credits the transfer moved (the sum of its positive entries).
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    grant_id: Mapped[str | None] = mapped_column(String(40))
    reservation_id: Mapped[str | None] = mapped_column(String(40), index=True)
    description: Mapped[str | None] = mapped_column(String(500))
    occurred_at: Mapped[datetime] = mapped_column(nullable=False)


class CreditEntry(Base):
    """One leg of a transfer: a signed amount on one account."""

    __tablename__ = "credit_entries"
    __table_args__ = (Index("ix_credit_entries_organization_id_id", "organization_id", "id"),)

    id: Mapped[str] = id_column()
    transfer_id: Mapped[str] = mapped_column(
        ForeignKey("credit_transfers.id", ondelete="CASCADE"), nullable=False, index=True
    )
    account_id: Mapped[str] = mapped_column(
        ForeignKey("credit_accounts.id", ondelete="CASCADE"), nullable=False, index=True
    )
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False)
    account_kind: Mapped[str] = mapped_column(String(20), nullable=False)
    transfer_kind: Mapped[str] = mapped_column(String(20), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(nullable=False)

    #: Never loaded; it tells the unit of work to insert the transfer before its entries.
    transfer: Mapped[CreditTransfer] = relationship(lazy="raise")


class CreditGrant(Base):
    """A lot of credits: spent in order of priority, then earliest expiry, then age."""

    __tablename__ = "credit_grants"
    __table_args__ = (
        # One allotment per organization and billing period.
        UniqueConstraint("organization_id", "period_start"),
        # One grant per organization for an outside reference (an order, a payment).
        UniqueConstraint("organization_id", "source", "reference"),
        Index("ix_credit_grants_spendable", "organization_id", "expired_at", "remaining"),
    )

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    source: Mapped[str] = mapped_column(String(20), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: Credits of this lot neither held, spent, expired nor reversed.
    remaining: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: Lower numbers are spent first.
    priority: Mapped[int] = mapped_column(Integer, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    #: Set by the expiry sweep; the lot then holds nothing (or its rolled-over part).
    expired_at: Mapped[datetime | None] = mapped_column()
    reversed_at: Mapped[datetime | None] = mapped_column()
    reason: Mapped[str] = mapped_column(String(500), nullable=False)
    reference: Mapped[str | None] = mapped_column(String(200))
    period_start: Mapped[datetime | None] = mapped_column()
    period_end: Mapped[datetime | None] = mapped_column()
    #: Allotments: how many unspent credits survive the period end (into the next period).
    rollover_cap: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(nullable=False)


class Reservation(Base):
    """A hold on credits, committed (in part) or released, or expired by the sweep."""

    __tablename__ = "credit_reservations"
    __table_args__ = (
        UniqueConstraint("organization_id", "idempotency_key"),
        Index("ix_credit_reservations_due", "status", "expires_at"),
    )

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    feature: Mapped[str | None] = mapped_column(String(100))
    #: Who spends (``user:usr_...`` or ``api_key:key_...``): the abuse battery's unit.
    subject: Mapped[str | None] = mapped_column(String(100))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    #: ``{"lots": [[grant_id, credits], ...]}``: where the held credits came from, in
    #: spending order.
    allocations: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    committed: Mapped[int | None] = mapped_column(BigInteger)
    released: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False)
    settled_at: Mapped[datetime | None] = mapped_column()


class AbuseState(Base):
    """The abuse battery's memory of one spender, shared by every process through the DB."""

    __tablename__ = "credit_abuse_states"
    __table_args__ = (UniqueConstraint("organization_id", "subject"),)

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )
    subject: Mapped[str] = mapped_column(String(100), nullable=False)
    #: Fixed one-minute window of credit-spending requests.
    minute_started_at: Mapped[datetime | None] = mapped_column()
    minute_requests: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_request_at: Mapped[datetime | None] = mapped_column()
    #: Fixed one-hour window of credits requested (the fraud threshold).
    hour_started_at: Mapped[datetime | None] = mapped_column()
    hour_credits: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    hour_flagged: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: ISO timestamps of recent failed or released operations, oldest first.
    failures: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    blocked_until: Mapped[datetime | None] = mapped_column()


class FraudFlag(Base):
    """Credits spent faster than the policy's hourly threshold; raised, never denying."""

    __tablename__ = "credit_fraud_flags"

    id: Mapped[str] = id_column()
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    subject: Mapped[str] = mapped_column(String(100), nullable=False)
    credits_in_window: Mapped[int] = mapped_column(BigInteger, nullable=False)
    threshold: Mapped[int] = mapped_column(BigInteger, nullable=False)
    window_started_at: Mapped[datetime] = mapped_column(nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
