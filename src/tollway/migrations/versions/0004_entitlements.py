"""entitlements: catalog versions, plans, usage

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 18:56:24.447516
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import tollway.kit.models

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalog_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column(
            "document",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("loaded_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_catalog_versions")),
    )
    op.create_table(
        "plan_prices",
        sa.Column("catalog_version", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("interval", sa.String(length=8), nullable=False),
        sa.Column("trial_days", sa.Integer(), nullable=False),
        sa.Column("monthly_tokens", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["catalog_version"],
            ["catalog_versions.version"],
            name=op.f("fk_plan_prices_catalog_version_catalog_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("catalog_version", "plan_id", name=op.f("pk_plan_prices")),
    )
    op.create_table(
        "organization_overrides",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column(
            "overrides",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_organization_overrides_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_organization_overrides")),
    )
    op.create_table(
        "organization_plans",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("license_state", sa.String(length=16), nullable=False),
        sa.Column("grace_ends_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("catalog_version", sa.Integer(), nullable=True),
        sa.Column("updated_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_organization_plans_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_organization_plans")),
    )
    op.create_table(
        "usage_counters",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("period_start", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("notified_percent", sa.Integer(), nullable=False),
        sa.Column("updated_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_usage_counters_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "meter", "period_start", name=op.f("pk_usage_counters")
        ),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_start", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column(
            "properties",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("recorded_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_usage_events_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_events")),
        sa.UniqueConstraint(
            "organization_id",
            "idempotency_key",
            name=op.f("uq_usage_events_organization_id_idempotency_key"),
        ),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_events_org_meter_time",
            ["organization_id", "meter", "occurred_at"],
            unique=False,
        )

    op.create_table(
        "usage_unique_values",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=False),
        sa.Column("period_start", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_usage_unique_values_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "meter", "period_start", "value", name=op.f("pk_usage_unique_values")
        ),
    )


def downgrade() -> None:
    op.drop_table("usage_unique_values")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_events_org_meter_time")

    op.drop_table("usage_events")
    op.drop_table("usage_counters")
    op.drop_table("organization_plans")
    op.drop_table("organization_overrides")
    op.drop_table("plan_prices")
    op.drop_table("catalog_versions")
