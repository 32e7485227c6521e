"""Tables of the marketplace: packages, their versions, purchases, earnings and the
per-organization publishing bucket.

The search index is not here: it is a dialect-specific structure (an FTS5 virtual
table on SQLite, a ``tsvector`` table with a GIN index on PostgreSQL) created by the
migration and maintained by :mod:`tollway.marketplace.search`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tollway.kit.models import Base, TimestampMixin, id_column


class Package(TimestampMixin, Base):
    """A package (a template) of one author organization.

    ``listed``, ``latest_version``, ``latest_published_at``, ``downloads`` and
    ``quality_score`` are kept up to date from the versions, so search reads one row.
    A package is listed while it has at least one published version (deprecated and
    yanked ones leave search).
    """

    __tablename__ = "marketplace_packages"
    __table_args__ = (
        Index("ix_marketplace_packages_listed_downloads", "listed", "downloads"),
        Index("ix_marketplace_packages_listed_recent", "listed", "latest_published_at"),
        Index("ix_marketplace_packages_category_listed", "category", "listed"),
    )

    id: Mapped[str] = id_column()
    #: Normalised: lowercase, ``-`` between words (``Flask_Login`` is ``flask-login``).
    name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    category: Mapped[str] = mapped_column(String(40), nullable=False)
    keywords: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    #: A canonical SPDX expression (``MIT OR Apache-2.0``, ``LicenseRef-Acme``).
    license: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    price_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    currency: Mapped[str | None] = mapped_column(String(3))
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    author_name: Mapped[str] = mapped_column(String(200), nullable=False)
    quality_score: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    downloads: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    listed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    latest_version: Mapped[str | None] = mapped_column(String(100))
    latest_published_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(nullable=False)

    @property
    def is_free(self) -> bool:
        return self.price_minor == 0


class PackageVersion(TimestampMixin, Base):
    """One semver version: ``draft -> published -> deprecated -> yanked``.

    Rows are never deleted, so a name@version is never given out twice.
    """

    __tablename__ = "marketplace_versions"
    __table_args__ = (UniqueConstraint("package_id", "version"),)

    id: Mapped[str] = id_column()
    package_id: Mapped[str] = mapped_column(
        ForeignKey("marketplace_packages.id", ondelete="CASCADE"), nullable=False, index=True
    )
    version: Mapped[str] = mapped_column(String(100), nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    #: ``[{"name": ..., "spec": ...}]``
    dependencies: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    storage_key: Mapped[str] = mapped_column(String(200), nullable=False)
    signature: Mapped[str] = mapped_column(String(200), nullable=False)
    signature_kid: Mapped[str] = mapped_column(String(40), nullable=False)
    downloads: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    published_at: Mapped[datetime | None] = mapped_column()
    deprecated_at: Mapped[datetime | None] = mapped_column()
    deprecation_message: Mapped[str | None] = mapped_column(String(500))
    yanked_at: Mapped[datetime | None] = mapped_column()
    yank_reason: Mapped[str | None] = mapped_column(String(500))


class Purchase(TimestampMixin, Base):
    """An organization's acquisition of a package (free or paid).

    ``status``: ``pending`` (payment under way) -> ``completed`` (the entitlement) or
    ``failed``; a completed sale whose payment is refunded in full becomes ``refunded``
    (the entitlement is gone). ``open_key`` is set while pending or completed and
    unique, so an organization has at most one live purchase per package; failed and
    refunded ones keep NULL. ``refunded_minor`` follows the payment's refunds.
    """

    __tablename__ = "marketplace_purchases"

    id: Mapped[str] = id_column()
    package_id: Mapped[str] = mapped_column(
        ForeignKey("marketplace_packages.id", ondelete="CASCADE"), nullable=False, index=True
    )
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    open_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    price_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str | None] = mapped_column(String(3))
    payment_id: Mapped[str | None] = mapped_column(String(40))
    checkout_url: Mapped[str | None] = mapped_column(String(500))
    completed_at: Mapped[datetime | None] = mapped_column()
    failed_at: Mapped[datetime | None] = mapped_column()
    refunded_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    refunded_at: Mapped[datetime | None] = mapped_column()


class Earning(TimestampMixin, Base):
    """One sale, booked for the author: gross = commission + net.

    Refunds reverse it in proportion (``MarketplaceService.reverse_earning``):
    ``refunded = commission_reversed + net_reversed``, and a full refund reverses
    exactly the commission and the net booked.
    """

    __tablename__ = "marketplace_earnings"

    id: Mapped[str] = id_column()
    purchase_id: Mapped[str] = mapped_column(
        ForeignKey("marketplace_purchases.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    package_id: Mapped[str] = mapped_column(String(40), nullable=False)
    #: The author organization (who earns).
    organization_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    buyer_organization_id: Mapped[str] = mapped_column(String(40), nullable=False)
    gross_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    commission_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    net_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    #: The catalog's commission when the sale was booked, as a decimal string ("15").
    commission_percent: Mapped[str] = mapped_column(String(10), nullable=False)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    commission_reversed_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    net_reversed_minor: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    booked_at: Mapped[datetime] = mapped_column(nullable=False)


class PublishBucket(Base):
    """A token bucket per organization: version uploads spend a token; tokens refill
    at a steady rate on the business clock."""

    __tablename__ = "marketplace_publish_buckets"

    organization_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    #: Tokens in thousandths, so refills of a fraction of a token stay integers.
    milli_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)
