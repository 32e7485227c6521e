"""billing profile: the organization's billing name, address lines and tax id

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 08:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("billing_name", sa.String(length=200), nullable=True))
        batch.add_column(
            sa.Column(
                "billing_address",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch.add_column(sa.Column("billing_tax_id", sa.String(length=50), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("billing_tax_id")
        batch.drop_column("billing_address")
        batch.drop_column("billing_name")
