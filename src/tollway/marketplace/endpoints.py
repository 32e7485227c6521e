"""The marketplace API: packages, versions, search, resolution, purchases, downloads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import Depends, File, Form, Query, Request, UploadFile
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from tollway.auth.dependencies import optional_principal, require_scope
from tollway.auth.principal import Principal, spending_refusal
from tollway.db import Database
from tollway.entitlements.service import EntitlementsRuntime
from tollway.kit.routing import DatabaseDep, PageParamsDep, ReadOnlyRoute, SessionDep, api_router
from tollway.kit.signing import KeyRing
from tollway.marketplace.schemas import (
    EarningOut,
    EarningsOut,
    EarningTotalOut,
    PackageDetailOut,
    PackageIn,
    PackageOut,
    PackageUpdateIn,
    PurchaseListOut,
    PurchaseOut,
    ResolvedPackageOut,
    ResolveIn,
    ResolveOut,
    SearchIn,
    SearchOut,
    SigningKeyOut,
    VersionActionIn,
    VersionOut,
    price_of,
)
from tollway.marketplace.search import SearchQuery
from tollway.marketplace.service.discovery import discovery_service
from tollway.marketplace.service.downloads import download_service
from tollway.marketplace.service.env import MarketEnv
from tollway.marketplace.service.listing import PackageView, listing_service
from tollway.marketplace.service.sales import sales_service
from tollway.marketplace.service.versions import SIGNED_MESSAGE, version_service
from tollway.marketplace.storage import CHUNK_BYTES, ArtifactStorage, build_storage

router = api_router(prefix="/api/v1/marketplace", tags=["marketplace"])

Publisher = Annotated[Principal, Depends(require_scope("marketplace:publish"))]
Buyer = Annotated[Principal, Depends(require_scope("marketplace:purchase"))]
Reader = Annotated[Principal, Depends(require_scope("marketplace:read"))]
Visitor = Annotated[Principal | None, Depends(optional_principal)]


def _storage(request: Request) -> ArtifactStorage:
    storage: ArtifactStorage | None = getattr(request.app.state, "marketplace_storage", None)
    if storage is None:
        storage = build_storage(request.app.state.settings)
        request.app.state.marketplace_storage = storage
    return storage


async def market_env(request: Request) -> MarketEnv:
    keys: KeyRing = request.app.state.signing_keys
    return MarketEnv(
        settings=request.app.state.settings,
        clock=request.app.state.clock,
        keys=keys,
        storage=_storage(request),
    )


async def entitlements_runtime(request: Request) -> EntitlementsRuntime:
    runtime: EntitlementsRuntime = request.app.state.entitlements
    return runtime


EnvDep = Annotated[MarketEnv, Depends(market_env)]
RuntimeDep = Annotated[EntitlementsRuntime, Depends(entitlements_runtime)]


def _detail(view: PackageView) -> PackageDetailOut:
    return PackageDetailOut(
        **PackageOut.of(view.package).model_dump(),
        versions=[VersionOut.of(version) for version in view.versions],
    )


@router.post("/packages", status_code=201)
async def create_package(
    body: PackageIn, principal: Publisher, session: SessionDep, env: EnvDep
) -> PackageDetailOut:
    """Create a package of the caller's organization (scope `marketplace:publish`).

    The name is normalised (`Flask_Login` is `flask-login`) and must be free (409
    `package_name_taken`); `license` is an SPDX expression, canonicalised (422
    `invalid_license`; `LicenseRef-...` only for paid packages); `price` absent or 0
    makes a free package. The package appears in search once a version is published."""
    package = await listing_service.create_package(
        session,
        env,
        organization_id=principal.organization_id,
        name=body.name,
        description=body.description,
        category=body.category,
        keywords=body.keywords,
        license=body.license,
        price_amount=body.price.amount if body.price else None,
        price_currency=body.price.currency if body.price else None,
    )
    return _detail(PackageView(package=package, versions=[]))


@router.patch("/packages/{package_id}")
async def update_package(
    package_id: str,
    body: PackageUpdateIn,
    principal: Publisher,
    session: SessionDep,
    env: EnvDep,
) -> PackageDetailOut:
    """Change `description`, `keywords`, `category`, `price` or `license` of a package
    of the caller's organization (scope `marketplace:publish`; another organization's is
    403 `not_package_owner`). Fields left out stay; `price: null` makes it free. The
    values are checked as at creation (`invalid_description`, `invalid_category`,
    `invalid_keywords`, `invalid_currency`, `invalid_license`)."""
    view = await listing_service.update_package(
        session,
        env,
        organization_id=principal.organization_id,
        package_ref=package_id,
        changes=body.model_dump(include=body.model_fields_set),
    )
    return _detail(view)


@router.delete("/packages/{package_id}", status_code=204)
async def delete_package(
    package_id: str, principal: Publisher, session: SessionDep, env: EnvDep
) -> Response:
    """Delete a package of the caller's organization that never had a published version
    (its drafts go with it) and free its name; 409 `package_published` otherwise."""
    await listing_service.delete_package(
        session, env, organization_id=principal.organization_id, package_ref=package_id
    )
    return Response(status_code=204)


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK_BYTES):
        yield chunk


@router.post("/packages/{package_id}/versions", status_code=201)
async def create_version(
    package_id: str,
    principal: Publisher,
    session: SessionDep,
    env: EnvDep,
    version: Annotated[str, Form(max_length=100, description="semantic version, e.g. 1.4.0")],
    artifact: Annotated[UploadFile, File(description="the package archive")],
    dependencies: Annotated[
        str | None, Form(max_length=20_000, description='JSON: [{"name": ..., "spec": ...}]')
    ] = None,
    publish: Annotated[bool, Form(description="publish at once instead of a draft")] = False,
) -> VersionOut:
    """Upload a version (multipart) as a draft: the artifact is streamed to storage,
    hashed (SHA-256) and signed with the platform's Ed25519 key.

    Refusals: 422 `invalid_version` (not semver), 409 `duplicate_version` (also after
    a yank), 422 `invalid_dependencies` / `invalid_version_spec`, 413
    `artifact_too_large`, 422 `artifact_empty`, 429 `publish_rate_limited` (token
    bucket per organization), 403 `not_package_owner`."""
    row = await version_service.create_version(
        session,
        env,
        organization_id=principal.organization_id,
        package_ref=package_id,
        version=version,
        dependencies=dependencies,
        artifact=_chunks(artifact),
        publish=publish,
    )
    return VersionOut.of(row)


@router.post("/packages/{package_id}/versions/{version}/{action}")
async def change_version(
    package_id: str,
    version: str,
    action: Literal["publish", "deprecate", "yank"],
    principal: Publisher,
    session: SessionDep,
    env: EnvDep,
    body: VersionActionIn | None = None,
) -> VersionOut:
    """Move a version along `draft -> published -> deprecated -> yanked`.

    `publish` checks the package first (422 `package_invalid` with `errors`:
    description too short, dependencies that do not exist or match no version);
    `deprecate` takes an optional `reason` shown to users; `yank` needs a `reason`
    (422 `yank_reason_required`). Other moves are 409 `invalid_transition`."""
    row = await version_service.transition(
        session,
        env,
        organization_id=principal.organization_id,
        package_ref=package_id,
        version=version,
        action=action,
        reason=body.reason if body else None,
    )
    return VersionOut.of(row)


async def _search(session: SessionDep, body: SearchIn) -> SearchOut:
    page = await discovery_service.search(
        session,
        SearchQuery(
            text=body.query,
            category=body.category,
            author=body.author,
            license=body.license,
            min_quality=body.min_quality,
            sort=body.sort,
            page=body.page,
            limit=body.limit,
        ),
    )
    return SearchOut(
        items=[PackageOut.of(package) for package in page.items],
        total=page.total,
        page=body.page,
        limit=body.limit,
    )


async def search(body: SearchIn, session: SessionDep) -> SearchOut:
    """Full-text search of listed packages (no credentials needed).

    Any text is safe: it is cut into words, each quoted; all must match, the last as
    a prefix. An exact name match comes first, then relevance (or `downloads`, or
    `recent`), ties by downloads. Filters: `category`, `author` (organization id or
    name), `license`, `min_quality`. Deprecated and yanked-only packages are left out."""
    return await _search(session, body)


router.add_api_route("/search", search, methods=["POST"], route_class_override=ReadOnlyRoute)


@router.get("/search")
async def search_get(session: SessionDep, body: Annotated[SearchIn, Query()]) -> SearchOut:
    """The same search with query parameters (`?query=flask&sort=downloads`)."""
    return await _search(session, body)


@router.get("/signing-key")
async def signing_key(request: Request) -> SigningKeyOut:
    """The platform's Ed25519 public keys (JWKS, newest first). An artifact's signature
    (`X-Signature-Ed25519`, base64url) covers `signed_message` with the package name,
    version and the artifact's SHA-256 hex digest; `X-Signature-Key-Id` names the key."""
    keys: KeyRing = request.app.state.signing_keys
    return SigningKeyOut(keys=keys.jwks()["keys"], signed_message=SIGNED_MESSAGE)


