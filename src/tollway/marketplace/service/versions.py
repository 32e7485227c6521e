"""Versions: an artifact uploaded as a signed draft, then published, deprecated and
yanked. Rows are never deleted, so a name@version is never given out twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.errors import NotFound, RateLimited
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox
from tollway.marketplace import repository
from tollway.marketplace.errors import DuplicateVersion, InvalidTransition, VersionNotFound, invalid
from tollway.marketplace.models import Package, PackageVersion, PublishBucket
from tollway.marketplace.quality import MIN_DESCRIPTION_LENGTH
from tollway.marketplace.service.env import MarketEnv
from tollway.marketplace.service.listing import listing_service, semver_key
from tollway.marketplace.validation import parse_dependencies
from tollway.marketplace.versioning import parse_spec, parse_version

#: What an artifact signature covers (documented in docs/marketplace.md).
SIGNED_MESSAGE = "tollway-artifact:v1\n{name}\n{version}\n{sha256}"

#: action -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "publish": (frozenset({"draft"}), "published"),
    "deprecate": (frozenset({"published"}), "deprecated"),
    "yank": (frozenset({"published", "deprecated"}), "yanked"),
}


def signed_message(name: str, version: str, sha256: str) -> bytes:
    return SIGNED_MESSAGE.format(name=name, version=version, sha256=sha256).encode()


class VersionService:
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
        package = await listing_service.owned(session, package_ref, organization_id=organization_id)
        parsed = parse_version(version)
        text = str(parsed)
        existing = await repository.list_versions(session, package_id=package.id)
        for other in existing:
            if semver_key(other).compare(parsed) == 0:
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
                if spec.contains(semver_key(row))
                and (row.state != "yanked" or spec.pin == semver_key(row))
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
        package = await listing_service.owned(session, package_ref, organization_id=organization_id)
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
                raise invalid(
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
                raise invalid("yank_reason_required", "say why the version is yanked")
            row.yanked_at = now
            row.yank_reason = reason
        row.state = target
        await session.flush()
        await listing_service.refresh_listing(session, env, package)
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


version_service = VersionService()
