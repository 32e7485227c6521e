"""marketplace: packages, versions, purchases, earnings, publish buckets, search index

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tollway.kit.models

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "marketplace_packages",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=40), nullable=False),
        sa.Column("keywords", sa.JSON(), nullable=False),
        sa.Column("license", sa.String(length=200), nullable=False),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("author_name", sa.String(length=200), nullable=False),
        sa.Column("quality_score", sa.Integer(), nullable=False),
        sa.Column("downloads", sa.BigInteger(), nullable=False),
        sa.Column("listed", sa.Boolean(), nullable=False),
        sa.Column("latest_version", sa.String(length=100), nullable=True),
        sa.Column(
            "latest_published_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("updated_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_packages")),
        sa.UniqueConstraint("name", name=op.f("uq_marketplace_packages_name")),
    )
    with op.batch_alter_table("marketplace_packages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_marketplace_packages_category_listed", ["category", "listed"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_marketplace_packages_license"), ["license"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_marketplace_packages_organization_id"),
            ["organization_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_marketplace_packages_listed_downloads", ["listed", "downloads"], unique=False
        )
        batch_op.create_index(
            "ix_marketplace_packages_listed_recent",
            ["listed", "latest_published_at"],
            unique=False,
        )

    op.create_table(
        "marketplace_versions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("package_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("dependencies", sa.JSON(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("storage_key", sa.String(length=200), nullable=False),
        sa.Column("signature", sa.String(length=200), nullable=False),
        sa.Column("signature_kid", sa.String(length=40), nullable=False),
        sa.Column("downloads", sa.BigInteger(), nullable=False),
        sa.Column("published_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deprecated_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deprecation_message", sa.String(length=500), nullable=True),
        sa.Column("yanked_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("yank_reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["package_id"],
            ["marketplace_packages.id"],
            name=op.f("fk_marketplace_versions_package_id_marketplace_packages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_versions")),
        sa.UniqueConstraint(
            "package_id", "version", name=op.f("uq_marketplace_versions_package_id_version")
        ),
    )
    with op.batch_alter_table("marketplace_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_marketplace_versions_package_id"), ["package_id"], unique=False
        )

    op.create_table(
        "marketplace_purchases",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("package_id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("open_key", sa.String(length=100), nullable=True),
        sa.Column("price_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("payment_id", sa.String(length=40), nullable=True),
        sa.Column("checkout_url", sa.String(length=500), nullable=True),
        sa.Column("completed_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("failed_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["package_id"],
            ["marketplace_packages.id"],
            name=op.f("fk_marketplace_purchases_package_id_marketplace_packages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_purchases")),
        sa.UniqueConstraint("open_key", name=op.f("uq_marketplace_purchases_open_key")),
    )
    with op.batch_alter_table("marketplace_purchases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_marketplace_purchases_organization_id"),
            ["organization_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_marketplace_purchases_package_id"), ["package_id"], unique=False
        )

    op.create_table(
        "marketplace_earnings",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("purchase_id", sa.String(length=40), nullable=False),
        sa.Column("package_id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("buyer_organization_id", sa.String(length=40), nullable=False),
        sa.Column("gross_minor", sa.BigInteger(), nullable=False),
        sa.Column("commission_minor", sa.BigInteger(), nullable=False),
        sa.Column("net_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("commission_percent", sa.String(length=10), nullable=False),
        sa.Column("booked_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["purchase_id"],
            ["marketplace_purchases.id"],
            name=op.f("fk_marketplace_earnings_purchase_id_marketplace_purchases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_earnings")),
        sa.UniqueConstraint("purchase_id", name=op.f("uq_marketplace_earnings_purchase_id")),
    )
    with op.batch_alter_table("marketplace_earnings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_marketplace_earnings_organization_id"),
            ["organization_id"],
            unique=False,
        )

    op.create_table(
        "marketplace_publish_buckets",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("milli_tokens", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", tollway.kit.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_marketplace_publish_buckets")),
    )

    # The search index: outside the models (see tollway.migrations.include_name). The
    # filter columns are copies of the package's, so a relevance search reads the index
    # alone (tollway.marketplace.search).
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE marketplace_search USING fts5("
            "package_id UNINDEXED, name, keywords, description, category, facets, "
            "license_key UNINDEXED, organization_id UNINDEXED, author_key UNINDEXED, "
            "quality_score UNINDEXED, "
            "tokenize = 'unicode61 remove_diacritics 2')"
        )
    else:
        op.execute(
            "CREATE TABLE marketplace_search ("
            "package_id VARCHAR(40) PRIMARY KEY "
            "REFERENCES marketplace_packages (id) ON DELETE CASCADE, "
            "document TSVECTOR NOT NULL, "
            "strong TSVECTOR NOT NULL, "
            "category VARCHAR(40) NOT NULL, "
            "license_key VARCHAR(200) NOT NULL, "
            "organization_id VARCHAR(40) NOT NULL, "
            "author_key VARCHAR(200) NOT NULL, "
            "quality_score INTEGER NOT NULL)"
        )
        op.execute(
            "CREATE INDEX ix_marketplace_search_document ON marketplace_search USING GIN (document)"
        )
        # Name, keywords and category alone: the strong relevance tier, answered by the
        # index (a weight-restricted tsquery on `document` would recheck every row).
        op.execute(
            "CREATE INDEX ix_marketplace_search_strong ON marketplace_search USING GIN (strong)"
        )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS marketplace_search")
    op.drop_table("marketplace_publish_buckets")
    with op.batch_alter_table("marketplace_earnings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_marketplace_earnings_organization_id"))
    op.drop_table("marketplace_earnings")
    with op.batch_alter_table("marketplace_purchases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_marketplace_purchases_package_id"))
        batch_op.drop_index(batch_op.f("ix_marketplace_purchases_organization_id"))
    op.drop_table("marketplace_purchases")
    with op.batch_alter_table("marketplace_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_marketplace_versions_package_id"))
    op.drop_table("marketplace_versions")
    with op.batch_alter_table("marketplace_packages", schema=None) as batch_op:
        batch_op.drop_index("ix_marketplace_packages_listed_recent")
        batch_op.drop_index("ix_marketplace_packages_listed_downloads")
        batch_op.drop_index(batch_op.f("ix_marketplace_packages_organization_id"))
        batch_op.drop_index(batch_op.f("ix_marketplace_packages_license"))
        batch_op.drop_index("ix_marketplace_packages_category_listed")
    op.drop_table("marketplace_packages")
