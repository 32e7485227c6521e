"""stripe: payment idempotency keys, disputes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 08:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tollway.kit.models

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=150), nullable=True))
        batch_op.add_column(sa.Column("idempotency_scope", sa.String(length=140), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_payments_idempotency_key"), ["idempotency_key"]
        )
        batch_op.create_index(
            batch_op.f("ix_payments_idempotency_scope"), ["idempotency_scope"], unique=False
        )

    op.create_table(
        "payment_disputes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("provider_ref", sa.String(length=100), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=60), nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("opened_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_disputes")),
        sa.UniqueConstraint("provider_ref", name=op.f("uq_payment_disputes_provider_ref")),
    )
    with op.batch_alter_table("payment_disputes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_disputes_organization_id"), ["organization_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payment_disputes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_disputes_organization_id"))
    op.drop_table("payment_disputes")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_idempotency_scope"))
        batch_op.drop_constraint(batch_op.f("uq_payments_idempotency_key"), type_="unique")
        batch_op.drop_column("idempotency_scope")
        batch_op.drop_column("idempotency_key")