@router.get("/packages/{package_id}")
async def get_package(package_id: str, principal: Visitor, session: SessionDep) -> PackageDetailOut:
    """A package by id or name, with its versions (drafts only for its author)."""
    view = await listing_service.get_package(
        session,
        id_or_name=package_id,
        organization_id=principal.organization_id if principal else None,
    )
    return _detail(view)


async def resolve(
    body: ResolveIn, principal: Visitor, session: SessionDep, env: EnvDep
) -> ResolveOut:
    """Choose one version of every package needed (resolvelib), dependencies first.

    Yanked versions are chosen only when pinned exactly (`==1.2.0`). Conflicts are
    409 `resolution_impossible` with `causes` (`"b 1.2.0 requires c<2"`), cycles 409
    `dependency_cycle` with `cycle`; too many rounds or too long is 422
    `resolution_too_complex`; an unknown package is 404 `package_not_found`.
    `purchase_required` says whether the caller must acquire a package first."""
    items = await discovery_service.resolve(
        session,
        env,
        organization_id=principal.organization_id if principal else None,
        requirements=[(req.name, req.spec) for req in body.requirements],
    )
    return ResolveOut(
        packages=[
            ResolvedPackageOut(
                name=item.candidate.name,
                version=str(item.candidate.version),
                sha256=item.candidate.sha256,
                signature=item.candidate.signature,
                signature_kid=item.candidate.signature_kid,
                purchase_required=item.purchase_required,
                package_id=item.candidate.extra["package_id"],
                state=item.candidate.state,
                price=price_of(*item.candidate.extra["price"]),
            )
            for item in items
        ]
    )


