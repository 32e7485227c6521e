"""identity: invitation accept tokens, two-factor challenges of OAuth logins

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 07:57:24.345586
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tollway.kit.models

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "two_factor_challenges",
        sa.Column("challenge_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("via", sa.String(length=40), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("redirect_to", sa.String(length=500), nullable=False),
        sa.Column("link_provider", sa.String(length=20), nullable=True),
        sa.Column("link_provider_user_id", sa.String(length=100), nullable=True),
        sa.Column("link_email", sa.String(length=320), nullable=True),
        sa.Column("created_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_two_factor_challenges_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("challenge_hash", name=op.f("pk_two_factor_challenges")),
    )
    with op.batch_alter_table("two_factor_challenges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_two_factor_challenges_expires_at"), ["expires_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_two_factor_challenges_user_id"), ["user_id"], unique=False
        )

    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_hash", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_invitations_token_hash"), ["token_hash"])


def downgrade() -> None:
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_invitations_token_hash"), type_="unique")
        batch_op.drop_column("token_hash")

    with op.batch_alter_table("two_factor_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_two_factor_challenges_user_id"))
        batch_op.drop_index(batch_op.f("ix_two_factor_challenges_expires_at"))

    op.drop_table("two_factor_challenges")
