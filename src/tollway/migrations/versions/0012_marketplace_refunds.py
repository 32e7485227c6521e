"""marketplace refunds: refunded amounts on purchases and reversals on earnings

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 09:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tollway.kit.models

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("marketplace_purchases", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("refunded_minor", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("refunded_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("marketplace_earnings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("refunded_minor", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column(
                "commission_reversed_minor", sa.BigInteger(), nullable=False, server_default="0"
            )
        )
        batch_op.add_column(
            sa.Column("net_reversed_minor", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("marketplace_earnings", schema=None) as batch_op:
        batch_op.drop_column("net_reversed_minor")
        batch_op.drop_column("commission_reversed_minor")
        batch_op.drop_column("refunded_minor")
    with op.batch_alter_table("marketplace_purchases", schema=None) as batch_op:
        batch_op.drop_column("refunded_at")
        batch_op.drop_column("refunded_minor")