router.add_api_route("/resolve", resolve, methods=["POST"], route_class_override=ReadOnlyRoute)


@router.post("/packages/{package_id}/purchase")
async def purchase(
    package_id: str,
    principal: Buyer,
    session: SessionDep,
    env: EnvDep,
    runtime: RuntimeDep,
) -> PurchaseOut:
    """Acquire a package (scope `marketplace:purchase`); counts against the plan's
    `templates` limit (402 `quota_exceeded` above it). A paid package charges the saved
    card: it also needs the role `owner` or `billing`, or a key with `billing:purchase`.

    Free: `status: "completed"` at once. Paid: with a default payment method the card
    is charged and the answer is `pending` until the payment succeeds; without one the
    answer carries a `checkout_url`. Buying a package you already own answers that
    purchase again."""
    row = await sales_service.purchase(
        session,
        env,
        runtime,
        organization_id=principal.organization_id,
        subject=principal.actor,
        package_ref=package_id,
        spending_refusal=spending_refusal(principal),
    )
    return PurchaseOut.of(row)


async def _count_download(database: Database, package_id: str, version_id: str) -> None:
    async with database.transaction() as session:
        await download_service.record_download(
            session, package_id=package_id, version_id=version_id
        )


@router.get(
    "/packages/{package_id}/{version}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download(
    package_id: str,
    version: str,
    principal: Reader,
    session: SessionDep,
    database: DatabaseDep,
    env: EnvDep,
) -> StreamingResponse:
    """The artifact's bytes with `X-Checksum-SHA256`, `X-Signature-Ed25519` and
    `X-Signature-Key-Id`. Needs an acquired package (402 `purchase_required`) unless
    the caller is its author; buyers keep access to deprecated and yanked versions. A
    purchase refunded in full no longer counts.
    A download is counted once its last byte is sent."""
    found = await download_service.prepare_download(
        session,
        organization_id=principal.organization_id,
        package_ref=package_id,
        version=version,
    )
    row = found.version
    return StreamingResponse(
        env.storage.read(row.storage_key),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(row.size_bytes),
            "Content-Disposition": f'attachment; filename="{found.package.name}-{row.version}"',
            "X-Checksum-SHA256": row.sha256,
            "X-Signature-Ed25519": row.signature,
            "X-Signature-Key-Id": row.signature_kid,
        },
        background=BackgroundTask(_count_download, database, found.package.id, row.id),
    )


@router.get("/purchases")
async def list_purchases(
    principal: Reader,
    session: SessionDep,
    params: PageParamsDep,
) -> PurchaseListOut:
    """The organization's purchases, newest first: `status` pending, completed, failed or
    refunded (a full refund revoked the package; `refunded` is the amount refunded so
    far, partial refunds keep the package)."""
    page = await sales_service.list_purchases(
        session, organization_id=principal.organization_id, params=params
    )
    return PurchaseListOut(
        items=[PurchaseOut.of(row) for row in page.items], next_cursor=page.next_cursor
    )


@router.get("/earnings")
async def earnings(
    principal: Reader,
    session: SessionDep,
    params: PageParamsDep,
) -> EarningsOut:
    """The author organization's sales: totals per currency (gross, platform commission,
    net as booked) and each sale, newest first. Refunds show as `refunded`,
    `commission_reversed` and `net_reversed` (refunded = commission_reversed +
    net_reversed; a full refund reverses exactly the sale's commission and net)."""
    view = await sales_service.earnings(
        session, organization_id=principal.organization_id, params=params
    )
    return EarningsOut(
        totals=[
            EarningTotalOut(
                currency=total.currency,
                sales=total.sales,
                gross=total.gross,
                commission=total.commission,
                net=total.net,
                refunded=total.refunded,
                commission_reversed=total.commission_reversed,
                net_reversed=total.net_reversed,
            )
            for total in view.totals
        ],
        items=[EarningOut.of(row) for row in view.page.items],
        next_cursor=view.page.next_cursor,
    )
