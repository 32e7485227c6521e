"""The marketplace: packages, signed versions, search, resolution, purchases, earnings.

Packages belong to an author organization. A version is uploaded as a draft with
its artifact (stored content-addressed, SHA-256 recorded, signed with the platform's
Ed25519 key), then published, deprecated and yanked; rows are never deleted, so a
name@version is never given out twice. Every lifecycle change recomputes the
package's listing (a package is in search while it has a published version), its
quality score and its search document, in the same transaction.

Acquiring a package (``purchase``) counts against the plan's ``templates`` limit
through the entitlements decision. A free package is granted at once; a paid one
creates a payment (a charge of the default card, else a checkout page) and is
granted only when payments tells :class:`MarketplacePayments` that the payment
succeeded - the webhook path - which also books the author's earning and the
platform's commission.

Refunds (an operator's ``refund_order``, or one made at the provider and reported by
``charge.refunded``) reach :meth:`MarketplaceService.payment_refunded` once per
increase of the payment's refunded total: the earning is reversed in proportion
(:func:`reversal_shares`) and a full refund revokes the buyer's entitlement.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import semver
import structlog
from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.service import account_service
from tollway.audit.service import audit_service
from tollway.config import Settings
from tollway.entitlements.service import EntitlementsRuntime, entitlements_service
from tollway.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PaymentRequired,
    RateLimited,
    TollwayError,
    Unprocessable,
)
from tollway.kit.clock import Clock
from tollway.kit.ids import new_id
from tollway.kit.money import Money, normalize_currency
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams, PageResult
from tollway.kit.signing import KeyRing
from tollway.marketplace import repository
from tollway.marketplace.models import Earning, Package, PackageVersion, PublishBucket, Purchase
from tollway.marketplace.quality import MIN_DESCRIPTION_LENGTH, QualityInput, quality_score
from tollway.marketplace.resolver import Candidate, Requirement, resolve
from tollway.marketplace.search import SearchPage, SearchQuery, search_backend
from tollway.marketplace.storage import ArtifactStorage
from tollway.marketplace.versioning import parse_spec, parse_version, validate_name
from tollway.payments.env import PaymentEnv
from tollway.payments.errors import RefundExceedsPaid
from tollway.payments.models import Payment
from tollway.payments.service.charges import charge_service
from tollway.payments.service.checkout import checkout_service
from tollway.payments.service.methods import payment_method_service
from tollway.payments.service.refunds import refund_service
from tollway.plans.service import catalog_service

log = structlog.get_logger("tollway.marketplace")

PURCHASE_PURPOSE = "marketplace_purchase"
TEMPLATES_FEATURE = "templates.install"
#: How deep the free dependencies of a purchase are followed (resolution has its own limits).
MAX_DEPENDENCY_DEPTH = 20
MAX_DEPENDENCIES = 100
MAX_KEYWORDS = 20
#: What an artifact signature covers (documented in docs/marketplace.md).
SIGNED_MESSAGE = "tollway-artifact:v1\n{name}\n{version}\n{sha256}"
_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_KEYWORD = re.compile(r"^[\w][\w .+#-]{0,39}$", re.UNICODE)

#: action -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "publish": (frozenset({"draft"}), "published"),
    "deprecate": (frozenset({"published"}), "deprecated"),
    "yank": (frozenset({"published", "deprecated"}), "yanked"),
}


class PackageNotFound(NotFound):
    code = "package_not_found"
    title = "Package not found"


class VersionNotFound(NotFound):
    code = "version_not_found"
    title = "Version not found"


class PackageNameTaken(Conflict):
    code = "package_name_taken"
    title = "Package name taken"


class DuplicateVersion(Conflict):
    code = "duplicate_version"
    title = "Version already exists"


class InvalidTransition(Conflict):
    code = "invalid_transition"
    title = "Not possible in this state"


class PackagePublished(Conflict):
    code = "package_published"
    title = "Package has published versions"


class NotPackageOwner(Forbidden):
    code = "not_package_owner"
    title = "Not the package's author"


class PurchaseRequired(PaymentRequired):
    code = "purchase_required"
    title = "Purchase required"


class PackageUnavailable(Conflict):
    code = "package_unavailable"
    title = "Package unavailable"


class OrderNotFound(NotFound):
    code = "order_not_found"
    title = "Order not found"


class OrderNotPaid(Conflict):
    code = "order_not_paid"
    title = "Order not paid"


class OwnPackage(Conflict):
    code = "own_package"
    title = "Your own package"


def _invalid(code: str, detail: str, **extra: Any) -> Unprocessable:
    return Unprocessable(detail, code=code, **extra)


@dataclass(frozen=True, slots=True)
class MarketEnv:
    """What marketplace operations need besides the session."""

    settings: Settings
    clock: Clock
    keys: KeyRing
    storage: ArtifactStorage

    @property
    def payments(self) -> PaymentEnv:
        return PaymentEnv.of(self)


@dataclass(frozen=True, slots=True)
class PackageView:
    package: Package
    versions: list[PackageVersion]


@dataclass(frozen=True, slots=True)
class ResolvedItem:
    candidate: Candidate
    purchase_required: bool


@dataclass(frozen=True, slots=True)
class Download:
    package: Package
    version: PackageVersion


@dataclass(frozen=True, slots=True)
class EarningsView:
    totals: list[repository.EarningTotals]
    page: PageResult[Earning]


def _half_up_share(part: int, numerator: int, denominator: int) -> int:
    """round_half_up(part x numerator / denominator) for non-negative integers."""
    return (2 * part * numerator + denominator) // (2 * denominator)


def reversal_shares(
    *, gross: int, commission: int, refunded_before: int, refunded_after: int
) -> tuple[int, int]:
    """(commission reversed, net reversed) by a refund from ``refunded_before`` to
    ``refunded_after`` of a sale of ``gross`` whose commission was ``commission``.

    The commission reversed is rounded half up on the running total - the way the
    sale's commission was rounded: round_half_up(commission x refunded so far / gross)
    less the same figure before this refund - and the author's net takes the exact
    rest, so each refund's two shares add up to the amount refunded, and a full refund
    reverses exactly the commission and the net booked. 19.99 with 3.00 commission,
    refunded 10.00 then 9.99: commission 1.50 + net 8.50, then 1.50 + 8.49.
    """
    if gross <= 0:
        return 0, 0
    after = min(refunded_after, gross)
    before = min(refunded_before, after)
    commission_share = _half_up_share(commission, after, gross) - _half_up_share(
        commission, before, gross
    )
    return commission_share, (after - before) - commission_share


def signed_message(name: str, version: str, sha256: str) -> bytes:
    return SIGNED_MESSAGE.format(name=name, version=version, sha256=sha256).encode()


def _semver_key(version: PackageVersion) -> semver.Version:
    return semver.Version.parse(version.version)


def canonical_license(raw: str, *, paid: bool) -> str:
    try:
        expression = str(canonicalize_license_expression(raw.strip()))
    except InvalidLicenseExpression as error:
        raise _invalid("invalid_license", f"not an SPDX license expression: {error}") from None
    if "LicenseRef-" in expression and not paid:
        raise _invalid(
            "invalid_license",
            "LicenseRef-... (a custom licence) is for paid packages; a free package takes "
            "an SPDX license such as MIT or Apache-2.0",
        )
    return expression


def _category(raw: str) -> str:
    category = raw.strip().lower()
    if not _CATEGORY.match(category):
        raise _invalid("invalid_category", "a category is 1-40 lowercase letters, digits and '-'")
    return category


def _keywords(raw: list[str]) -> list[str]:
    keywords: list[str] = []
    for item in raw:
        keyword = " ".join(item.split()).lower()
        if not _KEYWORD.match(keyword):
            raise _invalid(
                "invalid_keywords",
                f"{item[:50]!r}: a keyword is 1-40 letters, digits, spaces or '.+#-'",
            )
        if keyword not in keywords:
            keywords.append(keyword)
    return keywords[:MAX_KEYWORDS]


def _editable(package: Package) -> dict[str, Any]:
    """What ``PATCH`` may change, to tell which fields an edit changed."""
    return {
        "description": package.description,
        "category": package.category,
        "keywords": list(package.keywords),
        "license": package.license,
        "price": package.price_minor,
        "currency": package.currency,
    }


def _description(raw: str) -> str:
    """The same rule at creation and edit as at publish: a description worth listing."""
    description = raw.strip()
    if len(description) < MIN_DESCRIPTION_LENGTH:
        raise _invalid(
            "invalid_description",
            f"the description needs at least {MIN_DESCRIPTION_LENGTH} characters",
        )
    return description


def _price(amount: int | None, currency: str | None) -> tuple[int, str | None]:
    if not amount:
        return 0, None
    try:
        code = normalize_currency(currency or "")
    except ValueError:
        raise _invalid("invalid_currency", f"{currency!r} is not an ISO 4217 currency") from None
    return amount, code


def parse_dependencies(raw: str | None, *, own_name: str) -> list[dict[str, str]]:
    """The ``dependencies`` form field: a JSON list of ``{"name", "spec"}``."""
    if raw is None or not raw.strip():
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        raise _invalid(
            "invalid_dependencies", 'dependencies must be JSON: [{"name": ..., "spec": ...}]'
        ) from None
    if not isinstance(items, list) or len(items) > MAX_DEPENDENCIES:
        raise _invalid(
            "invalid_dependencies", f"dependencies must be a list of at most {MAX_DEPENDENCIES}"
        )
    dependencies: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _invalid("invalid_dependencies", 'each dependency is {"name": ..., "spec": ...}')
        spec_text = item.get("spec", "*")
        if not isinstance(spec_text, str):
            raise _invalid("invalid_dependencies", "a dependency's spec is a string")
        name = validate_name(item["name"])
        if name == own_name:
            raise _invalid("invalid_dependencies", "a package cannot depend on itself")
        if name in dependencies:
            raise _invalid("invalid_dependencies", f"{name} is listed twice")
        dependencies[name] = parse_spec(spec_text).text
    return [{"name": name, "spec": spec} for name, spec in dependencies.items()]


class MarketplaceService:
    # -- packages -------------------------------------------------------------------

    async def create_package(
        self,
        session: AsyncSession,
        env: MarketEnv,
        *,
        organization_id: str,
        name: str,
        description: str,
        category: str,
        keywords: list[str],
        license: str,
        price_amount: int | None,
        price_currency: str | None,
    ) -> Package:
        normalized = validate_name(name)
        amount, currency = _price(price_amount, price_currency)
        expression = canonical_license(license, paid=amount > 0)
        package = Package(
            id=new_id("pkg"),
            name=normalized,
            description=_description(description),
            category=_category(category),
            keywords=_keywords(keywords),
            license=expression,
            price_minor=amount,
            currency=currency,
            organization_id=organization_id,
            author_name=(await account_service.get_organization(session, organization_id)).name,
            quality_score=0,
            downloads=0,
            listed=False,
            updated_at=env.clock.now(),
            created_at=env.clock.now(),
        )
        if await repository.get_package_by_name(session, normalized) is not None:
            raise PackageNameTaken(f"the name {normalized!r} is taken", name=normalized)
        await repository.add(session, package)
        audit_service.record(
            session,
            action="marketplace_package.created",
            target=package.id,
            organization_id=organization_id,
            details={"name": package.name, "price": amount, "currency": currency},
        )
        return package

    async def update_package(
        self,
        session: AsyncSession,
        env: MarketEnv,
        *,
        organization_id: str,
        package_ref: str,
        changes: dict[str, Any],
    ) -> PackageView:
        """Change a package's description, category, keywords, license or price (its
        author organization only), validated as at creation. ``changes`` holds the fields
        sent; ``price`` None makes the package free. The license is checked against the
        resulting price (``LicenseRef-...`` stays for paid packages only)."""
        package = await self._owned(session, package_ref, organization_id=organization_id)
        before = _editable(package)
        if "description" in changes:
            package.description = _description(changes["description"] or "")
        if "category" in changes:
            package.category = _category(changes["category"] or "")
        if "keywords" in changes:
            package.keywords = _keywords(changes["keywords"] or [])
        if "price" in changes:
            price = changes["price"] or {}
            package.price_minor, package.currency = _price(
                price.get("amount"), price.get("currency")
            )
        package.license = canonical_license(
            changes.get("license") or package.license, paid=package.price_minor > 0
        )
        after = _editable(package)
        changed = {key: after[key] for key in after if after[key] != before[key]}
        if changed:
            await self._refresh_listing(session, env, package)
            audit_service.record(
                session,
                action="marketplace_package.updated",
                target=package.id,
                organization_id=organization_id,
                details={"name": package.name, "changes": changed},
            )
            await outbox.publish(
                session,
                "marketplace_package.updated",
                {"package_id": package.id, "package": package.name, "changes": changed},
                organization_id=organization_id,
                occurred_at=env.clock.now(),
            )
        return await self._visible(session, package.id, organization_id=organization_id)

    async def delete_package(
        self, session: AsyncSession, env: MarketEnv, *, organization_id: str, package_ref: str
    ) -> None:
        """Delete a package none of whose versions was ever published (its drafts go
        with it) and free its name; a package that was published stays (409
        ``package_published``): buyers and dependents rely on its name@versions."""
        package = await self._owned(session, package_ref, organization_id=organization_id)
        versions = await repository.list_versions(session, package_id=package.id)
        if any(version.published_at is not None for version in versions):
            raise PackagePublished(
                f"{package.name} has published versions: deprecate or yank them instead"
            )
        await search_backend(session).remove(session, package.id)
        await repository.delete_package(session, package_id=package.id)
        audit_service.record(
            session,
            action="marketplace_package.deleted",
            target=package.id,
            organization_id=organization_id,
            details={"name": package.name, "drafts": [version.version for version in versions]},
        )
        await outbox.publish(
            session,
            "marketplace_package.deleted",
            {"package_id": package.id, "package": package.name},
            organization_id=organization_id,
            occurred_at=env.clock.now(),
        )

    async def _find(self, session: AsyncSession, id_or_name: str) -> Package:
        package = await repository.find_package(session, id_or_name=id_or_name.strip())
        if package is None:
            package = await repository.get_package_by_name(
                session, re.sub(r"[-_.]+", "-", id_or_name.strip()).lower()
            )
        if package is None:
            raise PackageNotFound(f"there is no package {id_or_name[:100]!r}")
        return package

    async def _visible(
        self, session: AsyncSession, id_or_name: str, *, organization_id: str | None
    ) -> PackageView:
        """The package and the versions the caller may see; a package with drafts only
        is invisible to other organizations (404)."""
        package = await self._find(session, id_or_name)
        versions = await repository.list_versions(session, package_id=package.id)
        if package.organization_id != organization_id:
            versions = [version for version in versions if version.state != "draft"]
            if not versions:
                raise PackageNotFound(f"there is no package {id_or_name[:100]!r}")
        versions.sort(key=_semver_key, reverse=True)
        return PackageView(package=package, versions=versions)

    async def _owned(
        self, session: AsyncSession, id_or_name: str, *, organization_id: str
    ) -> Package:
        view = await self._visible(session, id_or_name, organization_id=organization_id)
        if view.package.organization_id != organization_id:
            raise NotPackageOwner("only the package's author organization may change it")
        return view.package

    async def get_package(
        self, session: AsyncSession, *, id_or_name: str, organization_id: str | None
    ) -> PackageView:
        return await self._visible(session, id_or_name, organization_id=organization_id)

    # -- versions -------------------------------------------------------------------

    async def _spend_publish_token(
        self, session: AsyncSession, env: MarketEnv, *, organization_id: str
    ) -> None:
        """Token bucket: ``burst`` tokens, refilled at ``per_hour`` a hour; one per upload."""
        now = env.clock.now()
        capacity = env.settings.marketplace_publish_burst * 1000
        per_hour = env.settings.marketplace_publish_per_hour
        bucket = await repository.get_bucket(
            session, organization_id=organization_id, for_update=True
        )
        if bucket is None:
            bucket = PublishBucket(
                organization_id=organization_id, milli_tokens=capacity, updated_at=now
            )
            session.add(bucket)
        elapsed_us = max(0, (now - bucket.updated_at) // timedelta(microseconds=1))
        refill = elapsed_us * per_hour * 1000 // 3_600_000_000
        tokens = min(capacity, bucket.milli_tokens + refill)
        if tokens < 1000:
            wait_seconds = -(-(1000 - tokens) * 3600 // (per_hour * 1000))
            raise RateLimited(
                f"at most {env.settings.marketplace_publish_burst} uploads in a burst and "
                f"{per_hour} an hour per organization",
                code="publish_rate_limited",
                retry_after=wait_seconds,
            )
        bucket.milli_tokens = tokens - 1000
        bucket.updated_at = now
        await session.flush()

    async def create_version(
        self,
        session: AsyncSession,
        env: MarketEnv,
        *,
        organization_id: str,
        package_ref: str,
        version: str,
        dependencies: str | None,
        artifact: AsyncIterator[bytes],
        publish: bool = False,
    ) -> PackageVersion:
        """Store, hash and sign an artifact as a draft version (published at once with
        ``publish``). Everything about the request is checked before the upload is read."""
        package = await self._owned(session, package_ref, organization_id=organization_id)
        parsed = parse_version(version)
        text = str(parsed)
        existing = await repository.list_versions(session, package_id=package.id)
        for other in existing:
            if _semver_key(other).compare(parsed) == 0:
                raise DuplicateVersion(
                    f"{package.name}@{other.version} exists (state {other.state}); a version "
                    "is never reused, even after a yank: publish a new one",
                    version=other.version,
                )
        deps = parse_dependencies(dependencies, own_name=package.name)
        await self._spend_publish_token(session, env, organization_id=organization_id)
        stored = await env.storage.store(
            artifact, max_bytes=env.settings.marketplace_max_artifact_bytes
        )
        kid, signature = env.keys.sign(signed_message(package.name, text, stored.sha256))
        now = env.clock.now()
        row = PackageVersion(
            id=new_id("pkv"),
            package_id=package.id,
            version=text,
            state="draft",
            dependencies=deps,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            storage_key=stored.key,
            signature=signature,
            signature_kid=kid,
            downloads=0,
            created_at=now,
        )
        await repository.add(session, row)
        audit_service.record(
            session,
            action="marketplace_version.uploaded",
            target=row.id,
            organization_id=organization_id,
            details={"package": package.name, "version": text, "sha256": stored.sha256},
        )
        if publish:
            return await self.transition(
                session,
                env,
                organization_id=organization_id,
                package_ref=package.id,
                version=text,
                action="publish",
                reason=None,
            )
        return row

    async def _publish_errors(
        self, session: AsyncSession, package: Package, version: PackageVersion
    ) -> list[str]:
        errors: list[str] = []
        if len(package.description.strip()) < MIN_DESCRIPTION_LENGTH:
            errors.append(f"the description needs at least {MIN_DESCRIPTION_LENGTH} characters")
        names = [dep["name"] for dep in version.dependencies]
        found = {p.name: p for p in await repository.list_packages_by_names(session, names)}
        versions_by_package: dict[str, list[PackageVersion]] = {}
        for row in await repository.list_resolvable_versions(
            session, package_ids=[p.id for p in found.values()]
        ):
            versions_by_package.setdefault(row.package_id, []).append(row)
        for dep in version.dependencies:
            target = found.get(dep["name"])
            if target is None:
                errors.append(f"the dependency {dep['name']} does not exist")
                continue
            spec = parse_spec(dep["spec"])
            usable = [
                row
                for row in versions_by_package.get(target.id, [])
                if spec.contains(_semver_key(row))
                and (row.state != "yanked" or spec.pin == _semver_key(row))
            ]
            if not usable:
                errors.append(f"no published version of {dep['name']} matches {dep['spec']}")
        return errors

    async def transition(
        self,
        session: AsyncSession,
        env: MarketEnv,
        *,
        organization_id: str,
        package_ref: str,
        version: str,
        action: str,
        reason: str | None,
    ) -> PackageVersion:
        """``publish`` (draft), ``deprecate`` (published), ``yank`` (published or
        deprecated; needs a reason)."""
        if action not in TRANSITIONS:
            raise NotFound("the actions are publish, deprecate and yank", code="unknown_action")
        package = await self._owned(session, package_ref, organization_id=organization_id)
        row = await repository.get_version(
            session, package_id=package.id, version=version.strip(), for_update=True
        )
        if row is None:
            raise VersionNotFound(f"{package.name} has no version {version[:100]!r}")
        allowed_from, target = TRANSITIONS[action]
        if row.state not in allowed_from:
            raise InvalidTransition(
                f"{package.name}@{row.version} is {row.state}; {action} needs "
                + " or ".join(sorted(allowed_from)),
                state=row.state,
            )
        now = env.clock.now()
        reason = (reason or "").strip() or None
        if action == "publish":
            errors = await self._publish_errors(session, package, row)
            if errors:
                raise _invalid(
                    "package_invalid",
                    "the version cannot be published: " + "; ".join(errors),
                    errors=errors,
                )
            row.published_at = now
        elif action == "deprecate":
            row.deprecated_at = now
            row.deprecation_message = reason
        else:
            if reason is None:
                raise _invalid("yank_reason_required", "say why the version is yanked")
            row.yanked_at = now
            row.yank_reason = reason
        row.state = target
        await session.flush()
        await self._refresh_listing(session, env, package)
        audit_service.record(
            session,
            action=f"marketplace_version.{target}",
            target=row.id,
            organization_id=organization_id,
            details={"package": package.name, "version": row.version, "reason": reason},
        )
        await outbox.publish(
            session,
            f"marketplace_version.{target}",
            {"package": package.name, "package_id": package.id, "version": row.version},
            organization_id=organization_id,
            occurred_at=now,
        )
        return row

    async def _refresh_listing(
        self, session: AsyncSession, env: MarketEnv, package: Package
    ) -> None:
        versions = await repository.list_versions(session, package_id=package.id)
        published = [v for v in versions if v.state == "published"]
        live = [v for v in versions if v.state in ("published", "deprecated")]
        # The newest release, preferring final versions over pre-releases.
        newest = max(
            published or live,
            key=lambda v: (not _semver_key(v).prerelease, _semver_key(v)),
            default=None,
        )
        package.listed = bool(published)
        package.latest_version = newest.version if newest is not None else None
        package.latest_published_at = max(
            (v.published_at for v in published if v.published_at is not None), default=None
        )
        now = env.clock.now()
        package.quality_score = quality_score(
            QualityInput(
                description=package.description,
                license=package.license,
                keywords=list(package.keywords),
                latest_published_at=max(
                    (v.published_at for v in live if v.published_at is not None), default=None
                ),
                downloads=package.downloads,
                has_live_version=bool(live),
            ),
            now=now,
        )
        package.updated_at = now
        await session.flush()
        backend = search_backend(session)
        if package.listed:
            await backend.index_package(session, package)
        else:
            await backend.remove(session, package.id)

    # -- search and resolution ------------------------------------------------------

    async def search(self, session: AsyncSession, query: SearchQuery) -> SearchPage:
        return await search_backend(session).search(session, query)

    async def resolve(
        self,
        session: AsyncSession,
        env: MarketEnv,
        *,
        organization_id: str | None,
        requirements: list[tuple[str, str]],
    ) -> list[ResolvedItem]:
        wanted = [
            Requirement(name=validate_name(name), spec=parse_spec(spec))
            for name, spec in requirements
        ]
        packages: dict[str, Any] = {}
        graph: dict[str, list[Candidate]] = {}
        requirements_memo: dict[tuple[str, str], Requirement] = {}
        frontier = {req.name for req in wanted}
        seen: set[str] = set()
        # Load the reachable graph one level at a time: one query for the packages and
        # one for their versions per level, as plain rows (no ORM objects to track).
        while frontier:
            seen |= frontier
            found = await repository.list_package_heads(session, frontier)
            for package in found:
                packages[package.name] = package
                graph[package.name] = []
            by_id = {package.id: package for package in found}
            rows = await repository.list_resolvable_version_rows(session, package_ids=by_id)
            next_names: set[str] = set()
            for row in rows:
                package = by_id[row.package_id]
                dependencies = []
                for dep in row.dependencies:
                    memo = (dep["name"], dep["spec"])
                    requirement = requirements_memo.get(memo)
                    if requirement is None:
                        requirement = requirements_memo[memo] = Requirement(
                            name=dep["name"], spec=parse_spec(dep["spec"])
                        )
                    dependencies.append(requirement)
                graph[package.name].append(
                    Candidate(
                        name=package.name,
                        version=semver.Version.parse(row.version),
                        state=row.state,
                        sha256=row.sha256,
                        signature=row.signature,
                        signature_kid=row.signature_kid,
                        dependencies=dependencies,
                        extra={"package_id": package.id},
                    )
                )
                next_names.update(dep.name for dep in dependencies)
            frontier = next_names - seen
        for name, candidates in list(graph.items()):
            candidates.sort(key=lambda candidate: candidate.key, reverse=True)
            if not candidates and packages[name].organization_id != organization_id:
                del graph[name]
        missing = sorted(req.name for req in wanted if req.name not in graph)
        if missing:
            raise PackageNotFound(
                "there is no package " + ", ".join(repr(name) for name in missing),
                packages=missing,
            )
        chosen = resolve(
            wanted,
            graph,
            max_rounds=env.settings.marketplace_resolve_max_rounds,
            timeout_ms=env.settings.marketplace_resolve_timeout_ms,
        )
        entitled: set[str] = set()
        if organization_id is not None:
            entitled = await repository.list_entitled_package_ids(
                session,
                organization_id=organization_id,
                package_ids=[c.extra["package_id"] for c in chosen],
            )
        items: list[ResolvedItem] = []
        for candidate in chosen:
            package = packages[candidate.name]
            candidate.extra["price"] = (package.price_minor, package.currency)
            owned = package.organization_id == organization_id or package.id in entitled
            items.append(ResolvedItem(candidate=candidate, purchase_required=not owned))
        return items

    # -- purchases --------------------------------------------------------------------

    async def purchase(
        self,
        session: AsyncSession,
        env: MarketEnv,
        runtime: EntitlementsRuntime,
        *,
        organization_id: str,
        subject: str,
        package_ref: str,
        spending_refusal: TollwayError | None = None,
    ) -> Purchase:
        """Acquire a package: free at once, paid through payments. Buying what you own
        answers the existing purchase. ``spending_refusal`` is why the caller may not
        charge the saved card (raised for a paid package only)."""
        view = await self._visible(session, package_ref, organization_id=organization_id)
        package = view.package
        if package.organization_id == organization_id:
            raise OwnPackage("an author organization has access to its own packages")
        if not any(v.state in ("published", "deprecated") for v in view.versions):
            raise PackageUnavailable(f"{package.name} has no version that can be acquired")
        existing = await repository.get_live_purchase(
            session, package_id=package.id, organization_id=organization_id
        )
        if existing is not None:
            return existing
        if spending_refusal is not None and not package.is_free:
            raise spending_refusal
        await self._count_acquisition(
            session, runtime, organization_id=organization_id, subject=subject, package=package
        )
        now = env.clock.now()
        purchase = Purchase(
            id=new_id("mpp"),
            package_id=package.id,
            organization_id=organization_id,
            status="pending",
            open_key=f"{package.id}:{organization_id}",
            price_minor=package.price_minor,
            currency=package.currency,
            created_at=now,
        )
        await repository.add(session, purchase)
        audit_service.record(
            session,
            action="marketplace_purchase.created",
            target=purchase.id,
            organization_id=organization_id,
            details={
                "package": package.name,
                "price": package.price_minor,
                "currency": package.currency,
            },
        )
        if package.is_free:
            await self._complete(session, env.payments, purchase, package=package)
            return purchase
        assert package.currency is not None
        payments = env.payments
        description = f"{package.name} (marketplace)"
        method = await payment_method_service.default_method(
            session, payments, organization_id=organization_id
        )
        if method is not None:
            payment = await charge_service.charge(
                session,
                payments,
                organization_id=organization_id,
                amount_minor=package.price_minor,
                currency=package.currency,
                purpose=PURCHASE_PURPOSE,
                reference_id=purchase.id,
                description=description,
            )
            purchase.payment_id = payment.id
        else:
            checkout = await checkout_service.start_checkout(
                session,
                payments,
                organization_id=organization_id,
                amount_minor=package.price_minor,
                currency=package.currency,
                purpose=PURCHASE_PURPOSE,
                reference_id=purchase.id,
                description=description,
            )
            purchase.payment_id = checkout.payment_id
            purchase.checkout_url = checkout.url
        await session.flush()
        return purchase

    async def _count_acquisition(
        self,
        session: AsyncSession,
        runtime: EntitlementsRuntime,
        *,
        organization_id: str,
        subject: str,
        package: Package,
    ) -> None:
        """The plan's ``templates`` limit: each distinct package acquired counts once."""
        if TEMPLATES_FEATURE not in catalog_service.catalog.features:
            return
        decision = await entitlements_service.decide(
            runtime,
            organization_id=organization_id,
            subject=subject,
            feature=TEMPLATES_FEATURE,
            properties={"template_id": package.id},
            idempotency_key=f"marketplace:{organization_id}:{package.id}",
            source="marketplace",
            session=session,
        )
        if decision.allowed:
            return
        detail = decision.detail or "the plan does not allow another package"
        if decision.code == "rate_limited":
            raise RateLimited(detail, retry_after=decision.retry_after or 1)
        if decision.code in ("feature_not_in_plan", "license_degraded"):
            raise Forbidden(detail, code=decision.code)
        raise PaymentRequired(detail, code=decision.code or "quota_exceeded")

    async def _acquire_dependencies(
        self, session: AsyncSession, env: PaymentEnv, purchase: Purchase, *, package: Package
    ) -> None:
        """The free packages the chosen one needs come with its purchase, uncounted.

        Walks the dependencies of the newest release of each package, breadth first
        (a cycle ends where a name was seen). A free dependency the organization neither
        wrote nor owns gets a completed purchase of its own, recorded as acquired with
        ``purchase``; the ``templates`` limit counts only what the customer chose. A paid
        dependency is not bought on the customer's behalf: it needs its own purchase
        (and then counts); the free packages below it still come along now.
        """
        organization_id = purchase.organization_id
        seen = {package.name}
        frontier = [package]
        for _ in range(MAX_DEPENDENCY_DEPTH):
            names: set[str] = set()
            for current in frontier:
                if current.latest_version is None:
                    continue
                row = await repository.get_version(
                    session, package_id=current.id, version=current.latest_version
                )
                if row is not None:
                    names.update(dep["name"] for dep in row.dependencies)
            names -= seen
            if not names:
                return
            seen |= names
            frontier = await repository.list_packages_by_names(session, names)
            for dependency in frontier:
                if not dependency.is_free or dependency.organization_id == organization_id:
                    continue
                if await repository.get_live_purchase(
                    session, package_id=dependency.id, organization_id=organization_id
                ):
                    continue
                acquired = Purchase(
                    id=new_id("mpp"),
                    package_id=dependency.id,
                    organization_id=organization_id,
                    status="pending",
                    open_key=f"{dependency.id}:{organization_id}",
                    price_minor=0,
                    currency=None,
                    created_at=env.clock.now(),
                )
                await repository.add(session, acquired)
                await self._complete(
                    session, env, acquired, package=dependency, acquired_with=purchase
                )

    async def _complete(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        purchase: Purchase,
        *,
        package: Package,
        acquired_with: Purchase | None = None,
    ) -> None:
        now = env.clock.now()
        purchase.status = "completed"
        purchase.completed_at = now
        purchase.open_key = f"{purchase.package_id}:{purchase.organization_id}"
        await session.flush()
        if purchase.price_minor > 0 and purchase.currency is not None:
            await self._book_earning(session, env, purchase, package=package)
        audit_service.record(
            session,
            action="marketplace_purchase.completed",
            target=purchase.id,
            organization_id=purchase.organization_id,
            details={
                "package": package.name,
                "price": purchase.price_minor,
                "acquired_with": acquired_with.id if acquired_with else None,
            },
        )
        await outbox.publish(
            session,
            "marketplace_purchase.completed",
            {
                "id": purchase.id,
                "package_id": package.id,
                "package": package.name,
                "price": purchase.price_minor,
                "currency": purchase.currency,
                "acquired_with": acquired_with.id if acquired_with else None,
            },
            organization_id=purchase.organization_id,
            occurred_at=now,
        )
        if acquired_with is None:
            await self._acquire_dependencies(session, env, purchase, package=package)

    async def _book_earning(
        self, session: AsyncSession, env: PaymentEnv, purchase: Purchase, *, package: Package
    ) -> None:
        if await repository.get_earning_by_purchase(session, purchase_id=purchase.id):
            return
        assert purchase.currency is not None
        percent = catalog_service.commission_percent()
        gross = Money(purchase.price_minor, purchase.currency)
        # The platform's commission is rounded half up to the minor unit; the author
        # gets the exact rest, so commission + net is always the gross.
        commission = gross.multiply(percent / Decimal(100), rounding=ROUND_HALF_UP)
        net = gross - commission
        now = env.clock.now()
        earning = Earning(
            id=new_id("ern"),
            purchase_id=purchase.id,
            package_id=package.id,
            organization_id=package.organization_id,
            buyer_organization_id=purchase.organization_id,
            gross_minor=gross.amount_minor,
            commission_minor=commission.amount_minor,
            net_minor=net.amount_minor,
            currency=gross.currency,
            commission_percent=str(percent),
            booked_at=now,
            created_at=now,
        )
        await repository.add(session, earning)
        audit_service.record(
            session,
            action="marketplace_earning.booked",
            target=earning.id,
            organization_id=package.organization_id,
            details={
                "purchase": purchase.id,
                "gross": earning.gross_minor,
                "commission": earning.commission_minor,
                "net": earning.net_minor,
                "currency": earning.currency,
            },
        )

    async def payment_succeeded(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None:
        purchase = await repository.get_purchase(session, payment.reference_id, for_update=True)
        if purchase is None:
            log.warning("marketplace.payment_for_unknown_purchase", payment=payment.id)
            return
        if purchase.status == "completed":
            return
        if purchase.status == "failed":
            other = await repository.get_live_purchase(
                session, package_id=purchase.package_id, organization_id=purchase.organization_id
            )
            if other is not None:
                # Paid twice (a late success after a retry): the operator refunds one.
                log.error("marketplace.duplicate_payment", purchase=purchase.id, other=other.id)
                return
        package = await repository.get_package(session, purchase.package_id)
        assert package is not None
        await self._complete(session, env, purchase, package=package)

    async def payment_failed(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None:
        purchase = await repository.get_purchase(session, payment.reference_id, for_update=True)
        if purchase is None or purchase.status != "pending":
            return
        purchase.status = "failed"
        purchase.failed_at = env.clock.now()
        purchase.open_key = None
        await session.flush()
        await outbox.publish(
            session,
            "marketplace_purchase.failed",
            {"id": purchase.id, "package_id": purchase.package_id},
            organization_id=purchase.organization_id,
            occurred_at=env.clock.now(),
        )

    # -- refunds --------------------------------------------------------------------

    async def refund_order(
        self, session: AsyncSession, env: PaymentEnv, *, order_id: str, amount_minor: int | None
    ) -> Purchase:
        """Refund part or all of a paid order through payments (the provider's refund);
        ``amount_minor`` omitted: all that is left. The reversal and, on a full refund,
        the revoked entitlement happen in this transaction (payments tells
        :meth:`payment_refunded`); the provider's ``charge.refunded`` for it then
        changes nothing."""
        # Locks in the webhook path's order: the payment first, then (in
        # payment_refunded) the purchase.
        purchase = await repository.get_purchase(session, order_id)
        if purchase is None:
            raise OrderNotFound(f"no marketplace order {order_id[:60]!r}")
        payment = (
            await charge_service.get_payment(session, purchase.payment_id, for_update=True)
            if purchase.payment_id is not None
            else None
        )
        if payment is None or payment.status != "succeeded":
            raise OrderNotPaid("only a paid order can be refunded (free or not yet paid)")
        refundable = payment.amount_minor - payment.refunded_minor
        amount = refundable if amount_minor is None else amount_minor
        if amount <= 0 or amount > refundable:
            raise RefundExceedsPaid(
                f"at most {refundable} {payment.currency} can still be refunded",
                refundable=refundable,
            )
        refund_ref = await refund_service.refund(session, env, payment=payment, amount_minor=amount)
        audit_service.record(
            session,
            action="marketplace_order.refunded",
            target=purchase.id,
            organization_id=purchase.organization_id,
            details={
                "amount": amount,
                "currency": payment.currency,
                "refunded_total": payment.refunded_minor,
                "refund_ref": refund_ref,
                "payment": payment.id,
            },
        )
        return purchase

    async def payment_refunded(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        refunded_minor_before: int,
    ) -> None:
        """The sale's payment was refunded up to ``payment.refunded_minor``: reverse the
        earning's share of the new amount and, once refunded in full, revoke the
        entitlement. Figures are set from the payment's total, so nothing is reversed
        twice even if called again."""
        purchase = await repository.get_purchase(session, payment.reference_id, for_update=True)
        if purchase is None:
            log.warning("marketplace.refund_for_unknown_purchase", payment=payment.id)
            return
        if purchase.payment_id != payment.id:
            # A payment this purchase no longer points at (an earlier attempt): its
            # money is returned, the sale booked on the current payment stays.
            log.warning("marketplace.refund_of_other_payment", purchase=purchase.id)
            return
        now = env.clock.now()
        purchase.refunded_minor = max(purchase.refunded_minor, payment.refunded_minor)
        earning = await repository.get_earning_by_purchase(session, purchase_id=purchase.id)
        if earning is not None:
            await self._reverse_earning(session, earning, refunded_total=payment.refunded_minor)
        if payment.refunded_minor >= payment.amount_minor and purchase.status == "completed":
            purchase.status = "refunded"
            purchase.refunded_at = now
            purchase.open_key = None
            audit_service.record(
                session,
                action="marketplace_purchase.revoked",
                target=purchase.id,
                organization_id=purchase.organization_id,
                details={"package_id": purchase.package_id, "refunded": payment.refunded_minor},
            )
            await outbox.publish(
                session,
                "marketplace_purchase.refunded",
                {
                    "id": purchase.id,
                    "package_id": purchase.package_id,
                    "refunded": payment.refunded_minor,
                    "currency": payment.currency,
                },
                organization_id=purchase.organization_id,
                occurred_at=now,
            )
        await session.flush()

    async def _reverse_earning(
        self, session: AsyncSession, earning: Earning, *, refunded_total: int
    ) -> None:
        after = min(refunded_total, earning.gross_minor)
        if after <= earning.refunded_minor:
            return
        commission, net = reversal_shares(
            gross=earning.gross_minor,
            commission=earning.commission_minor,
            refunded_before=earning.refunded_minor,
            refunded_after=after,
        )
        amount = after - earning.refunded_minor
        earning.refunded_minor = after
        earning.commission_reversed_minor += commission
        earning.net_reversed_minor += net
        audit_service.record(
            session,
            action="marketplace_earning.reversed",
            target=earning.id,
            organization_id=earning.organization_id,
            details={
                "purchase": earning.purchase_id,
                "refunded": amount,
                "commission_reversed": commission,
                "net_reversed": net,
                "currency": earning.currency,
            },
        )

    async def list_purchases(
        self, session: AsyncSession, *, organization_id: str, params: PageParams
    ) -> PageResult[Purchase]:
        return await repository.list_purchases(
            session, organization_id=organization_id, params=params
        )

    async def earnings(
        self, session: AsyncSession, *, organization_id: str, params: PageParams
    ) -> EarningsView:
        return EarningsView(
            totals=await repository.earning_totals(session, organization_id=organization_id),
            page=await repository.list_earnings(
                session, organization_id=organization_id, params=params
            ),
        )

    # -- downloads ----------------------------------------------------------------------

    async def prepare_download(
        self, session: AsyncSession, *, organization_id: str, package_ref: str, version: str
    ) -> Download:
        """The version to stream if the caller may have it: the author, or an organization
        that acquired the package (buyers keep deprecated and yanked versions)."""
        view = await self._visible(session, package_ref, organization_id=organization_id)
        package = view.package
        row = next((v for v in view.versions if v.version == version.strip()), None)
        if row is None:
            raise VersionNotFound(f"{package.name} has no version {version[:100]!r}")
        if package.organization_id != organization_id:
            entitled = await repository.list_entitled_package_ids(
                session, organization_id=organization_id, package_ids=[package.id]
            )
            if package.id not in entitled:
                raise PurchaseRequired(
                    f"acquire {package.name} first: "
                    f"POST /api/v1/marketplace/packages/{package.id}/purchase"
                    + (" (free)" if package.is_free else ""),
                    package_id=package.id,
                    purchase_url=f"/api/v1/marketplace/packages/{package.id}/purchase",
                )
        return Download(package=package, version=row)

    async def record_download(
        self, session: AsyncSession, *, package_id: str, version_id: str
    ) -> None:
        await repository.count_downloads(session, package_id=package_id, version_id=version_id)


class MarketplacePayments:
    """Told by payments when a purchase's payment succeeded, failed or was refunded."""

    async def payment_succeeded(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None:
        await marketplace_service.payment_succeeded(session, env, payment)

    async def payment_failed(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None:
        await marketplace_service.payment_failed(session, env, payment)

    async def payment_refunded(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        refunded_minor_before: int,
    ) -> None:
        await marketplace_service.payment_refunded(
            session, env, payment, refunded_minor_before=refunded_minor_before
        )


marketplace_service = MarketplaceService()
#: Entered in payments' listeners by :mod:`tollway.wiring`.
marketplace_payments = MarketplacePayments()
