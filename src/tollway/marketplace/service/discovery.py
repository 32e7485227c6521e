"""Finding packages: search, and resolving requirements to a set of signed versions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import semver
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.marketplace import repository
from tollway.marketplace.errors import PackageNotFound
from tollway.marketplace.resolver import Candidate, Requirement, resolve
from tollway.marketplace.search import SearchPage, SearchQuery, search_backend
from tollway.marketplace.service.env import MarketEnv
from tollway.marketplace.versioning import parse_spec, validate_name


@dataclass(frozen=True, slots=True)
class ResolvedItem:
    candidate: Candidate
    purchase_required: bool


@dataclass(slots=True)
class DependencyGraph:
    """What resolution may choose from: each reachable package's head row (id, name,
    price_minor, currency, organization_id) and its candidate versions, newest first."""

    packages: dict[str, Any] = field(default_factory=dict)
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)


async def load_graph(
    session: AsyncSession, names: set[str], *, organization_id: str | None
) -> DependencyGraph:
    """The packages reachable from ``names`` through their versions' dependencies.

    Loaded one level at a time: one query for the packages and one for their versions
    per level, as plain rows (no ORM objects to track). A package without a non-draft
    version is left out unless ``organization_id`` wrote it (its drafts stay invisible
    to others; resolution then answers why its requirement cannot be met).
    """
    graph = DependencyGraph()
    requirements_memo: dict[tuple[str, str], Requirement] = {}
    frontier = set(names)
    seen: set[str] = set()
    while frontier:
        seen |= frontier
        found = await repository.list_package_heads(session, frontier)
        for package in found:
            graph.packages[package.name] = package
            graph.candidates[package.name] = []
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
            graph.candidates[package.name].append(
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
    for name, candidates in list(graph.candidates.items()):
        candidates.sort(key=lambda candidate: candidate.key, reverse=True)
        if not candidates and graph.packages[name].organization_id != organization_id:
            del graph.candidates[name]
    return graph


class DiscoveryService:
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
        graph = await load_graph(
            session, {req.name for req in wanted}, organization_id=organization_id
        )
        missing = sorted(req.name for req in wanted if req.name not in graph.candidates)
        if missing:
            raise PackageNotFound(
                "there is no package " + ", ".join(repr(name) for name in missing),
                packages=missing,
            )
        chosen = resolve(
            wanted,
            graph.candidates,
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
            package = graph.packages[candidate.name]
            candidate.extra["price"] = (package.price_minor, package.currency)
            owned = package.organization_id == organization_id or package.id in entitled
            items.append(ResolvedItem(candidate=candidate, purchase_required=not owned))
        return items


discovery_service = DiscoveryService()
