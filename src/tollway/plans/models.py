from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tollway.kit.models import Base, JSONDocument


class CatalogVersion(Base):
    """Every catalog ever loaded, numbered; the highest version is the active one.

    Prices are kept per version (:class:`PlanPriceSnapshot`) so that a subscription can
    keep the price of the version it started on when the catalog changes.
    """

    __tablename__ = "catalog_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)
    source: Mapped[str] = mapped_column(String(500), nullable=False)
    document: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    loaded_at: Mapped[datetime] = mapped_column(nullable=False)


class PlanPriceSnapshot(Base):
    __tablename__ = "plan_prices"

    catalog_version: Mapped[int] = mapped_column(
        ForeignKey("catalog_versions.version", ondelete="CASCADE"), primary_key=True
    )
    plan_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    amount_minor: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    interval: Mapped[str] = mapped_column(String(8), nullable=False)
    trial_days: Mapped[int] = mapped_column(Integer, nullable=False)
    monthly_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    #: Overage prices of this version: ``{feature: {meter, included, unit_amount,
    #: per_units}}`` (None: the version priced no overage).
    overage: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)


class OrganizationPlan(Base):
    """The plan an organization is on and its license state (written by billing).

    No row means the catalog's default plan in the ``active`` state.
    """

    __tablename__ = "organization_plans"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    plan_id: Mapped[str] = mapped_column(String(64), nullable=False)
    #: active, grace, restricted or canceled (DESIGN.md §6).
    license_state: Mapped[str] = mapped_column(String(16), nullable=False)
    grace_ends_at: Mapped[datetime | None] = mapped_column()
    #: The catalog version whose price the organization keeps (None: the current one).
    catalog_version: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)


class OrganizationOverride(Base):
    """Custom limits negotiated with one organization (enterprise deals).

    ``overrides`` holds ``{"features": {feature: {enabled?, quota?, enforcement?,
    rate_limit_per_minute?}}, "rate_limit_per_minute": n, "abuse": {threshold: n}}``;
    a ``quota`` of null means unlimited; ``abuse`` changes the plan's abuse thresholds.
    """

    __tablename__ = "organization_overrides"

    organization_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    overrides: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)
