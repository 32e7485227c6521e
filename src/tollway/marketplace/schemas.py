from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tollway.kit.money import Currency
from tollway.kit.numbers import AmountMinor
from tollway.marketplace.models import Earning, Package, PackageVersion, Purchase


class PackagePriceOut(BaseModel):
    amount: AmountMinor = Field(ge=0, le=100_000_000, description="minor units (cents)")
    currency: str = Field(min_length=3, max_length=3, examples=["usd"])


class PriceIn(BaseModel):
    """A price as a request sends it: the currency must be ISO 4217 (422 ``invalid_currency``)."""

    amount: AmountMinor = Field(ge=0, le=100_000_000, description="minor units (cents)")
    currency: Currency


class PackageIn(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["fastapi-crud"])
    description: str = Field(min_length=1, max_length=5000)
    category: str = Field(min_length=1, max_length=40, examples=["web"])
    keywords: list[str] = Field(default_factory=list, max_length=20)
    license: str = Field(min_length=1, max_length=200, examples=["MIT"])
    price: PriceIn | None = Field(None, description="absent or amount 0: a free package")


class PackageUpdateIn(BaseModel):
    """The fields to change; those left out stay. ``price: null`` (or amount 0) makes the
    package free."""

    description: str | None = Field(None, min_length=1, max_length=5000)
    category: str | None = Field(None, min_length=1, max_length=40, examples=["web"])
    keywords: list[str] | None = Field(None, max_length=20)
    license: str | None = Field(None, min_length=1, max_length=200, examples=["MIT"])
    price: PriceIn | None = None


class AuthorOut(BaseModel):
    organization_id: str
    name: str


class DependencyOut(BaseModel):
    name: str
    spec: str


class VersionOut(BaseModel):
    version: str
    state: str
    sha256: str
    signature: str
    signature_kid: str
    size_bytes: int
    dependencies: list[DependencyOut]
    downloads: int
    created_at: datetime
    published_at: datetime | None
    deprecated_at: datetime | None
    deprecation_message: str | None
    yanked_at: datetime | None
    yank_reason: str | None

    @classmethod
    def of(cls, version: PackageVersion) -> VersionOut:
        return cls(
            version=version.version,
            state=version.state,
            sha256=version.sha256,
            signature=version.signature,
            signature_kid=version.signature_kid,
            size_bytes=version.size_bytes,
            dependencies=[DependencyOut(**dep) for dep in version.dependencies],
            downloads=version.downloads,
            created_at=version.created_at,
            published_at=version.published_at,
            deprecated_at=version.deprecated_at,
            deprecation_message=version.deprecation_message,
            yanked_at=version.yanked_at,
            yank_reason=version.yank_reason,
        )


def price_of(amount_minor: int, currency: str | None) -> PackagePriceOut | None:
    if amount_minor == 0 or currency is None:
        return None
    return PackagePriceOut(amount=amount_minor, currency=currency)


class PackageOut(BaseModel):
    id: str
    name: str
    description: str
    category: str
    keywords: list[str]
    license: str
    price: PackagePriceOut | None = Field(description="null for a free package")
    free: bool
    author: AuthorOut
    quality_score: int
    downloads: int
    listed: bool
    latest_version: str | None
    latest_published_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, package: Package) -> PackageOut:
        return cls(
            id=package.id,
            name=package.name,
            description=package.description,
            category=package.category,
            keywords=list(package.keywords),
            license=package.license,
            price=price_of(package.price_minor, package.currency),
            free=package.is_free,
            author=AuthorOut(organization_id=package.organization_id, name=package.author_name),
            quality_score=package.quality_score,
            downloads=package.downloads,
            listed=package.listed,
            latest_version=package.latest_version,
            latest_published_at=package.latest_published_at,
            created_at=package.created_at,
        )


class PackageDetailOut(PackageOut):
    versions: list[VersionOut]


class VersionActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500, description="why (required to yank)")


