"""overage prices: per catalog version, and the version each subscription is priced at

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("plan_prices") as batch:
        batch.add_column(
            sa.Column(
                "overage",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("catalog_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("catalog_version")
    with op.batch_alter_table("plan_prices") as batch:
        batch.drop_column("overage")
