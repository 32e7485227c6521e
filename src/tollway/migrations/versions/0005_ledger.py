"""ledger: credit accounts, transfers, grants, holds, abuse state

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-23 18:53:14.297416
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import tollway.kit.models

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "credit_abuse_states",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column(
            "minute_started_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("minute_requests", sa.Integer(), nullable=False),
        sa.Column("last_request_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("hour_started_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("hour_credits", sa.BigInteger(), nullable=False),
        sa.Column("hour_flagged", sa.Boolean(), nullable=False),
        sa.Column(
            "failures",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("blocked_until", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_credit_abuse_states_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_abuse_states")),
        sa.UniqueConstraint(
            "organization_id",
            "subject",
            name=op.f("uq_credit_abuse_states_organization_id_subject"),
        ),
    )
    op.create_table(
        "credit_accounts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("low_balance_notified", sa.Boolean(), nullable=False),
        sa.Column("created_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_credit_accounts_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_accounts")),
        sa.UniqueConstraint(
            "organization_id", "kind", name=op.f("uq_credit_accounts_organization_id_kind")
        ),
    )
    op.create_table(
        "credit_fraud_flags",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=100), nullable=False),
        sa.Column("credits_in_window", sa.BigInteger(), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=False),
        sa.Column(
            "window_started_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("created_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_credit_fraud_flags_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_fraud_flags")),
    )
    with op.batch_alter_table("credit_fraud_flags", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_fraud_flags_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "credit_grants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("expires_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expired_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reversed_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("period_start", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("period_end", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("rollover_cap", sa.BigInteger(), nullable=True),
        sa.Column("created_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_credit_grants_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_grants")),
        sa.UniqueConstraint(
            "organization_id",
            "period_start",
            name=op.f("uq_credit_grants_organization_id_period_start"),
        ),
        sa.UniqueConstraint(
            "organization_id",
            "source",
            "reference",
            name=op.f("uq_credit_grants_organization_id_source_reference"),
        ),
    )
    with op.batch_alter_table("credit_grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_grants_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            "ix_credit_grants_spendable",
            ["organization_id", "expired_at", "remaining"],
            unique=False,
        )

    op.create_table(
        "credit_reservations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("feature", sa.String(length=100), nullable=True),
        sa.Column("subject", sa.String(length=100), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column(
            "allocations",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("committed", sa.BigInteger(), nullable=True),
        sa.Column("released", sa.BigInteger(), nullable=True),
        sa.Column("created_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("settled_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_credit_reservations_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_reservations")),
        sa.UniqueConstraint(
            "organization_id",
            "idempotency_key",
            name=op.f("uq_credit_reservations_organization_id_idempotency_key"),
        ),
    )
    with op.batch_alter_table("credit_reservations", schema=None) as batch_op:
        batch_op.create_index("ix_credit_reservations_due", ["status", "expires_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_credit_reservations_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "credit_transfers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("grant_id", sa.String(length=40), nullable=True),
        sa.Column("reservation_id", sa.String(length=40), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("occurred_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_credit_transfers_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_transfers")),
    )
    with op.batch_alter_table("credit_transfers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_transfers_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_credit_transfers_reservation_id"), ["reservation_id"], unique=False
        )

    op.create_table(
        "credit_entries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("transfer_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("account_kind", sa.String(length=20), nullable=False),
        sa.Column("transfer_kind", sa.String(length=20), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["credit_accounts.id"],
            name=op.f("fk_credit_entries_account_id_credit_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["transfer_id"],
            ["credit_transfers.id"],
            name=op.f("fk_credit_entries_transfer_id_credit_transfers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_entries")),
    )
    with op.batch_alter_table("credit_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_entries_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            "ix_credit_entries_organization_id_id", ["organization_id", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_credit_entries_transfer_id"), ["transfer_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("credit_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_entries_transfer_id"))
        batch_op.drop_index("ix_credit_entries_organization_id_id")
        batch_op.drop_index(batch_op.f("ix_credit_entries_account_id"))

    op.drop_table("credit_entries")
    with op.batch_alter_table("credit_transfers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_transfers_reservation_id"))
        batch_op.drop_index(batch_op.f("ix_credit_transfers_organization_id"))

    op.drop_table("credit_transfers")
    with op.batch_alter_table("credit_reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_reservations_organization_id"))
        batch_op.drop_index("ix_credit_reservations_due")

    op.drop_table("credit_reservations")
    with op.batch_alter_table("credit_grants", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_grants_spendable")
        batch_op.drop_index(batch_op.f("ix_credit_grants_expires_at"))

    op.drop_table("credit_grants")
    with op.batch_alter_table("credit_fraud_flags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_fraud_flags_organization_id"))

    op.drop_table("credit_fraud_flags")
    op.drop_table("credit_accounts")
    op.drop_table("credit_abuse_states")