class SearchIn(BaseModel):
    query: str | None = Field(None, max_length=200)
    category: str | None = Field(None, max_length=40)
    author: str | None = Field(None, max_length=200, description="organization id or name")
    license: str | None = Field(None, max_length=200)
    min_quality: int | None = Field(None, ge=0, le=100)
    sort: Literal["relevance", "downloads", "recent"] = "relevance"
    page: int = Field(1, ge=1, le=10_000)
    limit: int = Field(20, ge=1, le=100)


class SearchOut(BaseModel):
    items: list[PackageOut]
    total: int
    page: int
    limit: int


class RequirementIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    spec: str = Field("*", max_length=200, examples=[">=1.2,<2", "^1.4", "==1.0.3"])


class ResolveIn(BaseModel):
    requirements: list[RequirementIn] = Field(min_length=1, max_length=200)


class ResolvedPackageOut(BaseModel):
    name: str
    version: str
    sha256: str
    signature: str
    signature_kid: str
    purchase_required: bool
    package_id: str
    state: str
    price: PackagePriceOut | None


class ResolveOut(BaseModel):
    packages: list[ResolvedPackageOut]


class PurchaseOut(BaseModel):
    purchase_id: str
    package_id: str
    status: str
    price: PackagePriceOut | None
    checkout_url: str | None = None
    created_at: datetime
    completed_at: datetime | None
    refunded: int = Field(0, description="refunded so far (minor units)")
    refunded_at: datetime | None = Field(
        None, description="when a full refund revoked the package (status `refunded`)"
    )

    @classmethod
    def of(cls, purchase: Purchase) -> PurchaseOut:
        return cls(
            purchase_id=purchase.id,
            package_id=purchase.package_id,
            status=purchase.status,
            price=price_of(purchase.price_minor, purchase.currency),
            checkout_url=purchase.checkout_url if purchase.status == "pending" else None,
            created_at=purchase.created_at,
            completed_at=purchase.completed_at,
            refunded=purchase.refunded_minor,
            refunded_at=purchase.refunded_at,
        )


class PurchaseListOut(BaseModel):
    items: list[PurchaseOut]
    next_cursor: str | None = None


class EarningTotalOut(BaseModel):
    currency: str
    sales: int
    gross: int
    commission: int
    net: int
    refunded: int = Field(description="refunded to buyers (minor units)")
    commission_reversed: int = Field(description="the platform's commission given back")
    net_reversed: int = Field(description="the author's net given back")


class EarningOut(BaseModel):
    id: str
    purchase_id: str
    package_id: str
    gross: int
    commission: int
    net: int
    currency: str
    commission_percent: str
    booked_at: datetime
    refunded: int = Field(
        description="refunded to the buyer; refunded = commission_reversed + net_reversed"
    )
    commission_reversed: int
    net_reversed: int

    @classmethod
    def of(cls, earning: Earning) -> EarningOut:
        return cls(
            id=earning.id,
            purchase_id=earning.purchase_id,
            package_id=earning.package_id,
            gross=earning.gross_minor,
            commission=earning.commission_minor,
            net=earning.net_minor,
            currency=earning.currency,
            commission_percent=earning.commission_percent,
            booked_at=earning.booked_at,
            refunded=earning.refunded_minor,
            commission_reversed=earning.commission_reversed_minor,
            net_reversed=earning.net_reversed_minor,
        )


class EarningsOut(BaseModel):
    totals: list[EarningTotalOut] = Field(
        description="per currency: sales, gross, commission, net as booked, and what refunds "
        "reversed of them"
    )
    items: list[EarningOut]
    next_cursor: str | None = None


class SigningKeyOut(BaseModel):
    algorithm: Literal["Ed25519"] = "Ed25519"
    keys: list[dict[str, Any]] = Field(description="JWKS (RFC 8037 OKP keys), newest first")
    signed_message: str = Field(
        description="what a signature covers, with {name}, {version} and {sha256} filled in"
    )


class OrderRefundIn(BaseModel):
    amount: AmountMinor | None = Field(
        None, description="minor units; all that is left to refund if omitted"
    )
